-- Retry a job: re-queue its failed tasks (finished work is kept), then, once none of its tasks
-- is failed any more, queue again the tasks its failure held (see hold in tasklib).
-- KEYS[1] task log, KEYS[2] job hash, then pairs: a task hash (failed, or not started: queued or
-- waiting), its lane. ARGV[1] JobRetried event, appended when failed tasks are re-queued.
-- Returns {failed tasks re-queued, held tasks queued again}. A task that became queued since its
-- caller read it was held, or will be queued by its dependencies: jobs.py calls again with the
-- tasks it reads afterwards, so none held meanwhile is left behind.
-- Who the events are recorded as: the actor key, last of KEYS (actor.lua takes it off).
authenticate(KEYS[1])
local requeued, resumed = 0, 0
for i = 3, #KEYS, 2 do
  local state = redis.call('HGET', KEYS[i], 'state')
  if state == 'failed' then
    redis.call('HSET', KEYS[i], 'attempts', 0)
    redis.call('HDEL', KEYS[i], 'error')  -- it runs again: its last failure is history now
    enqueue(KEYS[i])
    requeued = requeued + 1
  end
end
local failed = tonumber(redis.call('HGET', KEYS[2], 'failed') or '0') - requeued
if requeued > 0 then
  redis.call('HINCRBY', KEYS[2], 'failed', -requeued)
  append(KEYS[1], ARGV[1])
end
local gate = gate_of(KEYS[2])
if failed <= 0 and gate ~= '1' then
  if gate == 'failed' then
    redis.call('HDEL', KEYS[2], 'cancelled')  -- open again (see gate_of)
    job_resumed(KEYS[2])
  end
  for i = 3, #KEYS, 2 do
    local f = redis.call('HMGET', KEYS[i], 'state', 'entry')
    if f[1] == 'queued' and f[2] == '' then
      enqueue(KEYS[i])
      resumed = resumed + 1
    end
  end
end
flush_events()
return {requeued, resumed}
