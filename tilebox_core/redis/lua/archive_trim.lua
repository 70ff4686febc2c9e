-- Trim a log stream (XTRIM MINID) up to what its archive record says is archived, never
-- further: an entry leaves Redis only once the segment holding it is put and recorded.
-- KEYS[1] the log stream, KEYS[2] its archive record (keys.archive_record); and last the actor
-- key of who archives (actor.lua, prepended, takes it off KEYS).
-- ARGV[1] the MINID wanted (entries before it go): the trim point of the archiver's policy.
-- Returns the number of entries trimmed.
authenticate(KEYS[1])
local position = redis.call('HGET', KEYS[2], 'position')
if not position or position == '0-0' then
  return 0
end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
-- the id after the last archived one: entries up to it, inclusive, may go (sequence numbers
-- within one millisecond stay far below 2^53, where Lua's numbers are exact)
local ams, aseq = parse(position)
local bound = position
if aseq < 2^53 then
  bound = string.format('%.0f-%.0f', ams, aseq + 1)
end
local wms, wseq = parse(ARGV[1])
if wms == nil then
  return redis.error_reply('ERR not a stream id: ' .. ARGV[1])
end
local bms, bseq = parse(bound)
if wms < bms or (wms == bms and wseq < bseq) then
  bound = ARGV[1]
end
return redis.call('XTRIM', KEYS[1], 'MINID', bound)
