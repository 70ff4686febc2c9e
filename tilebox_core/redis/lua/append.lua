-- Checked, idempotent append of a batch of events, plus updates to a materialised hash.
-- KEYS[1] log stream, KEYS[2] dedup hash, KEYS[3] materialised projection hash, KEYS[4] the
-- actor key of who the events are recorded as (see actor.lua, prepended).
-- ARGV[1] the position (stream id) of the log's last entry the writer decided on ('0-0': the log
-- was empty), or '' for "any"; the append is refused if the log has an entry after it. A position,
-- not a count: one entry may hold a batch of events (field b, as the task scripts write), so the
-- events a reader folded are no count of entries, and trimming the log's head changes no position.
-- ARGV[2] number of events n, then n pairs (event id, encoded event),
-- then triples (op, field, value) with op HSET or HDEL, applied to KEYS[3].
-- Returns {1, stream ids...} or {0, stream id of the first event} when this batch (identified by
-- its first event id) was appended before.
local actor = authenticate(KEYS[1])
local n = tonumber(ARGV[2])
local first_id = ARGV[3]
local seen = redis.call('HGET', KEYS[2], first_id)
if seen then
  return {0, seen}
end
local expected = ARGV[1]
if expected ~= '' then
  -- Empty when up to date (the common case), so no entry is copied into the script.
  local newer = redis.call('XRANGE', KEYS[1], '(' .. expected, '+', 'COUNT', 1)[1]
  if newer then
    return redis.error_reply('CONCURRENCY expected the log at ' .. expected .. ', it has ' .. newer[1] .. ' after that')
  end
end
local result = {1}
for i = 0, n - 1 do
  result[#result + 1] = redis.call('XADD', KEYS[1], '*', 'e', ARGV[4 + 2 * i], 'a', actor)
end
redis.call('HSET', KEYS[2], first_id, result[2])
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
