-- Submit jobs and their root tasks; each job atomically, and all of them in one call.
-- KEYS[1] task log, KEYS[2] jobs index, then every job hash, job task list, and task, lane and
-- lane-registry key the jobs' specs name.
-- ARGV per job: job hash, job task list, job fields (JSON object), submit time (ms), job id, the
-- root tasks (JSON, see create_tasks), the number of events, the encoded events.
-- Returns per job 1, or 0 for a retried submission of a job id that exists: already done.
local out = {}
local a = 1
while a <= #ARGV do
  local job_key, job_tasks_key = key(ARGV[a]), key(ARGV[a + 1])
  local n_events = tonumber(ARGV[a + 6])
  if redis.call('EXISTS', job_key) == 1 then
    out[#out + 1] = 0
  else
    local hset = {}
    for name, value in pairs(cjson.decode(ARGV[a + 2])) do
      hset[#hset + 1] = name
      hset[#hset + 1] = value
    end
    local payload = cjson.decode(ARGV[a + 5])
    -- the other counters start absent, read as 0 (jobs.py)
    local roots = tostring(#payload.tasks)
    redis.call('HSET', job_key, 'open', roots, 'total', roots, unpack(hset))
    redis.call('ZADD', KEYS[2], ARGV[a + 3], ARGV[a + 4])
    for i = a + 7, a + 6 + n_events do
      append(KEYS[1], ARGV[i])
    end
    create_tasks(job_key, job_tasks_key, payload, true)
    out[#out + 1] = 1
  end
  a = a + 7 + n_events
end
flush_events()
return out
