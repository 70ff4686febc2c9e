-- Record the claims of lane entries a runner received (XREADGROUP) or took over (XCLAIM).
-- KEYS[1] task log, then per entry: task hash, job hash, lane.
-- ARGV[1] runner id, ARGV[2] release id ('' for none), ARGV[3] max deliveries, then per entry:
-- entry id, deliveries, TaskClaimed, TaskLeaseExpired ('' if fresh), TaskFailed for a poison task.
-- Returns per entry: {status, task fields...} with status ok | stale | cancelled | poisoned.
local out = {}
local n = (#KEYS - 1) / 3
for i = 0, n - 1 do
  local task_key, job_key, lane = KEYS[2 + 3 * i], KEYS[3 + 3 * i], KEYS[4 + 3 * i]
  local a = 4 + 5 * i
  local entry, deliveries = ARGV[a], tonumber(ARGV[a + 1])
  local f = redis.call('HMGET', task_key, 'state', 'entry')
  if f[2] ~= entry or (f[1] ~= 'queued' and f[1] ~= 'running') then
    drop(lane, entry)  -- superseded (requeued, cancelled, finished): not ours to run
    out[#out + 1] = {'stale'}
  elseif redis.call('HGET', job_key, 'cancelled') == '1' then
    drop(lane, entry)
    redis.call('HSET', task_key, 'state', 'cancelled')
    out[#out + 1] = {'cancelled'}
  elseif deliveries > tonumber(ARGV[3]) then
    -- Delivered again and again without finishing: it keeps killing its runners.
    drop(lane, entry)
    redis.call('HSET', task_key, 'state', 'failed', 'runner', ARGV[1])
    redis.call('HINCRBY', job_key, 'failed', 1)
    append(KEYS[1], ARGV[a + 4])
    out[#out + 1] = {'poisoned'}
  else
    append(KEYS[1], ARGV[a + 3])
    append(KEYS[1], ARGV[a + 2])
    redis.call('HSET', task_key, 'state', 'running', 'runner', ARGV[1], 'release', ARGV[2],
      'claimed_ms', now_ms())
    redis.call('HSET', job_key, 'started', 1)
    local t = redis.call('HMGET', task_key, 'id', 'job', 'name', 'version', 'input', 'attempts',
      'max_retries', 'optional', 'chain', 'cluster')
    out[#out + 1] = {'ok', t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10]}
  end
end
return out
