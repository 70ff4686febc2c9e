-- Submit jobs and their root tasks; each job atomically, and all of them in one call.
-- KEYS[1] task log, KEYS[2] jobs index, then every job hash, and task, lane and lane-registry key
-- the jobs' tasks name.
-- ARGV[1] JSON {shapes, jobs} (see TaskStore._submit_call), each job [job hash, job id, submit
-- time (ms), the job's description (a JSON text, kept as one field; it names the root tasks, so
-- they are not in the job's task list), root tasks (see create_tasks), number of events];
-- ARGV[2..] the jobs' encoded events, in order.
-- Returns per job 1, or 0 for a retried submission of a job id that exists: already done.
local body = cjson.decode(ARGV[1])
local shapes = body.shapes
local out = {}
local event = 2
for _, job in ipairs(body.jobs) do
  local job_key, id, submitted_ms, info, tasks, n_events =
    key(job[1]), job[2], job[3], job[4], job[5], job[6]
  -- The jobs index is written with the job, atomically: adding to it is the check that the job
  -- is new, in one command instead of two.
  if redis.call('ZADD', KEYS[2], 'NX', submitted_ms, id) == 0 then
    out[#out + 1] = 0
  else
    -- the counters but open start absent, read as 0 (jobs.py); the description names the roots
    redis.call('HSET', job_key, 'open', tostring(#tasks), 'info', info)
    for i = event, event + n_events - 1 do
      append(KEYS[1], ARGV[i])
    end
    create_tasks(nil, {job = id, tail = ']', shapes = shapes, tasks = tasks}, false)
    out[#out + 1] = 1
  end
  event = event + n_events
end
flush_events()
return out
