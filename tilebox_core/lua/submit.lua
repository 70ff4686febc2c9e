-- Submit a job and its root tasks atomically.
-- KEYS[1] task log, KEYS[2] job hash, KEYS[3] jobs index, KEYS[4] job task list, then every task,
-- lane and lane-registry key the specs name.
-- ARGV[1] job fields (JSON object), ARGV[2] submit time (ms), ARGV[3] job id,
-- ARGV[4] the root tasks (JSON, see create_tasks), ARGV[5..] encoded events to append.
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0  -- a retried submission of the same job id: already done
end
local hset = {}
for name, value in pairs(cjson.decode(ARGV[1])) do
  hset[#hset + 1] = name
  hset[#hset + 1] = value
end
if #hset > 0 then
  redis.call('HSET', KEYS[2], unpack(hset))
end
local payload = cjson.decode(ARGV[4])
redis.call('HSET', KEYS[2], 'total', 0, 'open', #payload.tasks, 'computed', 0, 'failed', 0,
  'skipped', 0, 'cancelled', 0, 'started', 0)
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
for i = 5, #ARGV do
  append(KEYS[1], ARGV[i])
end
create_tasks(KEYS[2], KEYS[4], payload)
return 1
