-- Record the claims of lane entries a runner received (XREADGROUP) or took over (XCLAIM), before
-- it runs their tasks (see TaskRunner: fast tasks have their claim recorded with their result).
-- KEYS[1] task log, then per entry: task hash, job hash, lane.
-- ARGV[1] runner id, ARGV[2] release id ('' for none), ARGV[3] max deliveries, then per entry:
-- entry id, deliveries, TaskClaimed, TaskLeaseExpired ('' if fresh), TaskFailed for a poison task
-- ('' when deliveries <= max deliveries: it is not used then).
-- Returns per entry its status: ok | stale | cancelled | poisoned | taken (another runner's
-- claim is recorded: it took the task over while this runner stalled; a claim only takes a task
-- from its recorded owner with the TaskLeaseExpired of a takeover).
local out = {}
local n = (#KEYS - 1) / 3
local cancelled_jobs, started_jobs = {}, {}  -- per job, read / written once per call
for i = 0, n - 1 do
  local task_key, job_key, lane = KEYS[2 + 3 * i], KEYS[3 + 3 * i], KEYS[4 + 3 * i]
  local a = 4 + 5 * i
  local entry, deliveries = ARGV[a], tonumber(ARGV[a + 1])
  local t = redis.call('HMGET', task_key, 'state', 'entry', 'runner')
  local cancelled = cancelled_jobs[job_key]
  if t[2] ~= entry or (t[1] ~= 'queued' and t[1] ~= 'running') then
    drop(lane, entry)  -- superseded (requeued, cancelled, finished): not ours to run
    out[#out + 1] = 'stale'
  elseif ARGV[a + 3] == '' and owned_by_another(t[3], ARGV[1]) then
    out[#out + 1] = 'taken'  -- its entry is the new owner's: left alone
  else
    if cancelled == nil then
      cancelled = redis.call('HGET', job_key, 'cancelled') == '1'
      cancelled_jobs[job_key] = cancelled
    end
    if cancelled then
      drop(lane, entry)
      redis.call('HSET', task_key, 'state', 'cancelled')
      out[#out + 1] = 'cancelled'
    elseif deliveries > tonumber(ARGV[3]) then
      -- Delivered again and again without finishing: it keeps killing its runners.
      drop(lane, entry)
      redis.call('HSET', task_key, 'state', 'failed', 'runner', ARGV[1])
      redis.call('HINCRBY', job_key, 'failed', '1')
      append(KEYS[1], ARGV[a + 4])
      out[#out + 1] = 'poisoned'
    else
      append(KEYS[1], ARGV[a + 3])
      append(KEYS[1], ARGV[a + 2])
      if ARGV[2] == '' and t[1] == 'queued' then
        -- a direct runner's fresh claim: no release to record, and none is set (a queued task
        -- never had one, or enqueue emptied it); a takeover overwrites the previous owner's
        redis.call('HSET', task_key, 'state', 'running', 'runner', ARGV[1])
      else
        redis.call('HSET', task_key, 'state', 'running', 'runner', ARGV[1], 'release', ARGV[2])
      end
      if not started_jobs[job_key] then
        redis.call('HSET', job_key, 'started', '1')
        started_jobs[job_key] = true
      end
      out[#out + 1] = 'ok'
    end
  end
end
flush_events()
return out
