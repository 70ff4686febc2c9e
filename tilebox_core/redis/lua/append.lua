-- Version-checked, idempotent append of a batch of events, plus updates to a materialised hash.
-- KEYS[1] log stream, KEYS[2] dedup hash, KEYS[3] materialised projection hash
-- ARGV[1] expected version (stream length) or -1 for "any"
-- ARGV[2] number of events n, then n pairs (event id, encoded event),
-- then triples (op, field, value) with op HSET or HDEL, applied to KEYS[3].
-- Returns {1, new version, stream ids...} or {0, version, stream id of the first event} when this
-- batch (identified by its first event id) was appended before.
local n = tonumber(ARGV[2])
local first_id = ARGV[3]
local seen = redis.call('HGET', KEYS[2], first_id)
local len = redis.call('XLEN', KEYS[1])
if seen then
  return {0, len, seen}
end
local expected = tonumber(ARGV[1])
if expected >= 0 and len ~= expected then
  return redis.error_reply('CONCURRENCY expected version ' .. expected .. ', log is at ' .. len)
end
local result = {1, len + n}
for i = 0, n - 1 do
  result[#result + 1] = redis.call('XADD', KEYS[1], '*', 'e', ARGV[4 + 2 * i])
end
redis.call('HSET', KEYS[2], first_id, result[3])
local j = 3 + 2 * n
while j <= #ARGV do
  if ARGV[j] == 'HSET' then
    redis.call('HSET', KEYS[3], ARGV[j + 1], ARGV[j + 2])
  elseif ARGV[j] == 'HDEL' then
    redis.call('HDEL', KEYS[3], ARGV[j + 1])
  else
    return redis.error_reply('ERR unknown projection op ' .. ARGV[j])
  end
  j = j + 3
end
return result
