"""The task plane's Redis adapter: task lanes, consumer groups, leases and the task scripts.

Routing happens at submit time: every task goes to the lane stream of its (cluster, name, major,
minor), each with one consumer group, so a runner reads exactly the lanes it can serve in one
blocking XREADGROUP and never receives a task it cannot run. Claims, completions, failures,
retries and cancellations are Lua scripts that change task state, acknowledge lane entries and
append the events in one atomic call. Driver errors are translated as in ``store``.
"""

from __future__ import annotations

import collections
import contextlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import hiredis
import msgspec
import redis
from redis.connection import Connection

from tilebox_core.domain.events import Event, TaskSubmitted
from tilebox_core.domain.identifiers import parse_version

from .eventstore import EventStore, load_script, translate_errors
from .keys import Keys

TASKS = "tasks"  # name of the task-plane event log
GROUP = "runners"
# Subtasks created per call when a finishing task submitted more than this many (see stage.lua):
# about 50-100 ms of server work per call, where one call for 200,000 would block it for seconds.
STAGE_CHUNK = 1000

_json = msgspec.json.Encoder()
_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\\x7f-\U0010ffff]')  # anything JSON might escape


class TaskSpec(msgspec.Struct, frozen=True):
    """A task to create: identifier, input JSON, place in the tree and retry policy."""

    id: str
    name: str
    version: str
    cluster: str
    input: str
    parent_id: str | None = None
    depends_on: list[str] = []
    max_retries: int = 0
    optional: bool = False


class NewJob(NamedTuple):
    """A job to create: its hash fields, root tasks and the events recording its submission."""

    id: str
    fields: dict[str, Any]
    specs: Sequence[TaskSpec]
    events: Sequence[Event]
    submitted_ms: int


def lane_key(keys: Keys, cluster: str, name: str, version: str) -> str:
    """The lane of tasks ``name``@``version`` submitted to ``cluster``."""
    major, minor = parse_version(version)
    return keys.lane(cluster, name, major, minor)


class TaskSpecFields(msgspec.Struct):
    """A task hash's ``spec``: what never changes once the task exists, kept as one JSON field
    (a hash field costs the server about as much to write as a command)."""

    id: str
    job: str
    name: str
    version: str
    cluster: str
    lane: str
    parent: str = ""
    max_retries: str = "0"
    optional: str = "0"


SPEC_FIELDS = frozenset(TaskSpecFields.__struct_fields__)
_spec = msgspec.json.Decoder(TaskSpecFields)


class Payload:
    """Builds the JSON of tasks to create that the task scripts read (see ``create_tasks`` in
    tasklib.lua) and collects the task, lane and lane-registry keys they name. Linear in the
    number of tasks, and compact: what tasks share (identifier, cluster, lane, parent, retry
    policy) is one "shape" sent once, for every group of siblings built by one Payload."""

    def __init__(self, keys: Keys) -> None:
        self._keys = keys
        self._shapes: dict[tuple[object, ...], int] = {}  # shape -> its 1-based index (Lua)
        self._rows: list[tuple[str, ...]] = []  # shapes as sent: plus their ``spec`` fragment
        self._lanes: dict[tuple[str, str, str], str] = {}
        self.keys: list[str] = []

    def shapes(self) -> list[tuple[str, ...]]:
        return self._rows

    def _shape(self, s: TaskSpec) -> int:
        """The 1-based (Lua) index of ``s``'s shape as sent: [lane, lane registry, the task hash's
        "spec" field without its braces, id and job (see create_tasks)]."""
        shape = (s.name, s.version, s.cluster, s.parent_id, s.max_retries, s.optional)
        index = self._shapes.get(shape)
        if index is None:
            index = self._shapes[shape] = len(self._shapes) + 1
            lane = self._lane(s)
            # Strings only: Lua numbers decoded by cjson are doubles, which Redis refuses.
            spec = {"name": s.name, "version": s.version, "cluster": s.cluster, "lane": lane}
            if s.parent_id:
                spec["parent"] = s.parent_id
            if s.max_retries:
                spec["max_retries"] = str(s.max_retries)
            if s.optional:
                spec["optional"] = "1"
            registry = self._keys.lanes(s.cluster)
            self._rows.append((lane, registry, _json.encode(spec).decode()[1:-1]))
        return index

    def _lane(self, s: TaskSpec) -> str:
        lane = self._lanes.get((s.cluster, s.name, s.version))
        if lane is None:
            lane = self._lanes[(s.cluster, s.name, s.version)] = lane_key(
                self._keys, s.cluster, s.name, s.version
            )
        return lane

    def siblings(self, specs: Sequence[TaskSpec], parent_chain: str = "[]") -> dict[str, Any]:
        """``{"tail", "tasks"}`` for sibling tasks under a parent whose chain is ``parent_chain``."""
        task_key = self._keys.task
        dependants: dict[str, list[list[str]]] = {}
        for s in specs:
            if s.depends_on:
                for dependency in dict.fromkeys(s.depends_on):
                    dependants.setdefault(dependency, []).append([task_key(s.id), self._lane(s)])
        # A task's chain is its own node followed by the parent's chain: the scripts splice them.
        tail = parent_chain.strip()[1:-1].strip()
        tail = "," + tail + "]" if tail else "]"
        tasks: list[list[Any]] = []
        for s in specs:
            key, index = task_key(s.id), self._shape(s)
            lane, registry = self._rows[index - 1][:2]
            # The node {"k": key, "d": dependants}; "" when the script can write it: no
            # dependants and a key JSON needs no escapes for.
            node = ""
            if s.id in dependants or _NEEDS_ESCAPE.search(key):
                node = _json.encode({"k": key, "d": dependants.get(s.id, [])}).decode()
            row = [index, key, s.id, s.input]
            deps = len(set(s.depends_on))
            if deps or node:  # left out at their defaults ("0", ""), as most tasks have them
                row += (str(deps), node) if node else (str(deps),)
            tasks.append(row)
            # A task's dependants are its siblings: their keys and lanes are listed here too.
            self.keys += (key, lane, registry)
        return {"tail": tail, "tasks": tasks}


class ClaimedTask(NamedTuple):
    """A task a runner received, with what it needs to run it (read from its lane entry)."""

    lane: str
    entry: str
    task_id: str
    job_id: str
    name: str
    version: str
    input: bytes
    attempts: int
    max_retries: int
    optional: bool
    chain: str
    cluster: str


class Delivery(NamedTuple):
    """A lane entry handed to a runner: fresh, or taken over after its lease expired."""

    task: ClaimedTask
    deliveries: int = 1
    previous_owner: str | None = None


class Pending(NamedTuple):
    """A lane entry delivered but not acknowledged: whose it is, and how often it was delivered."""

    lane: str
    entry: str
    deliveries: int
    owner: str


class TaskStore:
    def __init__(self, events: EventStore) -> None:
        self.events = events
        self.redis: redis.Redis = events.redis
        self.keys: Keys = events.keys
        prelude = load_script("tasklib")
        self._scripts = {
            name: self.redis.register_script(prelude + "\n" + load_script(name))
            for name in ("submit", "claim", "renew", "finish", "stage", "retry", "cancel")
        }

    # --- lanes ------------------------------------------------------------------------------------

    def lane(self, cluster: str, name: str, version: str) -> str:
        return lane_key(self.keys, cluster, name, version)

    @translate_errors
    def ensure_lanes(self, lanes: Iterable[str]) -> None:
        """Create each lane stream with its consumer group (idempotent)."""
        pipe = self.redis.pipeline(transaction=False)
        for lane in lanes:
            pipe.xgroup_create(lane, GROUP, id="0", mkstream=True)
        for result in pipe.execute(raise_on_error=False):
            if isinstance(result, Exception) and "BUSYGROUP" not in str(result):
                raise result

    @translate_errors
    def lane_backlog(self, lanes: Sequence[str]) -> tuple[int, int]:
        """(entries not yet delivered, entries delivered but not acknowledged) over ``lanes``."""
        pipe = self.redis.pipeline(transaction=False)
        for lane in lanes:
            pipe.xinfo_groups(lane)
        waiting = pending = 0
        for groups in pipe.execute(raise_on_error=False):
            if isinstance(groups, Exception):
                continue
            for group in groups:
                if group["name"] in (GROUP, GROUP.encode()):
                    waiting += int(group.get("lag") or 0)
                    pending += int(group["pending"])
        return waiting, pending

    @translate_errors
    def known_lanes(self, cluster: str) -> list[str]:
        return sorted(_s(k) for k in self.redis.smembers(self.keys.lanes(cluster)))

    def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA the task script ``name``; a server that lost its scripts (restarted) gets them
        again."""
        script = self._scripts[name]
        try:
            return self._raw("EVALSHA", script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            self.redis.script_load(script.script)
            return self._raw("EVALSHA", script.sha, len(keys), *keys, *args)

    def _raw(self, *args: Any) -> Any:
        """Send one command, packed by hiredis directly, on a pooled connection; its reply
        unparsed. The driver's generic path costs a runner microseconds per argument, and a finish
        of 64 tasks has about a thousand. Lost connections are ridden over like any command's
        (the client's retry policy)."""
        command = [hiredis.pack_command(args)]
        with self._connection() as connection:

            def call() -> Any:
                connection.send_packed_command(command)
                return connection.read_response()

            def fail(error: Exception) -> None:
                connection.disconnect()

            return connection.retry.call_with_retry(call, fail)

    def _raw_many(self, commands: list[bytes]) -> list[Any]:
        """The replies of ``commands`` (packed), sent in one write on a pooled connection: a
        pipeline without the driver's per-command work. For reads: a lost connection sends them
        all again."""
        if not commands:
            return []
        with self._connection() as connection:

            def call() -> list[Any]:
                connection.send_packed_command(commands)
                return [connection.read_response() for _ in commands]

            def fail(error: Exception) -> None:
                connection.disconnect()

            return connection.retry.call_with_retry(call, fail)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Connection]:
        """A pooled connection for commands sent by hand; disconnected if the block fails, as a
        reply may still be in flight."""
        pool = self.redis.connection_pool
        connection = pool.get_connection()
        try:
            yield connection
        except BaseException:
            connection.disconnect()
            raise
        finally:
            pool.release(connection)

    # --- submitting -------------------------------------------------------------------------------

    def specs_payload(
        self, job_id: str, specs: Sequence[TaskSpec], parent_chain: str = "[]"
    ) -> tuple[bytes, list[str]]:
        """Sibling tasks to create, as the JSON the task scripts read (see ``create_tasks`` in
        tasklib.lua), and the task, lane and lane-registry keys they name.

        ``parent_chain`` is the JSON chain of the parent task; its keys are the caller's to declare.
        """
        payload = Payload(self.keys)
        siblings = payload.siblings(specs, parent_chain)
        siblings.update(job=job_id, shapes=payload.shapes())
        return _json.encode(siblings), payload.keys

    @translate_errors
    def submit_jobs(self, chunks: Iterable[Sequence[NewJob]]) -> list[bool]:
        """Create jobs and their root tasks, each job atomically, one script call per chunk; per
        job False if its id was submitted before (a retried submission changes nothing).

        Calls are pipelined: chunk i+1 is prepared and sent before chunk i's reply is read, so
        this client encodes while the server creates. A lost connection is ridden over like any
        command's (the client's retry policy): the calls whose replies were not read are sent
        again, which the script's check of the job id makes safe. A failure that outlasts the
        policy leaves the chunks before it submitted.
        """
        script = self._scripts["submit"].script  # EVAL: no NOSCRIPT to recover mid-pipeline
        calls = (self._submit_call(chunk) for chunk in chunks)
        unanswered: collections.deque[tuple[list[str], list[Any]]] = collections.deque()
        results: list[bool] = []
        resend = False
        with self._connection() as connection:

            def send(keys: list[str], args: list[Any]) -> None:
                connection.send_command("EVAL", script, len(keys), *keys, *args)

            def run() -> None:
                nonlocal resend
                if resend:
                    resend = False
                    for call in unanswered:
                        send(*call)
                while True:
                    while len(unanswered) < 2 and (nxt := next(calls, None)) is not None:
                        unanswered.append(nxt)  # before sending: a failed send is sent again
                        send(*nxt)
                    if not unanswered:
                        return
                    results.extend(bool(r) for r in connection.read_response())
                    unanswered.popleft()

            def fail(error: Exception) -> None:
                nonlocal resend
                connection.disconnect()  # replies may still be in flight: start afresh
                resend = True

            connection.retry.call_with_retry(run, fail)
        return results

    def _submit_call(self, jobs: Sequence[NewJob]) -> tuple[list[str], list[Any]]:
        """Keys and arguments of one submit script call (see submit.lua): one JSON for all the
        jobs (their siblings share the shapes), all their events as one argument and how many,
        and all their descriptions as one argument."""
        payload = Payload(self.keys)
        keys = [self.keys.log(TASKS), self.keys.jobs]
        described: list[list[Any]] = []
        events: list[bytes] = []
        infos: list[bytes] = []
        count = 0
        for job in jobs:
            job_key = self.keys.job(job.id)
            keys.append(job_key)
            siblings = payload.siblings(job.specs)
            encoded, info = self._encode(job.events), _json.encode(job.fields)
            # Strings only where Redis gets them: Lua numbers decoded by cjson are doubles,
            # which Redis refuses. The lengths only the script reads.
            described.append([job_key, job.id, str(job.submitted_ms), len(info),
                              siblings["tasks"], len(job.events), len(encoded)])  # fmt: skip
            events.append(encoded)
            infos.append(info)
            count += len(job.events)
        keys += payload.keys
        body = _json.encode({"shapes": payload.shapes(), "jobs": described})
        return _unique(keys), [body, b"".join(events), count, b"".join(infos)]

    # --- claiming ---------------------------------------------------------------------------------

    def read(
        self, runner_id: str, lanes: Sequence[str], count: int, block_ms: int
    ) -> list[Delivery]:
        """Block up to ``block_ms`` for new entries in ``lanes`` (one XREADGROUP for all)."""
        return self.read_begin(runner_id, lanes, count, block_ms)()

    @translate_errors
    def read_begin(
        self, runner_id: str, lanes: Sequence[str], count: int, block_ms: int
    ) -> Callable[[], list[Delivery]]:
        """Send the XREADGROUP of ``read`` now; the function returned waits for its reply (call
        it once). A worker sends its next read before it runs the batch it holds, so the server
        answers while the batch runs instead of after the batch's results are recorded. The
        reply is parsed here, not by the driver, which would build a dict per entry."""
        args: tuple[str | int, ...] = ("XREADGROUP", "GROUP", GROUP, runner_id, "COUNT", count, "BLOCK", block_ms,
                "STREAMS", *lanes, *(">" for _ in lanes))  # fmt: skip
        with contextlib.ExitStack() as stack:
            connection = stack.enter_context(self._connection())
            connection.send_packed_command([hiredis.pack_command(args)])  # type: ignore[arg-type]
            held = stack.pop_all()  # kept past the send: released (or dropped) by receive

        @translate_errors
        def receive() -> list[Delivery]:
            with held:
                reply = connection.read_response()
            received, deleted = [], []
            streams = reply.items() if isinstance(reply, dict) else reply or ()  # RESP3 | RESP2
            for lane, entries in streams:
                for entry, fields in entries:
                    if fields:
                        received.append((_s(lane), _s(entry), dict(zip(fields[::2], fields[1::2]))))
                    else:  # deleted entries (cancelled) come back without fields
                        deleted.append((lane, entry))
            for lane, entry in deleted:
                self.redis.xack(lane, GROUP, entry)
            return [Delivery(task) for task in self._tasks(received)]

        return receive

    def _tasks(self, received: Sequence[tuple[str, str, dict[bytes, bytes]]]) -> list[ClaimedTask]:
        """The tasks of lane entries (lane, entry id, fields): attempts, spec, chain (empty for a
        root without dependants) and input, one per line (see add_entry in tasklib.lua). Entries
        written before they carried their task (only "t" and "j") have it read from the task
        hashes, in one round trip."""
        older = [fields for _, _, fields in received if b"d" not in fields]
        if older:
            pipe = self.redis.pipeline(transaction=False)
            for fields in older:
                pipe.hmget(self.keys.task(_s(fields[b"t"])), "attempts", "spec", "chain", "input")
            for fields, values in zip(older, pipe.execute()):
                attempts, spec, chain, data = (v or b"" for v in values)
                fields[b"d"] = b"\n".join((attempts or b"0", spec or b"{}", chain, data))
        tasks = []
        for lane, entry, fields in received:
            attempts, spec_json, chain, data = fields[b"d"].split(b"\n", 3)
            try:
                spec = _spec.decode(spec_json)
            except msgspec.ValidationError:  # its task hash is gone: the claim finds it stale
                spec = TaskSpecFields(_s(fields[b"t"]), _s(fields[b"j"]), "", "v0.0", "", lane)
            # no chain: a root without dependants (see create_tasks in tasklib.lua)
            chain_json = (
                chain.decode() if chain else f'[{{"k":"{self.keys.task(spec.id)}","d":[]}}]'
            )
            tasks.append(ClaimedTask(
                lane, entry, spec.id, spec.job, spec.name, spec.version, data, int(attempts),
                int(spec.max_retries), spec.optional == "1", chain_json, spec.cluster,
            ))  # fmt: skip
        return tasks

    @translate_errors
    def expired(self, lanes: Sequence[str], lease_ms: int, count: int) -> list[Pending]:
        """Pending entries idle longer than the lease, with their owner and delivery count."""
        pipe = self.redis.pipeline(transaction=False)
        for lane in lanes:
            pipe.xpending_range(lane, GROUP, min="-", max="+", count=count, idle=lease_ms)
        found = []
        for lane, rows in zip(lanes, pipe.execute(raise_on_error=False)):
            if isinstance(rows, Exception):
                continue
            for row in rows:
                found.append(
                    Pending(
                        lane,
                        _s(row["message_id"]),
                        int(row["times_delivered"]),
                        _s(row["consumer"]),
                    )
                )
        return found

    @translate_errors
    def take_over(
        self, runner_id: str, expired: Sequence[Pending], lease_ms: int
    ) -> list[Delivery]:
        """XCLAIM expired entries (delivery counts rise); an entry renewed meanwhile is skipped.

        We use XPENDING + XCLAIM rather than XAUTOCLAIM because the audit event needs the previous
        owner and the poison check the delivery count, which XAUTOCLAIM does not return.
        """
        received: list[tuple[str, str, dict[bytes, bytes]]] = []
        taken: list[Pending] = []
        for p in expired:
            claimed: list[tuple[bytes, dict[bytes, bytes]]] = self.redis.xclaim(  # type: ignore[assignment]
                p.lane, GROUP, runner_id, lease_ms, [p.entry]
            )
            for entry, fields in claimed:
                if fields:
                    received.append((p.lane, _s(entry), fields))
                    taken.append(p)
                else:
                    self.redis.xack(p.lane, GROUP, entry)
        return [
            Delivery(task, p.deliveries + 1, p.owner)
            for task, p in zip(self._tasks(received), taken)
        ]

    @translate_errors
    def claim(
        self, runner_id: str, release_id: str | None, max_deliveries: int,
        deliveries: Sequence[Delivery], events: Sequence[tuple[bytes, bytes, bytes]],
    ) -> list[str]:  # fmt: skip
        """Record claims before the tasks run; ``events`` per delivery: (TaskClaimed,
        TaskLeaseExpired|b"", TaskFailed). Per delivery: ok | stale | cancelled | poisoned |
        taken (see claim.lua)."""
        keys = [self.keys.log(TASKS)]
        args: list[Any] = [runner_id, release_id or "", max_deliveries]
        for d, (claimed, expired, poisoned) in zip(deliveries, events):
            task = d.task
            keys += (self.keys.task(task.task_id), self.keys.job(task.job_id), task.lane)
            args += (task.entry, d.deliveries, claimed, expired, poisoned)
        return [_s(status) for status in self._run("claim", keys, args)]

    @translate_errors
    def renew(self, runner_id: str, entries_by_lane: dict[str, list[str]]) -> set[str]:
        """Renew leases of entries still owned; returns the entries renewed."""
        pipe = self.redis.pipeline(transaction=False)
        lanes = [lane for lane, entries in entries_by_lane.items() if entries]
        for lane in lanes:
            self._scripts["renew"](
                keys=[lane], args=[runner_id, *entries_by_lane[lane]], client=pipe
            )
        renewed: set[str] = set()
        for result in pipe.execute():
            renewed.update(_s(e) for e in result)
        return renewed

    # --- finishing --------------------------------------------------------------------------------

    def finish_args(
        self, task: ClaimedTask, outcome: str, events: Sequence[Event], compute_ms: int = 0,
        progress: dict[str, list[int]] | None = None, subtasks: Sequence[TaskSpec] = (),
        claimed: bool = True,
    ) -> tuple[list[str], list[Any], bytes, int]:  # fmt: skip
        """The keys to declare, the arguments of one task in the finish script (see finish.lua),
        and its events, encoded and concatenated, and how many. ``claimed``: its claim was
        recorded (``claim``); if not, ``events`` begin with its TaskClaimed and the finish records
        the claim too."""
        specs, spec_keys = (
            self.specs_payload(task.job_id, subtasks, task.chain) if subtasks else (b"", [])
        )
        job, task_key, job_tasks = self._task_keys(task)
        keys = [job, task.lane, task_key, job_tasks, *chain_keys(task.chain), *spec_keys]
        encoded = self._encode(events)
        args = [
            job, task.lane, task_key, job_tasks, task.entry, outcome, compute_ms,
            _json.encode(progress) if progress else b"{}", specs, "1" if claimed else "0",
            f"{len(events)}:{len(encoded)}",
        ]  # fmt: skip
        return keys, args, encoded, len(events)

    def _task_keys(self, task: ClaimedTask) -> tuple[str, str, str]:
        """The job hash, task hash and job task list of ``task``."""
        return (
            self.keys.job(task.job_id),
            self.keys.task(task.task_id),
            self.keys.job_tasks(task.job_id),
        )

    def _encode(self, events: Iterable[Event]) -> bytes:
        """Events encoded and concatenated: the scripts take a call's events as one argument."""
        return b"".join(map(self.events.codec.encode, events))

    @translate_errors
    def finish_many(
        self, runner_id: str, release_id: str | None, calls: Sequence[dict[str, Any]],
        between: Callable[[], None] | None = None,
    ) -> list[int]:  # fmt: skip
        """Finish tasks of ``runner_id`` in one script call (one round trip), each call the
        arguments of ``finish_args``. Per task: 1 finished; 0 fenced off (another runner owns
        its entry now); 2 superseded while it ran (see finish.lua), nothing recorded.

        A task with more than STAGE_CHUNK subtasks and no dependencies among them has them created
        first, STAGE_CHUNK per call (``stage``, which calls ``between`` after each); its finish
        then completes it."""
        keys: dict[str, None] = {self.keys.log(TASKS): None}
        args: list[Any] = []
        events: list[bytes] = []
        count = 0
        for call in calls:
            subtasks = call.get("subtasks") or ()
            if len(subtasks) > STAGE_CHUNK and not any(s.depends_on for s in subtasks):
                call = self.stage(runner_id, call, between)
            call_keys, call_args, encoded, n = self.finish_args(**call)
            keys.update(dict.fromkeys(call_keys))
            args += call_args
            events.append(encoded)
            count += n
        header = [runner_id, release_id or "", b"".join(events), count]
        return [int(r) for r in self._run("finish", list(keys), header + args)]

    def stage(
        self, runner_id: str, call: dict[str, Any], between: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        """Create the subtasks of ``call`` (the arguments of ``finish_args``) STAGE_CHUNK per script
        call, while the task is still running; ``call`` without them, to finish the task with.
        Stops at the first call fenced off: the finish then finds out why."""
        task: ClaimedTask = call["task"]
        subtasks: Sequence[TaskSpec] = call["subtasks"]
        submitted = {e.task_id: e for e in call["events"] if isinstance(e, TaskSubmitted)}
        job, task_key, job_tasks = self._task_keys(task)
        encode = self.events.codec.encode
        for start in range(0, len(subtasks), STAGE_CHUNK):
            chunk = subtasks[start : start + STAGE_CHUNK]
            specs, spec_keys = self.specs_payload(task.job_id, chunk, task.chain)
            keys = _unique([self.keys.log(TASKS), job, task.lane, task_key, job_tasks, *spec_keys])
            encoded = [encode(submitted[s.id]) for s in chunk]
            lengths = ",".join(str(len(e)) for e in encoded)
            if (
                self._run("stage", keys, [runner_id, task.entry, specs, b"".join(encoded), lengths])
                == -1
            ):
                break
            if between is not None:
                between()
        events = [e for e in call["events"] if not isinstance(e, TaskSubmitted)]
        return {**call, "subtasks": (), "events": events}

    # --- jobs -------------------------------------------------------------------------------------

    def job(self, job_id: str) -> dict[str, Any]:
        """The job hash: its counters and flags, and the fields it was submitted with (kept as
        one JSON field, ``info``: a hash field costs the server as much to write as a command);
        empty for an unknown job."""
        return self.jobs([job_id])[0]

    @translate_errors
    def jobs(self, job_ids: Sequence[str]) -> list[dict[str, Any]]:
        """``job`` of each of ``job_ids``, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(self.keys.job(job_id))
        found = []
        for raw in pipe.execute():
            fields: dict[str, Any] = {_s(k): _s(v) for k, v in raw.items()}
            info = fields.pop("info", None)
            if info is not None:
                fields.update(msgspec.json.decode(info))
            found.append(fields)
        return found

    def task_ids(self, job_id: str) -> list[str]:
        return self.task_ids_of([(job_id, self.job(job_id))])[0]

    @translate_errors
    def task_ids_of(self, jobs: Sequence[tuple[str, dict[str, Any]]]) -> list[list[str]]:
        """The task ids of each job (id, its fields as ``jobs`` read them), in one round trip:
        its root tasks, named by its description, then those its tasks submitted, from its task
        list (jobs submitted before descriptions named their roots have them in the list)."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id, _ in jobs:
            pipe.lrange(self.keys.job_tasks(job_id), 0, -1)
        return [
            [*fields.get("roots", ()), *(_s(t) for t in listed)]
            for (_, fields), listed in zip(jobs, pipe.execute())
        ]

    @translate_errors
    def tasks(self, task_ids: Sequence[str], fields: Sequence[str]) -> list[dict[str, str]]:
        """``fields`` of each task ("" where unset); the fields of its ``spec`` are read from it."""
        stored = [f for f in fields if f not in SPEC_FIELDS] + ["spec"]
        task_key = self.keys.task
        # Packed by hiredis and sent in one write: the driver's pipeline packs and parses each
        # command itself, a third of the client's CPU in reading a 10,000-task job (measured
        # 0.33 s -> 0.21 s), which is what the console's job page does.
        args = (("HMGET", task_key(t), *stored) for t in task_ids)
        replies = self._raw_many([hiredis.pack_command(a) for a in args])  # type: ignore[arg-type]
        rows = []
        for values in replies:
            row = {f: _s(v) if v is not None else "" for f, v in zip(stored, values)}
            row.update(msgspec.json.decode(row.pop("spec") or "{}"))
            rows.append({f: row.get(f, "") for f in fields})
        return rows

    @translate_errors
    def job_ids(self, since_ms: float = float("-inf"), until_ms: float = float("inf"),
                limit: int = 1000) -> list[str]:  # fmt: skip
        ids: list[bytes] = self.redis.zrevrangebyscore(  # type: ignore[assignment]
            self.keys.jobs, until_ms, since_ms, start=0, num=limit
        )
        return [_s(i) for i in ids]

    @translate_errors
    def retry(self, job_id: str, failed: Sequence[tuple[str, str]], event: Event) -> int:
        """Re-queue failed tasks (task id, lane); returns how many were re-queued."""
        keys = [self.keys.log(TASKS), self.keys.job(job_id)]
        for task_id, lane in failed:
            keys += (self.keys.task(task_id), lane)
        return int(self._scripts["retry"](keys=keys, args=[self.events.codec.encode(event)]))

    @translate_errors
    def cancel(self, job_id: str, unfinished: Sequence[tuple[str, str]], event: Event) -> bool:
        keys = [self.keys.log(TASKS), self.keys.job(job_id)]
        for task_id, lane in unfinished:
            keys += (self.keys.task(task_id), lane)
        return bool(self._scripts["cancel"](keys=keys, args=[self.events.codec.encode(event)]))


def chain_keys(chain: str | list[dict[str, Any]]) -> list[str]:
    """Every key a task chain names: the tasks, their dependants and the dependants' lanes."""
    nodes = msgspec.json.decode(chain) if isinstance(chain, str) else chain
    keys: list[str] = []
    for node in nodes:
        keys.append(node["k"])
        for dependant_key, dependant_lane in node["d"]:
            keys += (dependant_key, dependant_lane)
    return keys


def _unique(keys: list[str]) -> list[str]:
    return list(dict.fromkeys(keys))


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
