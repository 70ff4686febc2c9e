-- Shared prelude of the task-plane scripts (prepended to each when it is loaded).
--
-- Task hash fields: spec (JSON: id, job, name, version, cluster, lane, and parent, max_retries,
-- optional, scopes unless at their default), input, state, deps (unfinished dependencies), open (the task
-- itself + its unfinished subtasks, written once it has subtasks; absent: 1 while it runs, 0 once
-- it finished), attempts, runner, release, entry (its lane entry id), chain (JSON: this task and
-- its ancestors, each with the keys and lanes of its dependants; absent for a root without
-- dependants, whose chain is '[{"k":"<its key>","d":[]}]'), compute_ms. Fields at their
-- default (attempts, runner, release, compute_ms 0) are absent: every hash field costs the server
-- about a command's work. When a task ran is in the log (TaskClaimed, TaskCompleted).
-- A finished task (computed, skipped, failed_optional) has its hash written anew, compact
-- (finish.lua's write_finished): state, spec ("<version>\n<cluster>\n<name>": neither of the
-- first two holds a newline, the name may), parent, max_retries, optional,
-- runner, release, attempts, compute_ms, finished_ms, open while its subtasks run, chain only
-- while it has dependants, display and error; not its input, lane entry id, dependency count nor
-- chain otherwise. Every value short (hash-max-listpack-value, 64 bytes by default), the hash is one
-- small allocation (a listpack) instead of a table of them: about 200 bytes instead of 650-900
-- (benchmarks/memory_bench.py). A failed task keeps every field: a retry queues it again.
-- States (domain.tasks.TaskState): waiting -> queued -> running -> computed | failed |
-- failed_optional | cancelled, or queued -> skipped (see in_skipped_scope). A queued task of a failed job is held (see hold): queued, with
-- 'entry' empty and no lane entry, until the job is retried.
--
-- A lane entry carries what a runner needs to run its task (see add_entry): the runner reads it
-- with the entry and need not read the task hash before it runs the task.
--
-- Key names read from state (lanes, dependants, ancestors) must also have been passed in KEYS:
-- scripts never build a key, and stay correct on Redis Cluster and under ACL key patterns.
local GROUP = 'runners'
local declared = {}
for _, k in ipairs(KEYS) do declared[k] = true end

-- A script that appends events gets the chain head of its task log (KEYS[1]) as its last key
-- (keys.chain_head; TaskStore adds it): set apart here, so that each script's KEYS stay as its
-- header describes them.
local log_head
if #KEYS > 1 and KEYS[#KEYS] == KEYS[1] .. ':head' then
  log_head = table.remove(KEYS)
end

-- The shard's expiring-jobs index (keys.TaskKeys.expiring), passed just before the chain head
-- by TaskStore._run: set apart too. A job that ends is added to it, scored by when it is to be
-- removed: the server's time plus its retention (its hash's 'retention', ms, written at submit),
-- so the sweep reads the jobs due with one ZRANGEBYSCORE and nothing else (remove.lua).
-- Absent (a caller of an earlier version): the job is not indexed, and stays.
local expiring_index
do
  local base = string.match(KEYS[1], '^(.*)log:tasks$')
  if base ~= nil and #KEYS > 1 and KEYS[#KEYS] == base .. 'jobs:expiring' then
    expiring_index = table.remove(KEYS)
  end
end
-- The server's time (ms), read once per call: when the call's jobs ended, or were submitted.
local call_ms
local function server_ms()
  if call_ms == nil then
    local t = redis.call('TIME')
    call_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return call_ms
end
-- of a job whose hash has no 'retention' (submitted before it was written there): its
-- description's, else that of a team that never set one (domain.projection)
local DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000

local function retention_of(job_key)
  local ms = redis.call('HGET', job_key, 'retention')
  if ms then
    return tonumber(ms)
  end
  local info = redis.call('HGET', job_key, 'info')
  local described = info and cjson.decode(info).retention_ms
  return type(described) == 'number' and described or DEFAULT_RETENTION_MS
end

-- Job ``job_key`` ended (completed, failed for good, cancelled): index it for the sweep.
local function job_ended(job_key)
  if expiring_index == nil then
    return
  end
  -- the job's id: its key past '<shard base>job:'
  redis.call('ZADD', expiring_index, string.format('%d', server_ms() + retention_of(job_key)),
    string.sub(job_key, #expiring_index - 13 + 5))
end

-- Job ``job_key`` runs again (a retry opened its gate): not ended any more.
local function job_resumed(job_key)
  if expiring_index ~= nil then
    redis.call('ZREM', expiring_index, string.sub(job_key, #expiring_index - 13 + 5))
  end
end

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

-- A lane entry is one field, 'd': attempts so far, spec, chain and input, separated by newlines
-- (TaskStore.read splits it; only the input, last, may hold one). One field, not four: every
-- argument costs the server work to create, append, propagate to the AOF and reply.
local function add_entry(lane, attempts, spec, input, chain)
  return redis.call('XADD', lane, '*', 'd', attempts .. '\n' .. spec .. '\n' .. chain .. '\n' .. input)
end

local function enqueue(task_key)
  local f = redis.call('HMGET', task_key, 'spec', 'input', 'chain', 'attempts')
  local spec = cjson.decode(f[1])
  local lane = key(spec.lane)
  ensure_lane(lane)
  local entry = add_entry(lane, f[4] or '0', f[1], f[2], f[3] or '')
  redis.call('HSET', task_key, 'state', 'queued', 'entry', entry, 'runner', '', 'release', '')
end

-- A call's events go to the task log in as few entries as possible: an XADD, and its AOF record,
-- costs about the same for one event as for a thousand. An entry holds one event in field 'e', or
-- several as one msgpack array in field 'b' (store.py reads both): at most EVENTS_PER_ENTRY, or
-- the events of one piece when it brings more; and in field 'a' their actor (see actor.lua: a
-- script that records events calls authenticate first). Scripts end with flush_events().
local EVENTS_PER_ENTRY = 1000
local event_log, buffered, buffered_n = nil, {}, 0
local chain_prev  -- the h of the log's last entry, once read (see add_chained)

-- Append an entry (event field ``field`` holding ``body``, field a its recorded actor) with its
-- field h, chaining it to the entry before it (domain/chain.py defines the content hashed: the
-- actor is part of it), and move the log's head on.
local function add_chained(field, body)
  if chain_prev == nil then
    if log_head == nil or event_log ~= KEYS[1] then
      error('ERR events for ' .. tostring(event_log) .. ' without its chain head in KEYS')
    end
    chain_prev = redis.call('GET', log_head) or string.rep('0', 40)
  end
  chain_prev = redis.sha1hex(
    chain_prev .. '\n' .. field .. '\n' .. body .. '\na\n' .. recorded_actor)
  redis.call('XADD', event_log, '*', field, body, 'a', recorded_actor, 'h', chain_prev)
  redis.call('SET', log_head, chain_prev)
end

local function flush_events()
  local n = buffered_n
  if n > 0 and recorded_actor == nil then
    return error('ERR events recorded without authenticate()')  -- a script's own mistake
  end
  if n == 1 then
    add_chained('e', buffered[1])
  elseif n > 1 then
    -- the encoded events are msgpack already: an array is its header followed by them
    local header
    if n < 16 then
      header = string.char(0x90 + n)
    elseif n < 65536 then
      header = string.char(0xdc, math.floor(n / 256), n % 256)
    else
      header = string.char(0xdd, math.floor(n / 16777216), math.floor(n / 65536) % 256,
        math.floor(n / 256) % 256, n % 256)
    end
    add_chained('b', header .. table.concat(buffered))
  end
  buffered, buffered_n = {}, 0
end

-- Append ``n`` encoded events, concatenated in ``payload``. Callers pass a call's events as one
-- argument where they can: every argument and every piece costs the server work.
local function append_events(log, payload, n)
  if n > 0 then
    if event_log ~= nil and event_log ~= log then
      flush_events()  -- one log per call in practice; order is kept if not
    end
    if buffered_n > 0 and buffered_n + n > EVENTS_PER_ENTRY then
      flush_events()
    end
    event_log = log
    buffered[#buffered + 1] = payload
    buffered_n = buffered_n + n
  end
end

local function append(log, payload)
  if payload ~= '' then
    append_events(log, payload, 1)
  end
end

-- Append the events of the items ``kept`` (item i: kept[i] true; nil: all of them) out of
-- ``events``, the encoded events of all items concatenated, ``total`` of them; ``extent_of(i)``
-- gives item i's number of events and their length in bytes. All of them, when all are kept and
-- they fit one entry, go as one piece and no extent is read.
local function append_kept(log, events, total, items, kept, extent_of)
  local all = total <= EVENTS_PER_ENTRY
  for i = 1, kept and items or 0 do
    all = all and kept[i]
  end
  if all then
    append_events(log, events, total)
    return
  end
  local at = 1
  for i = 1, items do
    local n, bytes = extent_of(i)
    if kept == nil or kept[i] then
      append_events(log, string.sub(events, at, at + bytes - 1), n)
    end
    at = at + bytes
  end
end

-- Whether ``recorded``, a task's 'runner' field, names a runner other than ``runner``: the last
-- recorded claim names a task's owner, and only its owner is heard (finish, stage, claim).
local function owned_by_another(recorded, runner)
  return recorded and recorded ~= '' and recorded ~= runner
end

-- Drop a lane entry: acknowledged queue entries are not history (the event log is).
local function drop(lane, entry)
  redis.call('XACK', lane, GROUP, entry)
  redis.call('XDEL', lane, entry)
end

-- A job's gate, its hash's 'cancelled' field: whether it hands out its tasks. '1': it was
-- cancelled (none is, ever again; what every version writes and reads); 'failed': a task of it
-- failed for good (none is until a retry opens the gate again, see retry.lua); absent (''): open.
-- One field, read with one HGET as the cancel flag alone was: a runner reads it for every job it
-- records a result of, and a second field would cost every single-task job 2% more.
local function gate_of(job_key)
  return redis.call('HGET', job_key, 'cancelled') or ''
end

-- Close the gate of a job a task of which failed for good (unless it is cancelled): it ended.
local function close_gate(job_key)
  if redis.call('HSETNX', job_key, 'cancelled', 'failed') == 1 then
    job_ended(job_key)
  end
end

-- Whether a task with ``scopes`` (the ids of the optional tasks among its ancestors, comma-
-- separated, "" for none: domain.tasks.subtask_scopes) is inside an optional subtree whose run
-- failed: the failure set 'skip:<that optional task>' on the job hash (finish.lua). No command
-- for a task outside every optional subtree (most).
local function in_skipped_scope(job_key, scopes)
  if scopes == nil or scopes == '' then
    return false
  end
  local fields = {}
  for scope in string.gmatch(scopes, '[^,]+') do
    fields[#fields + 1] = 'skip:' .. scope
  end
  for _, flag in ipairs(redis.call('HMGET', job_key, unpack(fields))) do
    if flag then
      return true
    end
  end
  return false
end

-- Hold a queued task of a failed job: its lane entry is dropped and its 'entry' emptied (state
-- stays 'queued'); retry.lua queues it again once the job is retried. Nothing is logged: a held
-- task's state does not change, and the log shows why (the job's failure, then its retry).
local function hold(task_key, lane, entry)
  drop(lane, entry)
  redis.call('HSET', task_key, 'entry', '')
end

-- Create sibling tasks from their JSON (see TaskStore.specs_payload), in order, queueing those
-- without dependencies: {job, tail, shapes, tasks}. Each task is [shape, key, id, input, deps,
-- node] (deps '0' and node '' may be left out: most tasks have them), a shape [lane, the spec's
-- fields but id and job as JSON without braces]; its chain is '[' .. node
-- .. tail, the node written here when empty. The task hash is written once, queued or waiting;
-- with ``listed`` the ids are appended to the job's task list, in one command per call, not one
-- per task (a job's roots are not: its description names them).
-- With ``made`` (staged creation, see stage.lua) a task that exists already is skipped, and
-- made[i] tells whether the i-th task was created. Returns how many tasks were created.
local function create_tasks(job_tasks_key, payload, listed, made)
  local job, tail, shapes, tasks = payload.job, payload.tail, payload.shapes, payload.tasks
  local ids, created = {}, 0
  for i, t in ipairs(tasks) do
    local task_key = key(t[2])
    local create = made == nil or redis.call('EXISTS', task_key) == 0
    if made ~= nil then
      made[i] = create
    end
    if create then
      local lane, spec = unpack(shapes[t[1]])
      local id, input, deps, node = t[3], t[4], t[5] or '0', t[6] or ''
      -- A root without dependants has no chain stored (nor in its lane entry): it would be
      -- '[{"k":"<its key>","d":[]}]', which its readers derive.
      local chain = ''
      if node ~= '' or tail ~= ']' then
        if node == '' then
          node = '{"k":"' .. task_key .. '","d":[]}'
        end
        chain = '[' .. node .. tail
      end
      -- What never changes is one JSON field, "spec" (ids need no escaping); attempts, runner
      -- and release are absent until set, open until the task finishes (absent: 1, the task
      -- itself): every hash field costs the server about a command's work.
      spec = '{"id":"' .. id .. '","job":"' .. job .. '",' .. spec .. '}'
      local state, last, value = 'waiting', 'deps', deps
      if deps == '0' then
        ensure_lane(key(lane))
        state, last, value = 'queued', 'entry', add_entry(lane, '0', spec, input, chain)
      end
      -- the arguments spelled out: a table of fields, grown and unpacked, costs more per task
      if chain == '' then
        redis.call('HSET', task_key, 'spec', spec, 'input', input, 'state', state, last, value)
      else
        redis.call('HSET', task_key, 'spec', spec, 'input', input, 'state', state, 'chain', chain,
          last, value)
      end
      created = created + 1
      if listed then
        ids[#ids + 1] = id
        if #ids == 1000 then  -- bounded: unpack has a stack limit
          redis.call('RPUSH', job_tasks_key, unpack(ids))
          ids = {}
        end
      end
    end
  end
  if #ids > 0 then
    redis.call('RPUSH', job_tasks_key, unpack(ids))
  end
  return created
end

-- Release the dependants of a complete task (``node`` of its chain).
local function release_dependants(node)
  for _, dependant in ipairs(node.d) do
    local dk = key(dependant[1])
    local left = redis.call('HINCRBY', dk, 'deps', '-1')
    if left == 0 and redis.call('HGET', dk, 'state') == 'waiting' then
      enqueue(dk)
    end
  end
end

-- The task at ``chain[from]`` is complete (it and all its subtasks are done): release its
-- dependants, and walk up while each parent thereby becomes complete too.
local function settle(job_key, chain, from)
  for i = from or 1, #chain do
    release_dependants(chain[i])
    local parent = chain[i + 1]
    if parent == nil then
      if redis.call('HINCRBY', job_key, 'open', '-1') == 0 then
        job_ended(job_key)
      end
      return
    end
    if redis.call('HINCRBY', key(parent.k), 'open', '-1') > 0 then
      return
    end
  end
end
