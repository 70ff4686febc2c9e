-- Checked, idempotent append of a batch of events, plus updates to a materialised hash.
-- KEYS[1] log stream, KEYS[2] dedup hash, KEYS[3] materialised projection hash, KEYS[4] the log's
-- chain head, KEYS[5] the dedup hash's previous generation
-- ARGV[1] the position (stream id) of the log's last entry the writer decided on ('0-0': the log
-- was empty), or '' for "any"; the append is refused if the log has an entry after it. A position,
-- not a count: one entry may hold a batch of events (field b, as the task scripts write), so the
-- events a reader folded are no count of entries, and trimming the log's head changes no position.
-- ARGV[2] number of events n, ARGV[3] the de-duplication window (ms), then n pairs (event id,
-- encoded event), then triples (op, field, value) with op HSET or HDEL, applied to KEYS[3].
-- Returns {1, stream ids...} or {0, stream id of the first event} when this batch (identified by
-- its first event id) was appended before, within the window.
local n = tonumber(ARGV[2])
local first_id = ARGV[4]
-- De-duplication is for a writer that retries an append whose reply it lost, seconds later: a
-- batch is remembered for at least the window and at most twice it. The hash is kept in two
-- generations: the current one (KEYS[2], started at its field '~since') takes the new batches;
-- once it is a window old it becomes the previous one (KEYS[5]) and the previous one is dropped.
-- Constant work per append and no index by age; a hash from before the generations (no '~since')
-- is started now, and so leaves after two windows.
local found = redis.call('HMGET', KEYS[2], first_id, '~since')
local seen = found[1] or redis.call('HGET', KEYS[5], first_id)
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
-- Each entry's field h chains it to the entry before it (domain/chain.py defines the content).
local head = redis.call('GET', KEYS[4]) or string.rep('0', 40)
local result = {1}
for i = 0, n - 1 do
  local event = ARGV[5 + 2 * i]
  head = redis.sha1hex(head .. '\ne\n' .. event)
  result[#result + 1] = redis.call('XADD', KEYS[1], '*', 'e', event, 'h', head)
end
redis.call('SET', KEYS[4], head)
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local since = tonumber(found[2])
if since ~= nil and now - since >= tonumber(ARGV[3]) then
  redis.call('UNLINK', KEYS[5])
  redis.call('RENAME', KEYS[2], KEYS[5])
  since = nil
end
if since == nil then
  redis.call('HSET', KEYS[2], first_id, result[2], '~since', now)
else
  redis.call('HSET', KEYS[2], first_id, result[2])
end
local j = 4 + 2 * n
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
