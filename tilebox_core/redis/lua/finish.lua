-- Finish tasks a runner received, fenced: only a task's current owner is heard, the runner whose
-- claim was recorded last (claim.lua; here, with the result, when no claim is recorded). A
-- runner that takes over an expired lease records its claim before it runs the task; until it
-- has, the stalled owner's result is still accepted, and the claim then finds the task done.
-- KEYS[1] task log, then every other key the tasks name: their job hashes, lanes, task hashes and
-- job task lists, and every key their chains and subtask specs name.
-- ARGV[1] runner id, ARGV[2] release id ('' for none), ARGV[3] the tasks' encoded events,
-- concatenated in order, ARGV[4] how many; then 13 per task: job hash, lane, task hash, job task
-- list, entry id, outcome (domain.tasks.Outcome: completed | retry | failed | failed_optional |
-- released | failed_nested | skipped), compute ms, details ('' for none, else JSON: "p" progress
-- {label: [done, total]}, "d" the display name the task set, "e" its error {type, message,
-- traceback}, "s" the optional task whose subtree a failed_nested result skips, "r" its
-- max_retries, "o" '1' for an optional task), subtasks (JSON, see create_tasks; '' for none),
-- claimed ('1': claim.lua recorded the claim; '0': this call records it, and the task's events
-- begin with its TaskClaimed), its events' extent in ARGV[3], "<number>:<bytes>", and what its
-- hash keeps once finished (see write_finished): its compact spec, "<version>\n<cluster>\n<name>",
-- and its parent ('' for none). Laid out by TaskStore._finish_call.
-- Returns per task (domain.tasks.FinishStatus) 1; 0 when fenced off (the lease was lost: another
-- runner owns the task now); 2 when the entry was superseded meanwhile (the job was cancelled or
-- failed while the task ran unclaimed, or the task was requeued): the entry is dropped and
-- nothing is recorded but the cancellation, or the hold (see hold in tasklib).
-- Per-call work is done once per lane or job: lane entries are acknowledged and deleted per lane
-- and job counters incremented per job at the end.
-- Who the events are recorded as: the actor key, last of KEYS (actor.lua takes it off).
authenticate(KEYS[1])
local log, runner, release = KEYS[1], ARGV[1], ARGV[2]
local lanes, acks = {}, {}                -- lanes in order; lane -> entries to drop
local hashes, counters = {}, {}           -- job hashes in order; job -> counts (see count)
local gates, started_jobs = {}, {}  -- per job: its gate (see gate_of), read once per call
-- A finished task's finished_ms: when its result was recorded, in the server's clock (TIME: one
-- clock for every runner); with compute_ms it tells when the task ran (a job's execution stats,
-- domain.jobs.execution_stats). A field of the hash written anyway, not a command of its own: a
-- per-job field would cost a single-task job two more commands (a tenth of its server work).
local time = redis.call('TIME')
local now = string.format('%d', tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000))

local function drop_later(lane, entry)
  local entries = acks[lane]
  if entries == nil then
    entries = {}
    acks[lane] = entries
    lanes[#lanes + 1] = lane
  end
  entries[#entries + 1] = entry
end

local function count(job, field, by)
  local c = counters[job]
  if c == nil then
    c = {}  -- field -> delta, and the fields in order (one table per job: fewer per task)
    counters[job] = c
    hashes[#hashes + 1] = job
  end
  local now = c[field]
  if now == nil then
    c[#c + 1] = field
    now = 0
  end
  c[field] = now + by
end

local function gate(job)
  local g = gates[job]
  if g == nil then
    g = gate_of(job)
    gates[job] = g
  end
  return g
end

local function is_cancelled(job)
  return gate(job) == '1'
end

-- A complete task's parent learns of it at the end of the call, once per parent however many of
-- its subtasks completed here (a fan-out's thousands of leaves cost one write, not thousands).
local parents, completed_children = {}, {}  -- parents in order; key -> {count, job, a child chain}

-- The parent's key when a task's chain starts with the node of a task without dependants,
-- '[{"k":"<task>","d":[]}', followed by its parent's node (or false: a root), as create_tasks
-- writes it; nil when it does not (the caller decodes the chain). Decoding every chain costs
-- about as much as a command, and most tasks need only this much of it.
local function plain_parent(chain, task)
  if chain == false then  -- none stored: a root without dependants (see create_tasks)
    return false
  end
  local node_end = 7 + #task + 9  -- '[{"k":"' task '","d":[]}'
  if string.find(chain, '","d":[]}', 8 + #task, true) ~= node_end - 8 then
    return nil
  end
  if string.byte(chain, node_end + 1) == 93 then  -- ']'
    return false
  end
  return string.match(chain, '^,{"k":"([^"\\]+)"', node_end + 1)
end

-- ``parent``: plain_parent(chain, task), as the caller found it.
local function settle_later(job, chain, parent)
  if parent == nil then
    local nodes = cjson.decode(chain)
    release_dependants(nodes[1])
    parent = nodes[2] and nodes[2].k or false
  end
  if not parent then
    count(job, 'open', -1)
    return
  end
  local pending = completed_children[parent]
  if pending == nil then
    completed_children[parent] = {1, job, chain}
    parents[#parents + 1] = parent
  else
    pending[1] = pending[1] + 1
  end
end

local function settle_parents()
  for _, parent in ipairs(parents) do
    local done, job, chain = unpack(completed_children[parent])
    if redis.call('HINCRBY', key(parent), 'open', tostring(-done)) == 0 then
      settle(job, cjson.decode(chain), 2)
    end
  end
end

-- Write a task's result: its state, finished_ms, compute time unless 0, the owner when this call
-- records the claim, its open count unless 0 (absent once finished: 0, see tasklib), and
-- ``extra`` fields (display, error) when there are any. The usual cases are spelled out: a table
-- of fields, grown and unpacked, costs the server more per task.
local function write_result(task, state, compute_ms, record_owner, open, extra)
  if compute_ms == '0' and open == 0 and extra == nil then
    if not record_owner then
      redis.call('HSET', task, 'state', state, 'finished_ms', now)
    elseif release == '' then
      redis.call('HSET', task, 'state', state, 'finished_ms', now, 'runner', runner)
    else
      redis.call('HSET', task, 'state', state, 'finished_ms', now, 'runner', runner, 'release', release)
    end
    return
  end
  local fields = {'state', state, 'finished_ms', now}
  if compute_ms ~= '0' then
    fields[#fields + 1] = 'compute_ms'
    fields[#fields + 1] = compute_ms
  end
  if record_owner then
    fields[#fields + 1] = 'runner'
    fields[#fields + 1] = runner
    if release ~= '' then
      fields[#fields + 1] = 'release'
      fields[#fields + 1] = release
    end
  end
  if open ~= 0 then
    fields[#fields + 1] = 'open'
    fields[#fields + 1] = tostring(open)
  end
  for _, value in ipairs(extra or {}) do
    fields[#fields + 1] = value
  end
  redis.call('HSET', task, unpack(fields))
end

-- Finished tasks' hashes, written anew at the end of the call (flush_finished): their keys, and
-- per key its fields and values.
local finished_keys, finished_fields = {}, {}

-- Write a finished task's hash anew, compact (see tasklib's header): what a finished task is read
-- for (jobs.find, the console, fencing a late result) and nothing only a running or retried one
-- needs (its lane entry id, input, spec JSON, dependency count, chain without dependants). A hash
-- whose values are all short is one small allocation (listpack); a single long value, as the
-- JSON spec and the chain are, turns it into a table of allocations for every field, and it
-- stays one once the long values are gone: so it is deleted and written again, at the end of the
-- call. ``f`` is what finish read of the hash; ``kept`` and ``parent`` what the runner read of
-- the task from its lane entry (its compact spec, its parent or ''; TaskStore._finish_call);
-- ``details`` its details (max_retries, optional), if any; ``plain`` what plain_parent found of
-- its chain; ``tried`` the attempts this result adds (1 for a failure, 0 else).
local function write_finished(task, f, kept, parent, details, plain, state, compute_ms,
                              record_owner, open, extra, tried)
  local owner, by = f[5], f[6]
  if record_owner then
    owner, by = runner, release
  end
  local fields, n = {'state', state, 'spec', kept, 'finished_ms', now}, 6
  if parent ~= '' then
    fields[7], fields[8], n = 'parent', parent, 8
  end
  if owner and owner ~= '' then
    fields[n + 1], fields[n + 2], n = 'runner', owner, n + 2
  end
  if by and by ~= '' then
    fields[n + 1], fields[n + 2], n = 'release', by, n + 2
  end
  if details then
    if details.r then fields[n + 1], fields[n + 2], n = 'max_retries', details.r, n + 2 end
    if details.o then fields[n + 1], fields[n + 2], n = 'optional', details.o, n + 2 end
  end
  local attempts = tried + (f[7] and tonumber(f[7]) or 0)
  if attempts > 0 then
    fields[n + 1], fields[n + 2], n = 'attempts', tostring(attempts), n + 2
  end
  if compute_ms == '0' then
    compute_ms = f[8]  -- an attempt before, retried, took time (false: none did)
  end
  if compute_ms then
    fields[n + 1], fields[n + 2], n = 'compute_ms', compute_ms, n + 2
  end
  if open ~= 0 then
    fields[n + 1], fields[n + 2], n = 'open', tostring(open), n + 2
  end
  -- the first node of its chain lists its dependants: kept while it has any (the diagram reads
  -- them, jobs.find with_dependencies)
  if plain == nil then
    fields[n + 1], fields[n + 2], n = 'chain', f[3], n + 2
  end
  for _, value in ipairs(extra or {}) do
    n = n + 1
    fields[n] = value
  end
  finished_keys[#finished_keys + 1] = task
  finished_fields[task] = fields
end

-- Write the finished tasks' hashes: one DEL for all of them (one per task would cost each a
-- command more), then each one's fields.
local function flush_finished()
  for i = 1, #finished_keys, 1000 do  -- bounded: unpack has a stack limit
    redis.call('DEL', unpack(finished_keys, i, math.min(i + 999, #finished_keys)))
  end
  for _, task in ipairs(finished_keys) do
    redis.call('HSET', task, unpack(finished_fields[task]))
  end
end

-- The fields a result keeps besides its state (see write_result), from its details: the display
-- name the task set, and the error of a failure; nil for none.
local function extra_fields(details, failed)
  local extra = {}
  if details.d then
    extra[#extra + 1] = 'display'
    extra[#extra + 1] = details.d
  end
  if failed and details.e then
    extra[#extra + 1] = 'error'
    extra[#extra + 1] = cjson.encode(details.e)
  end
  return #extra > 0 and extra or nil
end

local function finish(job, lane, task, job_tasks, entry, outcome, compute_ms, details, specs_json,
                      claimed, kept, parent)
  if finished_fields[task] then  -- finished earlier in this call: as if its hash said so
    drop_later(lane, entry)
    return 2
  end
  local f = redis.call('HMGET', task, 'state', 'entry', 'chain', 'open', 'runner', 'release',
    'attempts', 'compute_ms')
  if owned_by_another(f[5], runner) then
    return 0  -- another runner's claim is recorded: it took the task over
  end
  if f[2] ~= entry or (f[1] ~= 'queued' and f[1] ~= 'running') then
    drop_later(lane, entry)  -- ours, but superseded: as claim.lua does
    return 2
  end
  if claimed == '0' then
    -- it ran unclaimed (or is handed back unrun): had its claim been recorded first, claim.lua
    -- would have refused it if its job was cancelled (created while the cancel ran) or failed
    -- (then it is held, and no claim of it is logged)
    local g = gate(job)
    if g == '1' and outcome ~= 'released' then
      drop_later(lane, entry)
      redis.call('HSET', task, 'state', 'cancelled')
      return 2
    elseif g == 'failed' and f[1] == 'queued' then
      drop_later(lane, entry)
      redis.call('HSET', task, 'entry', '')
      return 2
    end
  end
  drop_later(lane, entry)
  if (outcome == 'retry' or outcome == 'released') and claimed == '0' and not started_jobs[job] then
    -- the claim recorded here shows the job started, as claim.lua's would; the other outcomes
    -- count a result, which shows it too (domain.jobs.job_state)
    redis.call('HSET', job, 'started', '1')
    started_jobs[job] = true
  end
  if outcome == 'released' then
    if gate(job) == 'failed' then
      -- handed back because its job failed (or while draining): held, as enqueue then a claim
      -- would leave it, without the lane entry
      redis.call('HSET', task, 'state', 'queued', 'entry', '', 'runner', '', 'release', '')
    else
      enqueue(task)
    end
    return 1
  end
  if outcome == 'retry' then
    redis.call('HINCRBY', task, 'attempts', 1)
    if compute_ms ~= '0' then  -- no owner to record: enqueue clears it
      redis.call('HSET', task, 'compute_ms', compute_ms)
    end
    enqueue(task)
    return 1
  end
  local record_owner = claimed == '0'
  details = details ~= '' and cjson.decode(details) or nil
  local extra = details and extra_fields(details, outcome ~= 'completed') or nil
  if outcome == 'failed' then
    write_result(task, 'failed', compute_ms, record_owner, 0, extra)
    redis.call('HINCRBY', task, 'attempts', 1)
    count(job, 'failed', 1)
    if gate(job) == '' then
      close_gate(job)
      gates[job] = 'failed'  -- the job's tasks later in this call are held, as after it
    end
    return 1
  end
  local open = f[4] and tonumber(f[4]) or 1  -- absent: 1, the task itself (see tasklib)
  local state, tried = 'computed', 0
  if outcome == 'skipped' then
    -- complete unrun (subtasks it staged before, if any, are in the skipped subtree too)
    open = open - 1
    state = 'skipped'
  elseif outcome == 'failed_optional' or outcome == 'failed_nested' then
    open = open - 1
    state, tried = 'failed_optional', 1
    count(job, 'skipped', 1)  -- (a count of results, see Keys.job)
    if outcome == 'failed_nested' then
      -- the rest of the optional subtree it is in will not run (claim.lua, and below)
      redis.call('HSET', job, 'skip:' .. details.s, '1')
    end
  else
    count(job, 'computed', 1)
    if details and details.p then
      for label, counts in pairs(details.p) do
        count(job, 'progress:' .. label .. ':done', counts[1])
        count(job, 'progress:' .. label .. ':total', counts[2])
      end
    end
    local created = 0
    if specs_json ~= '' and not is_cancelled(job) then  -- a cancelled job gets no new tasks
      local specs = cjson.decode(specs_json)
      if not in_skipped_scope(job, specs.scopes) then  -- nor does a skipped subtree
        created = create_tasks(job_tasks, specs, true)
      end
    end
    open = open + created - 1
  end
  local plain = plain_parent(f[3], task)  -- (its chain: see settle_later)
  write_finished(task, f, kept, parent, details, plain, state, compute_ms, record_owner, open,
    extra, tried)
  -- Also in a cancelled job: its waiting tasks are cancelled, and settling only ever queues
  -- waiting ones.
  if open == 0 then
    settle_later(job, f[3], plain)
  end
  return 1
end

local tasks = (#ARGV - 4) / 13  -- task i's arguments start at ARGV[13 * i - 8]
local out, recorded = {}, {}
for i = 1, tasks do
  local a = 13 * i - 8
  out[i] = finish(key(ARGV[a]), key(ARGV[a + 1]), key(ARGV[a + 2]), key(ARGV[a + 3]),
    ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8], ARGV[a + 9], ARGV[a + 11],
    ARGV[a + 12])
  recorded[i] = out[i] == 1
end
append_kept(log, ARGV[3], tonumber(ARGV[4]), tasks, recorded, function(i)
  local n, bytes = string.match(ARGV[13 * i + 2], '^(%d+):(%d+)$')
  return tonumber(n), tonumber(bytes)
end)
flush_finished()  -- before the parents are told: a parent may have finished in this call
settle_parents()
for _, lane in ipairs(lanes) do
  local entries = acks[lane]
  for i = 1, #entries, 1000 do  -- bounded: unpack has a stack limit
    local chunk = {unpack(entries, i, math.min(i + 999, #entries))}
    redis.call('XACK', lane, GROUP, unpack(chunk))
    redis.call('XDEL', lane, unpack(chunk))
  end
end
-- A job's open count first: a job it completes needs no count of results any more, which only
-- tells a running job from a queued one (jobs.job_state): a single-task job costs a command less.
for _, job in ipairs(hashes) do
  local c = counters[job]
  local complete = c.open ~= nil and redis.call('HINCRBY', job, 'open', tostring(c.open)) == 0
  if complete then
    job_ended(job)
  end
  for _, field in ipairs(c) do
    if field ~= 'open' and not (complete and (field == 'computed' or field == 'skipped')) then
      redis.call('HINCRBY', job, field, tostring(c[field]))
    end
  end
end
flush_events()
return out
