-- The archive record of a log stream (keys.archive_record), changed as a compare-and-set on the
-- digest of the stream's last archived segment: archivers that race (or one that resumes after
-- a crash) cannot fork the segment chain, since each segment names the one before it.
-- KEYS[1] the record hash, KEYS[2] (the control log only) its projection snapshot key; and last
-- the actor key of who archives, which actor.lua (prepended) takes off KEYS.
-- ARGV[1] 'intend' (a sealed segment is about to be put) or 'commit' (it was put);
-- ARGV[2] the digest the record must name now ('' none yet); ARGV[3] the segment's digest;
-- ARGV[4] its last position.
-- intend: ARGV[5] a pending digest it replaces ('' none): the one a crashed archiver intended,
--   which could not be sealed again byte for byte and was never put.
-- commit: ARGV[5] the chain hash it ends with ('' none), ARGV[6..8] its entries, events and
--   bytes, ARGV[9] the projection snapshot at its last position ('' none).
-- Returns {1}; {0, digest} when the record names another digest (a stale archiver); or
-- {2, pending digest, its last position} when another segment is pending: the caller puts
-- and commits that one first (resealing the same entries gives the same bytes).
local actor = authenticate(KEYS[1])
local found = redis.call('HMGET', KEYS[1], 'digest', 'pending', 'pending_last')
local digest, pending = found[1] or '', found[2] or ''
if digest ~= ARGV[2] then
  return {0, digest}
end
if ARGV[1] == 'intend' then
  if pending ~= '' and pending ~= ARGV[3] and pending ~= ARGV[5] then
    return {2, pending, found[3] or ''}
  end
  redis.call('HSET', KEYS[1], 'pending', ARGV[3], 'pending_last', ARGV[4])
  return {1}
end
if ARGV[1] ~= 'commit' then
  return redis.error_reply('ERR unknown archive record op ' .. ARGV[1])
end
if pending ~= ARGV[3] then
  return {2, pending, found[3] or ''}
end
redis.call('HSET', KEYS[1], 'position', ARGV[4], 'digest', ARGV[3], 'chain', ARGV[5],
  'actor', actor)
redis.call('HINCRBY', KEYS[1], 'segments', 1)
redis.call('HINCRBY', KEYS[1], 'entries', ARGV[6])
redis.call('HINCRBY', KEYS[1], 'events', ARGV[7])
redis.call('HINCRBY', KEYS[1], 'bytes', ARGV[8])
redis.call('HDEL', KEYS[1], 'pending', 'pending_last')
if ARGV[9] ~= '' and KEYS[2] then
  redis.call('SET', KEYS[2], ARGV[9])
  redis.call('HSET', KEYS[1], 'snapshot_position', ARGV[4])
end
return {1}
