-- Renew the leases of lane entries the caller still owns (heartbeat); returns the entries renewed.
-- KEYS[1] lane. ARGV[1] runner id, ARGV[2..] entry ids.
-- An entry another runner has taken over is left alone: XCLAIM would steal it back.
local renewed = {}
for i = 2, #ARGV do
  local pending = redis.call('XPENDING', KEYS[1], GROUP, ARGV[i], ARGV[i], 1)
  if #pending == 1 and pending[1][2] == ARGV[1] then
    redis.call('XCLAIM', KEYS[1], GROUP, ARGV[1], 0, ARGV[i], 'JUSTID')
    renewed[#renewed + 1] = ARGV[i]
  end
end
return renewed
