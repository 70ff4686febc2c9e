-- Cancel a job: queued and waiting tasks are dropped; running ones finish without subtasks.
-- KEYS[1] task log, KEYS[2] job hash, then the job's unfinished task hashes and their lanes.
-- ARGV[1] JobCancelled event. Returns 0 if the job was already cancelled.
if redis.call('HGET', KEYS[2], 'cancelled') == '1' then
  return 0
end
redis.call('HSET', KEYS[2], 'cancelled', 1)
for i = 3, #KEYS, 2 do
  local f = redis.call('HMGET', KEYS[i], 'state', 'spec', 'entry')
  if f[1] == 'queued' then
    redis.call('XDEL', key(cjson.decode(f[2]).lane), f[3])
    redis.call('HSET', KEYS[i], 'state', 'cancelled')
  elseif f[1] == 'waiting' then
    redis.call('HSET', KEYS[i], 'state', 'cancelled')
  end
end
append(KEYS[1], ARGV[1])
flush_events()
return 1
