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

-- Lanes known to exist in this call: each is checked (and created) at most once per script.
local lane_ready = {}

local function ensure_lane(lane)
  if not lane_ready[lane] then
    if redis.call('EXISTS', lane) == 0 then
      redis.call('XGROUP', 'CREATE', lane, GROUP, '0', 'MKSTREAM')
    end
    lane_ready[lane] = true
  end
end

local function enqueue(task_key)
  local f = redis.call('HMGET', task_key, 'lane', 'id', 'job')
  local lane = key(f[1])
  ensure_lane(lane)
  local entry = redis.call('XADD', lane, '*', 't', f[2], 'j', f[3])
  redis.call('HSET', task_key, 'state', 'queued', 'entry', entry, 'runner', '', 'release', '')
end

-- Server time in ms, read once per call: a script is atomic, all of it happens "now".
local now_cached

local function now_ms()
  if now_cached == nil then
    local t = redis.call('TIME')
    now_cached = t[1] * 1000 + math.floor(t[2] / 1000)
  end
  return now_cached
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

-- Create sibling tasks from their JSON (see TaskStore.specs_payload), in order, queueing those
-- without dependencies: {job, tail, shapes, tasks}. Each task is [shape, key, id, input, deps,
-- node], a shape [name, version, cluster, lane, lane registry, parent, max_retries, optional];
-- its chain is '[' .. node .. tail, the node written here when empty. The task hash is written
-- once, queued or waiting; ids are appended to the job's task list and counted in its total in
-- one command per call, not one per task. Returns how many tasks were created.
local function create_tasks(job_key, job_tasks_key, payload)
  local job, tail, shapes, tasks = payload.job, payload.tail, payload.shapes, payload.tasks
  local ids, registered = {}, {}
  for i, t in ipairs(tasks) do
    local s = shapes[t[1]]
    local name, version, cluster, lane, registry, parent, max_retries, optional =
      s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8]
    local task_key, id, input, deps, node = key(t[2]), t[3], t[4], t[5], t[6]
    if node == '' then
      node = '{"k":"' .. task_key .. '","d":[]}'
    end
    if tonumber(deps) == 0 then
      ensure_lane(key(lane))
      local entry = redis.call('XADD', lane, '*', 't', id, 'j', job)
      redis.call('HSET', task_key,
        'id', id, 'job', job, 'name', name, 'version', version, 'cluster', cluster,
        'lane', lane, 'input', input, 'parent', parent, 'state', 'queued', 'deps', deps,
        'open', 1, 'attempts', 0, 'max_retries', max_retries, 'optional', optional,
        'chain', '[' .. node .. tail, 'entry', entry, 'runner', '', 'release', '')
    else
      redis.call('HSET', task_key,
        'id', id, 'job', job, 'name', name, 'version', version, 'cluster', cluster,
        'lane', lane, 'input', input, 'parent', parent, 'state', 'waiting', 'deps', deps,
        'open', 1, 'attempts', 0, 'max_retries', max_retries, 'optional', optional,
        'chain', '[' .. node .. tail)
    end
    if registered[s] == nil then  -- per shape: it names one lane and its registry
      redis.call('SADD', key(registry), lane)
      registered[s] = true
    end
    ids[#ids + 1] = id
    if #ids == 1000 or i == #tasks then  -- bounded: unpack has a stack limit
      redis.call('RPUSH', job_tasks_key, unpack(ids))
      ids = {}
    end
  end
  if #tasks > 0 then
    redis.call('HINCRBY', job_key, 'total', #tasks)
  end
  return #tasks
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
