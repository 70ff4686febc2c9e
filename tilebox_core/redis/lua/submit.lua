-- Submit jobs and their root tasks; each job atomically, and all of them in one call.
-- KEYS[1] task log, KEYS[2] jobs index, then every job hash, and task and lane key the jobs'
-- tasks name. Laid out by TaskStore._submit_call.
-- ARGV[1] JSON {shapes, jobs} (see TaskStore._submit_call), each job [job hash, job id, the
-- length of its description in ARGV[4], root tasks (see create_tasks), number of events, their
-- length in bytes, its retention (ms; '': the default, see job_ended)]; ARGV[2] the jobs'
-- encoded events, concatenated in order, ARGV[3] how many; ARGV[4] the jobs' descriptions (each
-- a JSON text, kept as one field; it names the root tasks, so they are not in the job's task
-- list), concatenated: inside ARGV[1] they would be escaped JSON in JSON, which costs the server
-- more to decode.
-- Returns per job 1, or 0 for a retried submission of a job id that exists: already done.
-- Who the events are recorded as: the actor key, last of KEYS (actor.lua takes it off).
authenticate(KEYS[1])
-- The jobs index is scored by the server's time, read before anything is appended: the task log's
-- entries of a job are never older than its score (the archiver trims the log up to its shard's
-- oldest job, domain.archive.trim_point, and one clock needs no allowance for another's skew).
local submitted_ms = string.format('%d', server_ms())
local body = cjson.decode(ARGV[1])
local shapes, jobs = body.shapes, body.jobs
local out, created = {}, {}
local info_at = 1
for i, job in ipairs(jobs) do
  local job_key, id, tasks = key(job[1]), job[2], job[4]
  local info = string.sub(ARGV[4], info_at, info_at + job[3] - 1)
  info_at = info_at + job[3]
  -- The jobs index is written with the job, atomically: adding to it is the check that the job
  -- is new, in one command instead of two.
  created[i] = redis.call('ZADD', KEYS[2], 'NX', submitted_ms, id) == 1
  if created[i] then
    -- the counters but open start absent, read as 0 (jobs.py); the description names the roots
    -- (its retention apart from its description: job_ended reads it without decoding that)
    if job[7] ~= nil and job[7] ~= '' then
      redis.call('HSET', job_key, 'open', tostring(#tasks), 'info', info, 'retention', job[7])
    else
      redis.call('HSET', job_key, 'open', tostring(#tasks), 'info', info)
    end
    create_tasks(nil, {job = id, tail = ']', shapes = shapes, tasks = tasks}, false)
    out[i] = 1
  else
    out[i] = 0
  end
end
append_kept(KEYS[1], ARGV[2], tonumber(ARGV[3]), #jobs, created,
  function(i) return jobs[i][5], jobs[i][6] end)
flush_events()
return out
