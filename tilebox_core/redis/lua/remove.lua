-- Remove jobs from Redis, each wholly or not at all, and record JobsDeleted: their hashes, task
-- hashes, task lists, task logs, lane entries of their queued tasks and index entries. Their
-- events stay in the task log (the archive's, later): jobs().find answers from them.
-- KEYS[1] task log, KEYS[2] jobs index, KEYS[3] expiring index, then per job: its hash, task
-- list (left out for a job settled with an empty one: no such key), task log stream and task
-- hashes (roots first, then listed), and last the lanes of its queued tasks. ARGV[1] reason
-- (expired | deleted), ARGV[2] now (ms, for 'expired': only a job ended and due by then),
-- ARGV[3] the JobsDeleted event naming every job of the call, ARGV[4] JSON, 4 items per job:
-- its id, how many ids its task list held when read, how many task hashes follow its task log
-- key, and 1 if it was settled then (completed: no task open, its gate never closed), else 0.
-- (One argument for all: an argument costs the server more than its share of a JSON text.)
-- Every job is checked before anything is written: if one fails its check, nothing is removed
-- and the reply says why, per job: ok | gone (no hash) | active (not ended: retried) | early
-- (not due: ended again since) | changed (tasks were added or queued since the caller read
-- them, or it was cancelled since it was read settled: read again); gone and active ones are
-- unscheduled (out of the expiring index). The caller calls again without the others, with a
-- JobsDeleted naming only those. Returns the statuses; all 'ok': removed.
-- A job settled when the caller read it and still is cannot have changed since (no task of it
-- runs to add any, and a retry has no failed task to queue): it has no queued task and its
-- task list is as read, so neither is read here, and it costs one HMGET (the due times of all
-- the jobs are read at once, and their keys deleted together).
-- Who the event is recorded as: the actor key, last of KEYS (actor.lua takes it off).
authenticate(KEYS[1])
local log, index, expiring = KEYS[1], KEYS[2], KEYS[3]
local expired, now = ARGV[1] == 'expired', tonumber(ARGV[2])
local statuses, all_ok = {}, true
local drops = {}
local spec = cjson.decode(ARGV[4])
local jobs = #spec / 4
local ids, listed, settled, firsts, lasts = {}, {}, {}, {}, {}
local at = 4
for i = 1, jobs do
  local s = 4 * i - 3
  ids[i], listed[i], settled[i] = spec[s], spec[s + 1], spec[s + 3] == 1
  firsts[i] = at
  at = at + ((settled[i] and listed[i] == 0) and 2 or 3) + spec[s + 2]
  lasts[i] = at - 1
end
local due = {}
if expired then
  for i = 1, jobs, 1000 do
    local scores = redis.call('ZMSCORE', expiring, unpack(ids, i, math.min(i + 999, jobs)))
    for j, score in ipairs(scores) do
      due[i + j - 1] = score and tonumber(score) <= now
    end
  end
end
for i = 1, jobs do
  local first = firsts[i]
  local f = redis.call('HMGET', KEYS[first], 'open', 'cancelled')
  local open, gate = f[1], f[2]
  local settled_now = not gate and open == '0'
  local status = 'ok'
  if not open then
    status = 'gone'  -- (every job hash has 'open', from its submission on)
  elseif expired and not (gate == '1' or gate == 'failed' or open == '0') then
    status = 'active'
  elseif expired and not due[i] then
    status = 'early'
  elseif settled[i] then
    if not settled_now then
      status = 'changed'  -- cancelled since: read again, its task list with it
    end
  elseif redis.call('LLEN', KEYS[first + 1]) ~= listed[i] then
    status = 'changed'
  elseif not settled_now then  -- cancelled, failed or running: its queued tasks' entries
    for k = first + 3, lasts[i] do
      local t = redis.call('HMGET', KEYS[k], 'state', 'spec', 'entry')
      if t[1] == 'queued' and t[3] and t[3] ~= '' then
        local lane = cjson.decode(t[2]).lane
        if not declared[lane] then
          status = 'changed'
          break
        end
        drops[#drops + 1] = {lane, t[3]}
      end
    end
  end
  statuses[i] = status
  all_ok = all_ok and status == 'ok'
end
if not all_ok then
  for i, status in ipairs(statuses) do
    if status == 'gone' or status == 'active' then
      redis.call('ZREM', expiring, ids[i])  -- not to be removed as scheduled
    end
  end
  return statuses
end
for _, d in ipairs(drops) do
  drop(d[1], d[2])
end
-- every job's keys are KEYS[4 .. at - 1], in one run: deleted 1000 at a time (unpack has a
-- stack limit), as are the index entries
for k = 4, at - 1, 1000 do
  redis.call('DEL', unpack(KEYS, k, math.min(k + 999, at - 1)))
end
for i = 1, jobs, 1000 do
  local last = math.min(i + 999, jobs)
  redis.call('ZREM', index, unpack(ids, i, last))
  redis.call('ZREM', expiring, unpack(ids, i, last))
end
append(log, ARGV[3])
flush_events()
return statuses
