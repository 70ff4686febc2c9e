-- Record the claims of lane entries a runner received (XREADGROUP) or took over (XCLAIM), before
-- it runs their tasks (see TaskRunner: fast tasks have their claim recorded with their result).
-- KEYS[1] task log, then per entry: task hash, job hash, lane.
-- ARGV[1] runner id, ARGV[2] release id ('' for none), then 6 per entry: entry id, TaskClaimed,
-- TaskLeaseExpired ('' if fresh), the TaskFailed of a poison task ('' if it is none: the runner
-- decides, domain.tasks.is_poison), its error (JSON, domain.tasks.TaskError, kept on the task),
-- and the task's scopes (see in_skipped_scope). Laid out by TaskStore._claim_call.
-- Returns per entry its status (domain.tasks.ClaimStatus): ok | stale | cancelled | poisoned |
-- taken (another runner's claim is recorded: it took the task over while this runner stalled; a
-- claim only takes a task from its recorded owner with the TaskLeaseExpired of a takeover) |
-- held (its job failed: a queued task is not handed out until the job is retried; its entry is
-- dropped and its 'entry' emptied, which retry.lua looks for to queue it again) | skip (it is in
-- an optional subtree whose run failed: nothing is recorded, and the runner finishes it as
-- skipped, finish.lua).
local out = {}
local n = (#KEYS - 1) / 3
local gates, started_jobs = {}, {}  -- per job: its gate (see gate_of), read / written once per call
for i = 0, n - 1 do
  local task_key, job_key, lane = KEYS[2 + 3 * i], KEYS[3 + 3 * i], KEYS[4 + 3 * i]
  local a = 3 + 6 * i
  local entry, claimed, expired, poison = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local t = redis.call('HMGET', task_key, 'state', 'entry', 'runner')
  if t[2] ~= entry or (t[1] ~= 'queued' and t[1] ~= 'running') then
    drop(lane, entry)  -- superseded (requeued, cancelled, finished): not ours to run
    out[#out + 1] = 'stale'
  elseif expired == '' and owned_by_another(t[3], ARGV[1]) then
    out[#out + 1] = 'taken'  -- its entry is the new owner's: left alone
  else
    local gate = gates[job_key]
    if gate == nil then
      gate = gate_of(job_key)
      gates[job_key] = gate
    end
    if gate == '1' then
      drop(lane, entry)
      redis.call('HSET', task_key, 'state', 'cancelled')
      out[#out + 1] = 'cancelled'
    elseif gate == 'failed' and t[1] == 'queued' then
      hold(task_key, lane, entry)  -- a running one (a takeover) finishes
      out[#out + 1] = 'held'
    elseif in_skipped_scope(job_key, ARGV[a + 5]) then
      out[#out + 1] = 'skip'
    elseif poison ~= '' then
      -- Delivered again and again without finishing: it keeps killing its runners.
      drop(lane, entry)
      redis.call('HSET', task_key, 'state', 'failed', 'runner', ARGV[1], 'error', ARGV[a + 4])
      redis.call('HINCRBY', job_key, 'failed', '1')
      close_gate(job_key)
      gates[job_key] = 'failed'

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
