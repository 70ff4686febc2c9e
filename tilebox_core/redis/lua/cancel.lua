-- Cancel a job: queued and waiting tasks are dropped; running ones finish without subtasks.
-- KEYS[1] task log, KEYS[2] job hash, then the job's unfinished task hashes and their lanes.
-- ARGV[1] JobCancelled event, appended when this call cancels the job. A job cancelled already
-- only has the tasks named dropped (jobs.py names those created while the first call ran).
-- Returns 1 if this call cancelled the job, 0 if it was cancelled already.
-- Who the events are recorded as: the actor key, last of KEYS (actor.lua takes it off).
authenticate(KEYS[1])
local first = redis.call('HGET', KEYS[2], 'cancelled') ~= '1'
if first then
  redis.call('HSET', KEYS[2], 'cancelled', 1)
  job_ended(KEYS[2])
end
for i = 3, #KEYS, 2 do
  local f = redis.call('HMGET', KEYS[i], 'state', 'spec', 'entry')
  if f[1] == 'queued' then
    if f[3] and f[3] ~= '' then  -- a held task has no lane entry (see hold in tasklib)
      redis.call('XDEL', key(cjson.decode(f[2]).lane), f[3])
    end
    redis.call('HSET', KEYS[i], 'state', 'cancelled')
  elseif f[1] == 'waiting' then
    redis.call('HSET', KEYS[i], 'state', 'cancelled')
  end
end
if first then
  append(KEYS[1], ARGV[1])
end
flush_events()
return first and 1 or 0
