-- Remove jobs from Redis, each wholly or not at all, and record JobsDeleted: their hashes, task
-- hashes, task lists, task logs, lane entries of their queued tasks and index entries. Their
-- events stay in the task log (the archive's, later): jobs().find answers from them.
-- KEYS[1] task log, KEYS[2] jobs index, KEYS[3] ended index, KEYS[4] expiring index, then per
-- job: its hash, task list, task log stream and task hashes (roots first, then listed), and
-- last the lanes of its queued tasks. ARGV[1] reason (expired | deleted), ARGV[2] now (ms, for
-- 'expired': only a job due by then, still ended and not ended again since it was scheduled),
-- ARGV[3] the JobsDeleted event naming every job of the call; then 3 per job: its id, how many
-- ids its task list held when read, how many task hashes follow its task log key.
-- Every job is checked before anything is written: if one fails its check, nothing is removed
-- and the reply says why, per job: ok | gone (no hash) | active (not ended, or ended again and
-- not scheduled yet) | early (not due) | changed (tasks were added or queued since the caller
-- read them: read again); gone and active ones are unscheduled (out of the expiring index). The
-- caller
-- calls again without the others, with a JobsDeleted naming only those. Returns the statuses;
-- all 'ok': removed.
-- Who the event is recorded as: the actor key, last of KEYS (actor.lua takes it off).
authenticate(KEYS[1])
local log, index, ended, expiring = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local expired, now = ARGV[1] == 'expired', tonumber(ARGV[2])
local jobs, statuses, all_ok = {}, {}, true
local at = 5
for i = 4, #ARGV, 3 do
  local id, listed, count = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local job = {id = id, hash = KEYS[at], list = KEYS[at + 1], logs = KEYS[at + 2],
               first = at + 3, last = at + 2 + count, drops = {}}
  at = job.last + 1
  local f = redis.call('HMGET', job.hash, 'info', 'cancelled', 'open')
  local status = 'ok'
  if not f[1] then
    status = 'gone'
  elseif expired and (not (f[2] == '1' or f[2] == 'failed' or f[3] == '0')
      or redis.call('ZSCORE', ended, id)) then
    status = 'active'  -- retried (and maybe ended again: then it is scheduled afresh)
  elseif expired and tonumber(redis.call('ZSCORE', expiring, id) or '1e300') > now then
    status = 'early'
  elseif redis.call('LLEN', job.list) ~= listed then
    status = 'changed'
  else
    for k = job.first, job.last do
      local t = redis.call('HMGET', KEYS[k], 'state', 'spec', 'entry')
      if t[1] == 'queued' and t[3] and t[3] ~= '' then
        local lane = cjson.decode(t[2]).lane
        if not declared[lane] then
          status = 'changed'
          break
        end
        job.drops[#job.drops + 1] = {lane, t[3]}
      end
    end
  end
  statuses[#statuses + 1] = status
  all_ok = all_ok and status == 'ok'
  jobs[#jobs + 1] = job
end
if not all_ok then
  for i, status in ipairs(statuses) do
    if status == 'gone' or status == 'active' then
      redis.call('ZREM', expiring, jobs[i].id)  -- not to be removed as scheduled
    end
  end
  return statuses
end
for _, job in ipairs(jobs) do
  for _, d in ipairs(job.drops) do
    drop(d[1], d[2])
  end
  redis.call('DEL', job.hash, job.list, job.logs)
  for k = job.first, job.last, 1000 do  -- bounded: unpack has a stack limit
    redis.call('DEL', unpack(KEYS, k, math.min(k + 999, job.last)))
  end
  redis.call('ZREM', index, job.id)
  redis.call('ZREM', ended, job.id)
  redis.call('ZREM', expiring, job.id)
end
append(log, ARGV[3])
flush_events()
return statuses
