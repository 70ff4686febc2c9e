-- Finish a claimed task, fenced: only the current owner of the lane entry is heard.
-- KEYS[1] task log, KEYS[2] job hash, KEYS[3] lane, KEYS[4] task hash, KEYS[5] job task list,
-- then every key the task's chain and its subtask specs name.
-- ARGV[1] runner id, ARGV[2] entry id, ARGV[3] outcome: completed | retry | failed |
-- failed_optional | released, ARGV[4] compute ms, ARGV[5] progress (JSON {label: [done, total]}),
-- ARGV[6] subtask specs (JSON array), ARGV[7..] encoded events to append.
-- Returns 1, or 0 when fenced off (the lease was lost; another runner owns the task now).
local log, job, lane, task = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local entry, outcome = ARGV[2], ARGV[3]
if not owns(lane, entry, ARGV[1], task) then
  return 0
end
drop(lane, entry)
for i = 7, #ARGV do
  append(log, ARGV[i])
end
local now = now_ms()
if outcome == 'released' then
  enqueue(task)
  return 1
end
redis.call('HSET', task, 'finished_ms', now, 'compute_ms', ARGV[4])
if outcome == 'retry' then
  redis.call('HINCRBY', task, 'attempts', 1)
  enqueue(task)
  return 1
end
if outcome == 'failed' then
  redis.call('HINCRBY', task, 'attempts', 1)
  redis.call('HSET', task, 'state', 'failed')
  redis.call('HINCRBY', job, 'failed', 1)
  return 1
end
local cancelled = redis.call('HGET', job, 'cancelled') == '1'
local chain = cjson.decode(redis.call('HGET', task, 'chain'))
local open
if outcome == 'failed_optional' then
  redis.call('HINCRBY', task, 'attempts', 1)
  redis.call('HSET', task, 'state', 'failed_optional')
  redis.call('HINCRBY', job, 'skipped', 1)
  open = redis.call('HINCRBY', task, 'open', -1)
else
  redis.call('HSET', task, 'state', 'computed')
  redis.call('HINCRBY', job, 'computed', 1)
  for label, counts in pairs(cjson.decode(ARGV[5])) do
    redis.call('HINCRBY', job, 'progress:' .. label .. ':done', counts[1])
    redis.call('HINCRBY', job, 'progress:' .. label .. ':total', counts[2])
  end
  local specs = cancelled and {} or cjson.decode(ARGV[6])
  for _, spec in ipairs(specs) do
    create_task(job, KEYS[5], spec)
  end
  open = redis.call('HINCRBY', task, 'open', #specs - 1)
end
if open == 0 and not cancelled then
  settle(job, chain)
end
return 1
