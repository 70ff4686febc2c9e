-- Record the claims of lane entries a runner received (XREADGROUP) or took over (XCLAIM), before
-- it runs their tasks (see TaskRunner: fast tasks have their claim recorded with their result).
-- KEYS[1] task log, then per entry: task hash, job hash, lane.
-- ARGV[1] runner id, ARGV[2] release id ('' for none), then 4 per entry: entry id, TaskClaimed,
-- TaskLeaseExpired ('' if fresh), the TaskFailed of a poison task ('' if it is none: the runner
-- decides, domain.tasks.is_poison). Laid out by TaskStore._claim_call.
-- Returns per entry its status (domain.tasks.ClaimStatus): ok | stale | cancelled | poisoned |
-- taken (another runner's claim is recorded: it took the task over while this runner stalled; a
-- claim only takes a task from its recorded owner with the TaskLeaseExpired of a takeover).
-- Who the events are recorded as: the actor key, last of KEYS (actor.lua takes it off).
authenticate(KEYS[1])
local out = {}
local n = (#KEYS - 1) / 3
local cancelled_jobs, started_jobs = {}, {}  -- per job, read / written once per call
for i = 0, n - 1 do
  local task_key, job_key, lane = KEYS[2 + 3 * i], KEYS[3 + 3 * i], KEYS[4 + 3 * i]
  local a = 3 + 4 * i
  local entry, claimed, expired, poison = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local t = redis.call('HMGET', task_key, 'state', 'entry', 'runner')
  local cancelled = cancelled_jobs[job_key]
  if t[2] ~= entry or (t[1] ~= 'queued' and t[1] ~= 'running') then
    drop(lane, entry)  -- superseded (requeued, cancelled, finished): not ours to run
    out[#out + 1] = 'stale'
  elseif expired == '' and owned_by_another(t[3], ARGV[1]) then
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
    elseif poison ~= '' then
      -- Delivered again and again without finishing: it keeps killing its runners.
      drop(lane, entry)
      redis.call('HSET', task_key, 'state', 'failed', 'runner', ARGV[1])
      redis.call('HINCRBY', job_key, 'failed', '1')
      append(KEYS[1], poison)
      out[#out + 1] = 'poisoned'
    else
      append(KEYS[1], expired)
      append(KEYS[1], claimed)
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
