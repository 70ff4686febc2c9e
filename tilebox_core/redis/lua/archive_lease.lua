-- The lease of a team's archiver (keys.archiver_lease): one archiver at a time.
-- KEYS[1] the lease key; and last the actor key of who archives (actor.lua takes it off KEYS).
-- ARGV[1] 'take' (take it if free, or renew it if held by ARGV[2]) or 'release'; ARGV[2] the
-- holder's id; ARGV[3] the lease's length (ms).
-- Returns 1 when the caller holds it (take) or gave it up (release), else 0.
authenticate(KEYS[1])
local holder = redis.call('GET', KEYS[1])
if ARGV[1] == 'take' then
  if holder and holder ~= ARGV[2] then
    return 0
  end
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
if holder == ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
