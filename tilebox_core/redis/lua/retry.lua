-- Re-queue the failed tasks of a job (finished work is kept).
-- KEYS[1] task log, KEYS[2] job hash, then pairs: a failed task hash, its lane.
-- ARGV[1] JobRetried event. Returns how many tasks were re-queued.
-- Who the events are recorded as: the actor key, last of KEYS (actor.lua takes it off).
authenticate(KEYS[1])
local requeued = 0
for i = 3, #KEYS, 2 do
  local state = redis.call('HGET', KEYS[i], 'state')
  if state == 'failed' then
    redis.call('HSET', KEYS[i], 'attempts', 0)
    enqueue(KEYS[i])
    requeued = requeued + 1
  end
end
if requeued > 0 then
  redis.call('HINCRBY', KEYS[2], 'failed', -requeued)
  append(KEYS[1], ARGV[1])
end
flush_events()
return requeued
