-- Schedule the removal of ended jobs (the sweep, TaskStore.schedule): move each from the shard's
-- ended index (scored by when it ended, tasklib's job_ended) to its expiring index, scored by
-- when it ended plus its retention (its description's retention_ms, resolved at submit; absent:
-- ARGV[1], the default). Off the hot path: ending a job costs one ZADD, reading its retention
-- is left to here. A job no longer in the ended index (retried meanwhile) is left alone.
-- KEYS[1] ended index, KEYS[2] expiring index, then the job hashes; ARGV[1] default retention
-- (ms), then the job ids, in the order of their hashes. Returns how many were scheduled.
local ended, expiring, default = KEYS[1], KEYS[2], tonumber(ARGV[1])
local moved = 0
for i = 3, #KEYS do
  local id = ARGV[i - 1]
  local at = redis.call('ZSCORE', ended, id)
  if at then
    local info = redis.call('HGET', KEYS[i], 'info')
    local retention = default
    if info then
      local ms = cjson.decode(info).retention_ms
      if type(ms) == 'number' then
        retention = ms
      end
      redis.call('ZADD', expiring, string.format('%d', tonumber(at) + retention), id)
      moved = moved + 1
    end
    redis.call('ZREM', ended, id)  -- its hash is gone: nothing to schedule
  end
end
return moved
