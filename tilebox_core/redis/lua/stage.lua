-- Create a chunk of the subtasks of a task that is still running, before the finish that completes
-- it (TaskStore.finish_many stages a large fan-out this way: each call keeps the server busy for
-- milliseconds, not seconds, and runners start on the first chunks meanwhile). Subtask ids are
-- derived from the parent's id and their index (see ids.py), so a parent that runs again after
-- its runner died between two chunks creates each subtask once: tasks that exist are skipped.
-- Each created subtask counts once in the parent's open count.
-- KEYS[1] task log, then the job hash, the parent's lane, its task hash, the job's task list,
-- and the task and lane keys the subtasks name.
-- ARGV[1] runner id, ARGV[2] the parent's lane entry id, ARGV[3] subtasks (JSON, see
-- create_tasks), ARGV[4] their TaskSubmitted events, encoded and concatenated in order, ARGV[5]
-- the length of each in bytes, comma-separated. Laid out by TaskStore._stage_call.
-- Returns how many subtasks were created, or -1 when fenced off (the lease was lost) or the parent
-- was superseded: the finish that follows finds out which and drops the entry.
-- Who the events are recorded as: the actor key, last of KEYS (actor.lua takes it off).
authenticate(KEYS[1])
local job, task, job_tasks = KEYS[2], KEYS[4], KEYS[5]
local entry = ARGV[2]
-- fenced as finish.lua is: by the owner the last recorded claim names (the parent's claim is
-- recorded before its subtasks are staged), so both refuse, or both accept, the same runner
local f = redis.call('HMGET', task, 'state', 'entry', 'runner')
if owned_by_another(f[3], ARGV[1]) then
  return -1
end
if f[2] ~= entry or (f[1] ~= 'queued' and f[1] ~= 'running') then
  return -1
end
if redis.call('HGET', job, 'cancelled') == '1' then
  return 0  -- a cancelled job gets no new tasks
end
-- A parent run again creates the same chunks (same ids, same boundaries) and chunks are created
-- whole and in order: one whose last task exists was created before, one whose first does not was
-- not. Only a chunk of another size (a runner of another version) needs each task looked up.
local payload = cjson.decode(ARGV[3])
local tasks = payload.tasks
if redis.call('EXISTS', key(tasks[#tasks][2])) == 1 then
  return 0
end
local made
if redis.call('EXISTS', key(tasks[1][2])) == 1 then
  made = {}
end
local created = create_tasks(job_tasks, payload, true, made)
local lengths  -- parsed only when some tasks existed already
append_kept(KEYS[1], ARGV[4], #tasks, #tasks, made, function(i)
  if lengths == nil then
    lengths = {}
    for length in string.gmatch(ARGV[5], '%d+') do
      lengths[#lengths + 1] = tonumber(length)
    end
  end
  return 1, lengths[i]
end)
if created > 0 then
  redis.call('HSETNX', task, 'open', '1')  -- absent: 1, the task itself
  redis.call('HINCRBY', task, 'open', tostring(created))
end
flush_events()
return created
