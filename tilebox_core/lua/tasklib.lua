-- Shared prelude of the task-plane scripts (prepended to each when it is loaded).
--
-- Task hash fields: id, job, name, version, cluster, lane, input, parent, state, deps (unfinished
-- dependencies), open (1 for the task itself + its unfinished subtasks), attempts, max_retries,
-- optional, runner, release, entry (its lane entry id), chain (JSON: this task and its ancestors,
-- each with the keys and lanes of its dependants), claimed_ms, finished_ms, compute_ms.
-- States: waiting -> queued -> running -> computed | failed | failed_optional | cancelled.
--
-- Key names read from state (lanes, dependants, ancestors) must also have been passed in KEYS:
-- scripts never build a key, and stay correct on Redis Cluster and under ACL key patterns.
local GROUP = 'runners'
local declared = {}
for _, k in ipairs(KEYS) do declared[k] = true end

local function key(name)
  if not declared[name] then
    error('ERR key not declared in KEYS: ' .. tostring(name))
  end
  return name
end

local function enqueue(task_key)
  local f = redis.call('HMGET', task_key, 'lane', 'id', 'job')
  local lane = key(f[1])
  if redis.call('EXISTS', lane) == 0 then
    redis.call('XGROUP', 'CREATE', lane, GROUP, '0', 'MKSTREAM')
  end
  local entry = redis.call('XADD', lane, '*', 't', f[2], 'j', f[3])
  redis.call('HSET', task_key, 'state', 'queued', 'entry', entry, 'runner', '', 'release', '')
end

local function now_ms()
  local t = redis.call('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000)
end

local function append(log, payload)
  if payload ~= '' then
    redis.call('XADD', log, '*', 'e', payload)
  end
end

-- Drop a lane entry: acknowledged queue entries are not history (the event log is).
local function drop(lane, entry)
  redis.call('XACK', lane, GROUP, entry)
  redis.call('XDEL', lane, entry)
end

-- Create one task from its JSON spec (see taskstore.py) and queue it if it has no dependencies.
local function create_task(job_key, job_tasks_key, spec)
  redis.call('HSET', key(spec.key),
    'id', spec.id, 'job', spec.job, 'name', spec.name, 'version', spec.version,
    'cluster', spec.cluster, 'lane', spec.lane, 'input', spec.input, 'parent', spec.parent,
    'state', 'waiting', 'deps', spec.deps, 'open', 1, 'attempts', 0,
    'max_retries', spec.max_retries, 'optional', spec.optional, 'chain', spec.chain)
  redis.call('RPUSH', job_tasks_key, spec.id)
  redis.call('SADD', key(spec.lanes), spec.lane)
  redis.call('HINCRBY', job_key, 'total', 1)
  if tonumber(spec.deps) == 0 then
    enqueue(spec.key)
  end
end

-- The first task of ``chain`` is complete (it and all its subtasks are done): release its
-- dependants, and walk up while each parent thereby becomes complete too.
local function settle(job_key, chain)
  for i = 1, #chain do
    for _, dependant in ipairs(chain[i].d) do
      local dk = key(dependant[1])
      local left = redis.call('HINCRBY', dk, 'deps', -1)
      if left == 0 and redis.call('HGET', dk, 'state') == 'waiting' then
        enqueue(dk)
      end
    end
    local parent = chain[i + 1]
    if parent == nil then
      redis.call('HINCRBY', job_key, 'open', -1)
      return
    end
    if redis.call('HINCRBY', key(parent.k), 'open', -1) > 0 then
      return
    end
  end
end

-- Fencing: only the consumer that currently owns the lane entry may finish the task.
local function owns(lane, entry, runner, task_key)
  local pending = redis.call('XPENDING', lane, GROUP, entry, entry, 1)
  if #pending == 0 or pending[1][2] ~= runner then
    return false
  end
  local f = redis.call('HMGET', task_key, 'state', 'entry')
  return f[1] == 'running' and f[2] == entry
end
