-- Submit a job and its root tasks atomically.
-- KEYS[1] task log, KEYS[2] job hash, KEYS[3] jobs index, KEYS[4] job task list, then every task,
-- lane and lane-registry key the specs name.
-- ARGV[1] job fields (JSON object), ARGV[2] submit time (ms), ARGV[3] job id,
-- ARGV[4] task specs (JSON array), ARGV[5..] encoded events to append.
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0  -- a retried submission of the same job id: already done
end
local fields = cjson.decode(ARGV[1])
for name, value in pairs(fields) do
  redis.call('HSET', KEYS[2], name, value)
end
local specs = cjson.decode(ARGV[4])
redis.call('HSET', KEYS[2], 'total', 0, 'open', #specs, 'computed', 0, 'failed', 0,
  'skipped', 0, 'cancelled', 0, 'started', 0)
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
for i = 5, #ARGV do
  append(KEYS[1], ARGV[i])
end
for _, spec in ipairs(specs) do
  create_task(KEYS[2], KEYS[4], spec)
end
return 1
