-- Submit jobs and their root tasks; each job atomically, and all of them in one call.
-- KEYS[1] task log, KEYS[2] jobs index, then every job hash, job task list, and task, lane and
-- lane-registry key the jobs' tasks name.
-- ARGV[1] JSON {shapes, jobs} (see TaskStore._submit_call), each job [job hash, job task list,
-- job id, submit time (ms), the job's description (a JSON text, kept as one field), root
-- tasks (see create_tasks), number of events];
-- ARGV[2..] the jobs' encoded events, in order.
-- Returns per job 1, or 0 for a retried submission of a job id that exists: already done.
local body = cjson.decode(ARGV[1])
local shapes = body.shapes
local out = {}
local event = 2
for _, job in ipairs(body.jobs) do
  local job_key, job_tasks_key, id, submitted_ms, info, tasks, n_events =
    key(job[1]), key(job[2]), job[3], job[4], job[5], job[6], job[7]
  if redis.call('EXISTS', job_key) == 1 then
    out[#out + 1] = 0
  else
    -- the other counters start absent, read as 0 (jobs.py)
    local roots = tostring(#tasks)
    redis.call('HSET', job_key, 'open', roots, 'total', roots, 'info', info)
    redis.call('ZADD', KEYS[2], submitted_ms, id)
    for i = event, event + n_events - 1 do
      append(KEYS[1], ARGV[i])
    end
    create_tasks(job_key, job_tasks_key, {job = id, tail = ']', shapes = shapes, tasks = tasks}, true)
    out[#out + 1] = 1
  end
  event = event + n_events
end
flush_events()
return out
