"""The task plane's Redis adapter: task lanes, consumer groups, leases and the task scripts.

Routing happens at submit time: every task goes to the lane stream of its (cluster, name, major,
minor), each with one consumer group, so a runner reads exactly the lanes it can serve and never
receives a task it cannot run. Claims, completions, failures, retries and cancellations are Lua
scripts that change task state, acknowledge lane entries and append the events in one atomic call.
Driver errors are translated as in ``store``.

A team's task plane is spread over S shards (see keys.py): a job, its tasks and their lane entries
live in the shard of the job's id, so every script call touches one shard (one slot on a cluster),
and calls for several jobs are split by shard. On one shard a runner reads its lanes with one
blocking XREADGROUP, as ever; over several, it reads them shard by shard, and when none has
anything, blocks on all of them at once (``_wait_shards``). Commands sent by hand (hiredis-packed)
go to the node serving their shard (``Routes``).
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import re
import select
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import msgspec
from redis import exceptions as rex
from redis.connection import Connection, ConnectionPool

from tilebox_core.domain.errors import StoreUnavailable
from tilebox_core.domain.events import Event, TaskSubmitted
from tilebox_core.domain.identifiers import parse_version
from tilebox_core.domain.tasks import (
    Claim,
    ClaimedTask,
    ClaimStatus,
    Delivery,
    Finish,
    FinishStatus,
    NewJob,
    Pending,
    StagedSubtasks,
    TaskError,
    TaskSpec,
)
from tilebox_core.domain.tenancy import Identity

from .connection import Routes, masters, pack
from .eventstore import EventStore, Stored, load_script, translate_errors
from .keys import MAX_SHARDS, Keys, TaskKeys, actor_key, chain_head, expiring_of, shard_of

TASKS = "tasks"  # name of the task-plane event log
GROUP = "runners"
# Subtasks created per call when a finishing task submitted more than this many (see stage.lua):
# about 50-100 ms of server work per call, where one call for 200,000 would block it for seconds.
STAGE_CHUNK = 1000
# The task scripts that append events (they get the expiring index, chain head and actor key
# last); renew appends none.
RECORDING = frozenset({"submit", "claim", "finish", "stage", "retry", "cancel", "remove"})
# Shards of a team first used on a cluster: 4 per master, so that it spreads evenly over the
# masters it has (keys.shard_tag lays shards out evenly over the slots) and over up to 4 times as
# many after resharding, while a runner's idle wait blocks on few connections (one per shard).
SHARDS_PER_MASTER = 4

_json = msgspec.json.Encoder()
# Script replies -> statuses, looked up rather than converted: an enum's constructor costs about
# a microsecond, per task.
_CLAIM_STATUS = {s.value.encode(): s for s in ClaimStatus} | {s.value: s for s in ClaimStatus}
_FINISH_STATUS = {s.value: s for s in FinishStatus}
_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\\x7f-\U0010ffff]')  # anything JSON might escape


class LaneDepth(NamedTuple):
    """A lane as the server counts it (``TaskStore.lane_depths``)."""

    lane: str
    length: int  # entries in the stream (acknowledged ones are deleted by the task scripts)
    pending: int  # delivered to a runner, not acknowledged yet
    waiting: int  # not delivered yet


def lane_key(keys: TaskKeys, cluster: str, name: str, version: str) -> str:
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
    scopes: str = ""  # the optional tasks among its ancestors (domain.tasks.subtask_scopes)


SPEC_FIELDS = frozenset(TaskSpecFields.__struct_fields__)
# Spec fields a finished task's compact hash keeps as fields of their own (see ``tasks``), each
# only when it is not at its default.
_KEPT_APART = ("parent", "max_retries", "optional")
_spec = msgspec.json.Decoder(TaskSpecFields)


class Payload:
    """Builds the JSON of tasks to create that the task scripts read (see ``create_tasks`` in
    tasklib.lua) and collects the task and lane keys they name. Linear in the
    number of tasks, and compact: what tasks share (identifier, cluster, lane, parent, retry
    policy) is one "shape" sent once, for every group of siblings built by one Payload."""

    def __init__(self, keys: TaskKeys) -> None:
        self._keys = keys
        self._shapes: dict[tuple[object, ...], int] = {}  # shape -> its 1-based index (Lua)
        self._rows: list[tuple[str, ...]] = []  # shapes as sent: plus their ``spec`` fragment
        self._lanes: dict[tuple[str, str, str], str] = {}
        self.keys: list[str] = []

    def shapes(self) -> list[tuple[str, ...]]:
        return self._rows

    def _shape(self, s: TaskSpec) -> int:
        """The 1-based (Lua) index of ``s``'s shape as sent: [lane, the task hash's "spec" field
        without its braces, id and job (see create_tasks)]."""
        shape = (s.name, s.version, s.cluster, s.parent_id, s.max_retries, s.optional, s.scopes)
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
            if s.scopes:
                spec["scopes"] = s.scopes
            self._rows.append((lane, _json.encode(spec).decode()[1:-1]))
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
            lane = self._rows[index - 1][0]
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
            self.keys += (key, lane)
        return {"tail": tail, "tasks": tasks}


class TaskStore:
    def __init__(self, events: EventStore) -> None:
        self.events = events
        self.redis = events.redis
        self.routes: Routes = events.routes
        self.keys: Keys = events.keys
        prelude = load_script("actor") + "\n" + load_script("tasklib")
        self._scripts = {
            name: self.redis.register_script(prelude + "\n" + load_script(name))
            for name in (*RECORDING, "renew")
        }
        self._shards: list[TaskKeys] | None = None
        self._recorded = False  # the number of shards was read from the server
        self._lane_groups: dict[tuple[str, ...], list[list[str]]] = {}
        self._turn = 0  # the shard a multi-shard read starts with, in turn (see _read_shards)
        self._last_lanes: tuple[Sequence[str] | None, list[list[str]]] = (None, [])

    @property
    def identity(self) -> Identity | None:
        """Who the session is connected as (named in a refusal's message: ``translate_errors``)."""
        return self.events.identity

    # --- shards -----------------------------------------------------------------------------------

    @property
    def shards(self) -> list[TaskKeys]:
        """The team's task-plane shards: as recorded in the control slot, else (a team whose task
        plane was never written to) as many as ``fix_shards`` would record."""
        if self._shards is None:
            self._shards = self._layout(self._recorded_shards() or self._default_shards())
        return self._shards

    @translate_errors
    def fix_shards(self) -> list[TaskKeys]:
        """Record the team's number of shards if it has none yet (SET NX: the first writer wins,
        and it never changes); the shards. Called before anything is written to the task plane."""
        if self._shards is None or not self._recorded:
            self.redis.set(self.keys.shards, str(self._default_shards()), nx=True)
            self._shards = self._layout(self._recorded_shards() or self._default_shards())
        return self._shards

    def _recorded_shards(self) -> int | None:
        value = self.redis.get(self.keys.shards)
        if value is None:
            return None
        text = _s(value)
        if not text.isdigit() or not 1 <= int(text) <= MAX_SHARDS:
            raise StoreUnavailable(
                f"{self.keys.shards} holds {text!r}, not a number of shards (1-{MAX_SHARDS}): it "
                "was changed by hand; set it back to the team's number of shards"
            )
        self._recorded = True
        return int(text)

    def _default_shards(self) -> int:
        """One shard on a single server (the layout of every version before shards), else
        SHARDS_PER_MASTER per master."""
        count = masters(self.redis)
        return 1 if count == 1 else min(SHARDS_PER_MASTER * count, MAX_SHARDS)

    def _layout(self, count: int) -> list[TaskKeys]:
        return [self.keys] if count == 1 else [self.keys.shard(i, count) for i in range(count)]

    def shard(self, job_id: str) -> TaskKeys:
        """The shard job ``job_id`` lives in."""
        shards = self.shards
        return shards[shard_of(job_id, len(shards))] if len(shards) > 1 else shards[0]

    def log_streams(self) -> list[str]:
        """The task log's streams, one per shard, in shard order."""
        return [shard.log(TASKS) for shard in self.shards]

    def replay(self, after: str = "0-0", until: str = "+") -> Iterator[Stored]:
        """The task log: every shard's, merged in time order (``EventStore.replay_merged``)."""
        streams = self.log_streams()
        if len(streams) == 1:  # (as it is: a generator less per event)
            return self.events.replay_stream(streams[0], after, until)
        return (stored for _, stored in self.events.replay_merged(streams, after, until))

    def task_key_prefix(self, job_id: str) -> str:
        """What the task keys of job ``job_id`` begin with (a task key is it plus the task id)."""
        return self.shard(job_id).task("")

    # --- lanes ------------------------------------------------------------------------------------

    def lane(self, cluster: str, name: str, version: str, job_id: str | None = None) -> str:
        """The lane of job ``job_id``'s tasks ``name``@``version`` on ``cluster`` (``job_id``
        None: of the first shard, every job's on a team with one)."""
        shard = self.shard(job_id) if job_id is not None else self.shards[0]
        return lane_key(shard, cluster, name, version)

    def serving_lanes(self, cluster: str, identifiers: Iterable[tuple[str, int, int]]) -> list[str]:
        """The lanes, on every shard, of tasks (name, major, minor) on ``cluster``; the shards are
        recorded first (a runner is a writer: it creates the lanes)."""
        identifiers = list(identifiers)
        return list(dict.fromkeys(
            shard.lane(cluster, name, major, minor)
            for shard in self.fix_shards()
            for name, major, minor in identifiers
        ))  # fmt: skip

    def _groups(self, lanes: Sequence[str]) -> list[list[str]]:
        """``lanes`` by shard (by hash tag), in order of first appearance; remembered, as a
        runner asks for the same lanes on every read."""
        if lanes is self._last_lanes[0]:  # a runner's own list, read after read
            return self._last_lanes[1]
        key = tuple(lanes)
        groups = self._lane_groups.get(key)
        if groups is None:
            by_tag: dict[str, list[str]] = {}
            for lane in lanes:
                by_tag.setdefault(lane[lane.index("{") : lane.index("}")], []).append(lane)
            groups = self._lane_groups[key] = list(by_tag.values())
        self._last_lanes = (lanes, groups)
        return groups

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
        """(entries not yet delivered, entries delivered but not acknowledged) over ``lanes``.

        A group's lag is the entries added to its stream less those it read, and an entry deleted
        before it was read (a cancelled task's, see cancel.lua) is never read: once entries were
        deleted after the last one delivered, the lag is unknown (nil) or one too many for each
        of them, for ever. So only a lag of 0 is taken as it is; an empty lane has nothing
        waiting, and in the others the entries after the last one delivered are counted (an idle
        runner asks: there are few)."""
        pipe = self.redis.pipeline(transaction=False)
        for lane in lanes:
            pipe.xlen(lane)
            pipe.xinfo_groups(lane)
        replies = pipe.execute(raise_on_error=False)
        waiting = pending = 0
        unknown: list[tuple[str, str, int]] = []  # lane, last entry delivered, its length
        for lane, length, groups in zip(lanes, replies[::2], replies[1::2]):
            if isinstance(groups, Exception):  # no such lane: nothing was ever submitted to it
                continue
            for group in groups:
                if _s(group["name"]) != GROUP:
                    continue
                pending += int(group["pending"])
                if length and group.get("lag") != 0:
                    unknown.append((lane, _s(group["last-delivered-id"]), int(length)))
        for lane, last, length in unknown:
            pipe.xrange(lane, min=f"({last}", max="+", count=length)
        if unknown:
            waiting = sum(len(entries) for entries in pipe.execute())
        return waiting, pending

    @translate_errors
    def lane_depths(self, lanes: Sequence[str]) -> list[LaneDepth]:
        """What the server says of each of ``lanes``, in one pipeline: its length (XLEN), the
        entries delivered and not acknowledged (the group's pending count, as XPENDING gives it)
        and those not delivered yet: the length less the pending entries, as the task scripts
        delete each entry they acknowledge (a lane holds what is pending and what waits). Not
        the group's lag, which entries deleted before they were delivered (cancelled tasks')
        leave unknown or wrong for ever (see ``lane_backlog``). A lane that does not exist yet is
        all zeros."""
        pipe = self.redis.pipeline(transaction=False)
        for lane in lanes:
            pipe.xlen(lane)
            pipe.xinfo_groups(lane)
        replies = pipe.execute(raise_on_error=False)
        depths = []
        for lane, length, groups in zip(lanes, replies[::2], replies[1::2]):
            pending = 0
            if isinstance(groups, Exception):  # no such lane: nothing was ever submitted to it
                length, groups = 0, []
            for group in groups:
                if _s(group["name"]) == GROUP:
                    pending = int(group["pending"])
            depths.append(LaneDepth(lane, int(length), pending, max(int(length) - pending, 0)))
        return depths

    def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA the task script ``name`` on the node serving ``keys`` (one shard); a server
        that lost its scripts (restarted, or a replica promoted) gets them again, on that node."""
        script = self._scripts[name]
        if name in RECORDING:  # they append to the task log, KEYS[1]: its shard's expiring
            # index (tasklib.lua), chain head and the actor key of who the events are recorded
            # as (actor.lua) last
            keys = [*keys, expiring_of(keys[0]), chain_head(keys[0]),
                    actor_key(keys[0], self.events.actor)]  # fmt: skip
        command = [pack("EVALSHA", script.sha, len(keys), *keys, *args)]

        def send(connection: Connection) -> Any:
            connection.send_packed_command(command)
            try:
                return connection.read_response()
            except rex.NoScriptError:
                connection.send_command("SCRIPT", "LOAD", script.script)
                connection.read_response()
                connection.send_packed_command(command)
                return connection.read_response()

        return self.routes.call(keys[0], send)

    def _raw_many(self, commands: list[tuple[str, bytes]]) -> list[Any]:
        """The replies of ``commands`` (a key each names, the command packed), in order; those of
        one node sent in one write on a pooled connection of it: a pipeline without the driver's
        per-command work. For reads: a lost connection sends them all again."""
        by_node: dict[str, list[int]] = {}
        node = self.routes.node
        for index, (key, _) in enumerate(commands):
            by_node.setdefault(node(key), []).append(index)
        replies: list[Any] = [None] * len(commands)
        if len(by_node) > 1:
            with contextlib.suppress(rex.RedisError):  # else node by node, with retries
                return self._raw_nodes(commands, list(by_node.values()))
        for indexes in by_node.values():
            send = _sender([commands[i][1] for i in indexes])
            for index, reply in zip(indexes, self.routes.call(commands[indexes[0]][0], send)):
                replies[index] = reply
        return replies

    def _raw_nodes(self, commands: list[tuple[str, bytes]], groups: list[list[int]]) -> list[Any]:
        """``_raw_many`` sent to every node before any reply is read: one round trip, however
        many nodes. Any error (a reply that is one, a lost node) is raised: ``_raw_many`` then
        sends them node by node, with its retries (they are reads, or CLIENT UNBLOCK)."""
        replies: list[Any] = [None] * len(commands)
        held: list[tuple[ConnectionPool, Connection, list[int]]] = []
        try:
            for indexes in groups:
                pool = self.routes.pool(commands[indexes[0]][0])
                connection = pool.get_connection()
                held.append((pool, connection, indexes))
                connection.send_packed_command([b"".join(commands[i][1] for i in indexes)])
            for _, connection, indexes in held:
                for index in indexes:
                    replies[index] = connection.read_response()
        except BaseException:
            for _, connection, _ in held:
                connection.disconnect()
            raise
        finally:
            for pool, connection, _ in held:
                pool.release(connection)
        return replies

    # --- submitting -------------------------------------------------------------------------------

    def specs_payload(
        self, job_id: str, specs: Sequence[TaskSpec], parent_chain: str = "[]"
    ) -> tuple[bytes, list[str]]:
        """Sibling tasks to create, as the JSON the task scripts read (see ``create_tasks`` in
        tasklib.lua), and the task and lane keys they name.

        ``parent_chain`` is the JSON chain of the parent task; its keys are the caller's to declare.
        """
        payload = Payload(self.shard(job_id))
        siblings = payload.siblings(specs, parent_chain)
        siblings.update(job=job_id, shapes=payload.shapes())
        if specs and specs[0].scopes:  # siblings share them: not created in a skipped subtree
            siblings["scopes"] = specs[0].scopes
        return _json.encode(siblings), payload.keys

    @translate_errors
    def submit_jobs(self, chunks: Iterable[Sequence[NewJob]]) -> list[bool]:
        """Create jobs and their root tasks, each job atomically, one script call per chunk and
        shard (the jobs of a call share a shard); per job False if its id was submitted before
        (a retried submission changes nothing).

        Calls are pipelined: chunk i+1 is prepared and sent before chunk i's reply is read, so
        this client encodes while the server creates. A lost connection is ridden over like any
        command's (the client's retry policy; on a cluster, the topology is read again): the
        calls whose replies were not read are sent again, which the script's check of the job
        id makes safe. A failure that outlasts the policy leaves the chunks before it submitted.
        """
        shards = self.fix_shards()
        script = self._scripts["submit"].script  # EVAL: no NOSCRIPT to recover mid-pipeline
        calls = self._submit_calls(_numbered(chunks), shards)
        # (keys, args, where the call's jobs are in the results), sent and not answered yet
        unanswered: collections.deque[tuple[list[str], list[Any], list[int]]] = collections.deque()
        results: dict[int, bool] = {}
        held: dict[str, tuple[ConnectionPool, Connection]] = {}  # node -> a connection of it

        def send(keys: list[str], args: list[Any]) -> Connection:
            node = self.routes.node(keys[0])
            if node not in held:
                pool = self.routes.pool(keys[0])
                held[node] = (pool, pool.get_connection())
            connection = held[node][1]
            connection.send_command(
                "EVAL",
                script,
                len(keys) + 2,
                *keys,
                chain_head(keys[0]),
                actor_key(keys[0], self.events.actor),
                *args,
            )
            return connection

        def run() -> None:
            sent = collections.deque(send(keys, args) for keys, args, _ in unanswered)  # again
            while True:
                while len(unanswered) < 2 and (nxt := next(calls, None)) is not None:
                    unanswered.append(nxt)  # before sending: a failed send is sent again
                    sent.append(send(nxt[0], nxt[1]))
                if not unanswered:
                    return
                reply = sent.popleft().read_response()
                for index, created in zip(unanswered.popleft()[2], reply):
                    results[index] = bool(created)

        def reset() -> None:
            for _, connection in held.values():
                connection.disconnect()  # replies may still be in flight: start afresh

        try:
            self.routes.retrying(shards[0].jobs, run, reset)
        except BaseException:
            reset()
            raise
        finally:
            for pool, connection in held.values():
                pool.release(connection)
        return [results[i] for i in range(len(results))]

    def _submit_calls(
        self, chunks: Iterator[list[tuple[int, NewJob]]], shards: list[TaskKeys]
    ) -> Iterator[tuple[list[str], list[Any], list[int]]]:
        """The submit script calls of chunks of (index, job), with the indexes of each call's
        jobs. Over several shards the jobs are gathered per shard and a call made once a shard
        has a chunk's worth (the rest at the end): a call per shard per chunk would cost the
        server a script call per few jobs (measured: 1.6 times the CPU per single-task job)."""
        if len(shards) == 1:
            for chunk in chunks:
                keys, args = self._submit_call(shards[0], [job for _, job in chunk])
                yield keys, args, [index for index, _ in chunk]
            return
        gathered: dict[int, list[tuple[int, NewJob]]] = {}
        size = 1
        for chunk in chunks:
            size = max(size, len(chunk))
            for index, job in chunk:
                shard = shard_of(job.id, len(shards))
                gathered.setdefault(shard, []).append((index, job))
                if len(gathered[shard]) >= size:
                    yield self._numbered_call(shards[shard], gathered.pop(shard))
        for shard, numbered in gathered.items():
            yield self._numbered_call(shards[shard], numbered)

    def _numbered_call(
        self, shard: TaskKeys, numbered: list[tuple[int, NewJob]]
    ) -> tuple[list[str], list[Any], list[int]]:
        keys, args = self._submit_call(shard, [job for _, job in numbered])
        return keys, args, [index for index, _ in numbered]

    # --- claiming ---------------------------------------------------------------------------------

    def read(
        self, runner_id: str, lanes: Sequence[str], count: int, block_ms: int
    ) -> list[Delivery]:
        """Block up to ``block_ms`` for new entries in ``lanes`` (one XREADGROUP for all, per
        shard)."""
        return self.read_begin(runner_id, lanes, count, block_ms)()

    @translate_errors
    def read_begin(
        self, runner_id: str, lanes: Sequence[str], count: int, block_ms: int
    ) -> Callable[[], list[Delivery]]:
        """Send the XREADGROUP of ``read`` now; the function returned waits for its reply (call
        it once). A worker sends its next read before it runs the batch it holds, so the server
        answers while the batch runs instead of after the batch's results are recorded. The
        reply is parsed here, not by the driver, which would build a dict per entry.

        Over several shards, the read sent now is the first shard's (in turn, without blocking);
        the function returned goes on with the others until it has ``count`` entries, and blocks
        on all of them when none has any (``_read_shards``)."""
        groups = self._groups(lanes)
        if len(groups) == 1:  # one shard: one blocking read, as ever
            receive_one = self._read_send(runner_id, lanes, count, block_ms)
            return translate_errors(lambda: [Delivery(t) for t in self._tasks(receive_one())])
        self._turn = turn = (self._turn + 1) % len(groups)
        first, rest = groups[turn], groups[turn + 1 :] + groups[:turn]
        receive_first = self._read_send(runner_id, first, count, -1)

        @translate_errors
        def receive() -> list[Delivery]:
            received = receive_first()
            received = self._read_shards(runner_id, first, rest, count, block_ms, received)
            return [Delivery(task) for task in self._tasks(received)]

        return receive

    def _read_send(
        self, runner_id: str, lanes: Sequence[str], count: int, block_ms: int
    ) -> Callable[[], list[tuple[str, str, dict[bytes, bytes]]]]:
        """Send an XREADGROUP of ``lanes`` (one shard; ``block_ms`` -1: not blocking) on a
        connection of their node; the function returned reads its entries."""
        command = [pack(*_xreadgroup(runner_id, lanes, count, block_ms))]
        try:
            with contextlib.ExitStack() as stack:
                connection = stack.enter_context(self.routes.connection(self.routes.pool(lanes[0])))
                connection.send_packed_command(command)
                held = stack.pop_all()  # kept past the send: released (or dropped) by receive
        except rex.RedisError as exc:
            self._lost(exc)
            raise

        def receive() -> list[tuple[str, str, dict[bytes, bytes]]]:
            try:
                with held:
                    return self._entries(connection.read_response())
            except rex.RedisError as exc:
                self._lost(exc)
                raise

        return receive

    def _lost(self, error: Exception) -> None:
        """After ``error`` on a read of our own: on a cluster, read the topology again if a slot
        moved or a node was lost (the worker retries the read with its backoff)."""
        cluster = self.routes.cluster
        if cluster is not None and isinstance(error, (rex.MovedError, rex.ConnectionError,
                                                      rex.TimeoutError, rex.ClusterDownError)):  # fmt: skip
            with contextlib.suppress(rex.RedisError, rex.RedisClusterException, OSError):
                cluster.nodes_manager.initialize()

    def _entries(self, reply: Any) -> list[tuple[str, str, dict[bytes, bytes]]]:
        """(lane, entry id, fields) of an XREADGROUP reply; deleted entries (cancelled tasks,
        which come back without fields) are acknowledged."""
        received, deleted = [], []
        streams = reply.items() if isinstance(reply, dict) else reply or ()  # RESP3 | RESP2
        for lane, entries in streams:
            for entry, fields in entries:
                if fields:
                    received.append((_s(lane), _s(entry), dict(zip(fields[::2], fields[1::2]))))
                else:
                    deleted.append((lane, entry))
        for lane, entry in deleted:
            self.redis.xack(lane, GROUP, entry)
        return received

    def _read_shards(
        self, runner_id: str, first: list[str], rest: list[list[str]], count: int, block_ms: int,
        received: list[tuple[str, str, dict[bytes, bytes]]],
    ) -> list[tuple[str, str, dict[bytes, bytes]]]:  # fmt: skip
        """Go on from ``first``'s entries ``received`` with the other shards' lanes, shard by
        shard, until ``count`` entries are had (so a runner holds no more than it asked for:
        with slow tasks, one); if no shard has any, block on all of them at once."""
        for lanes in rest:
            if len(received) >= count:
                return received
            received += self._read_send(runner_id, lanes, count - len(received), -1)()
        if received or block_ms <= 0:
            return received
        return self._wait_shards(runner_id, [first, *rest], count, block_ms)

    def _wait_shards(
        self, runner_id: str, groups: list[list[str]], count: int, block_ms: int
    ) -> list[tuple[str, str, dict[bytes, bytes]]]:
        """Block up to ``block_ms`` on every shard's lanes at once (a blocking XREADGROUP cannot
        span slots: one per shard, each on a connection of its own), return what the first to
        answer delivered, and unblock the others (CLIENT UNBLOCK ... TIMEOUT: they answer as if
        their time was up). An entry a shard delivered before it was unblocked is kept (a runner
        may hold a few more than ``count`` then, rarely)."""
        waiting: list[tuple[ConnectionPool, Connection, int, str]] = []
        received: list[tuple[str, str, dict[bytes, bytes]]] = []
        try:
            for lanes in groups:
                pool = self.routes.pool(lanes[0])
                connection = pool.get_connection()
                waiting.append((pool, connection, 0, lanes[0]))
                connection.send_packed_command([
                    pack("CLIENT", "ID"),
                    pack(*_xreadgroup(runner_id, lanes, count, block_ms)),
                ])  # fmt: skip
            waiting = [(p, c, int(c.read_response()), k) for p, c, _, k in waiting]
            answered = _answered([c for _, c, _, _ in waiting], block_ms / 1000 + 1.0)
            for _, connection, _, _ in waiting:
                if connection in answered:
                    received += self._entries(connection.read_response())
            unblock = [(c, i, k) for _, c, i, k in waiting if c not in answered]
            self._raw_many(
                [(key, pack("CLIENT", "UNBLOCK", i, "TIMEOUT")) for _, i, key in unblock]
            )
            for connection, _, _ in unblock:
                received += self._entries(connection.read_response())
        except BaseException as exc:
            for _, connection, _, _ in waiting:
                connection.disconnect()  # replies may still be in flight
            if isinstance(exc, rex.RedisError):
                self._lost(exc)
            raise
        finally:
            for pool, connection, _, _ in waiting:
                pool.release(connection)
        return received

    def _tasks(self, received: Sequence[tuple[str, str, dict[bytes, bytes]]]) -> list[ClaimedTask]:
        """The tasks of lane entries (lane, entry id, fields): attempts, spec, chain (empty for a
        root without dependants) and input, one per line (see add_entry in tasklib.lua). Entries
        written before they carried their task (only "t" and "j") have it read from the task
        hashes, in one round trip."""
        older = [fields for _, _, fields in received if b"d" not in fields]
        if older:
            pipe = self.redis.pipeline(transaction=False)
            for fields in older:
                task_key = self.shard(_s(fields[b"j"])).task(_s(fields[b"t"]))
                pipe.hmget(task_key, "attempts", "spec", "chain", "input")
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
                chain.decode()
                if chain
                else f'[{{"k":"{self.shard(spec.job).task(spec.id)}","d":[]}}]'
            )
            tasks.append(ClaimedTask(
                lane, entry, spec.id, spec.job, spec.name, spec.version, data, int(attempts),
                int(spec.max_retries), spec.optional == "1", chain_json, spec.cluster,
                spec.scopes, spec.parent,
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
        self, runner_id: str, release_id: str | None, claims: Sequence[Claim]
    ) -> list[ClaimStatus]:
        """Record ``claims`` before their tasks run, in one script call per shard; the status of
        each."""
        statuses: list[ClaimStatus] = [ClaimStatus.OK] * len(claims)
        for shard, indexes in self._by_shard([c.delivery.task.job_id for c in claims]):
            call = self._claim_call(shard, runner_id, release_id, [claims[i] for i in indexes])
            for index, status in zip(indexes, self._run("claim", *call)):
                statuses[index] = _CLAIM_STATUS[status]
        return statuses

    def _by_shard(self, job_ids: Sequence[str]) -> list[tuple[TaskKeys, list[int]]]:
        """The shards of ``job_ids``, each with the indexes of its jobs (all of them in one shard
        without a look at the ids, on one)."""
        shards = self.shards
        if len(shards) == 1:
            return [(shards[0], list(range(len(job_ids))))]
        by_index: dict[int, list[int]] = {}
        for index, job_id in enumerate(job_ids):
            by_index.setdefault(shard_of(job_id, len(shards)), []).append(index)
        return [(shards[i], indexes) for i, indexes in by_index.items()]

    @translate_errors
    def renew(self, runner_id: str, entries_by_lane: dict[str, list[str]]) -> set[tuple[str, str]]:
        """Renew leases of entries still owned (a script call per lane: a lane is in one shard);
        returns the (lane, entry) renewed."""
        renewed: set[tuple[str, str]] = set()
        for lane, entries in entries_by_lane.items():
            if entries:
                result = self._run("renew", [lane], [runner_id, *entries])
                renewed.update((lane, _s(e)) for e in result)
        return renewed

    # --- finishing --------------------------------------------------------------------------------

    @translate_errors
    def finish_many(
        self, runner_id: str, release_id: str | None, finishes: Sequence[Finish],
        between: Callable[[], None] | None = None,
    ) -> list[FinishStatus]:  # fmt: skip
        """Record the results of tasks of ``runner_id`` in one script call (one round trip); the
        status of each (see FinishStatus; only FINISHED records anything).

        A task with more than STAGE_CHUNK subtasks and no dependencies among them has them created
        first, STAGE_CHUNK per call (``stage``, which calls ``between`` after each); its finish
        then completes it."""
        staged = [
            self.stage(runner_id, f, between)
            if len(f.subtasks) > STAGE_CHUNK and not any(s.depends_on for s in f.subtasks)
            else f
            for f in finishes
        ]
        statuses: list[FinishStatus] = [FinishStatus.FINISHED] * len(staged)
        for shard, indexes in self._by_shard([f.task.job_id for f in staged]):
            call = self._finish_call(shard, runner_id, release_id, [staged[i] for i in indexes])
            for index, reply in zip(indexes, self._run("finish", *call)):
                statuses[index] = _FINISH_STATUS[reply]
        return statuses

    def stage(
        self, runner_id: str, finish: Finish, between: Callable[[], None] | None = None
    ) -> Finish:
        """Create the subtasks of ``finish`` STAGE_CHUNK per script call, while its task is still
        running; ``finish`` without them (and their events), to complete the task with. Stops at
        the first call fenced off: the finish then finds out why."""
        submitted = {e.task_id: e for e in finish.events if isinstance(e, TaskSubmitted)}
        subtasks = finish.subtasks
        for start in range(0, len(subtasks), STAGE_CHUNK):
            chunk = subtasks[start : start + STAGE_CHUNK]
            staged = StagedSubtasks(finish.task, chunk, [submitted[s.id] for s in chunk])
            if self._stage(runner_id, staged) == -1:
                break
            if between is not None:
                between()
        events = [e for e in finish.events if not isinstance(e, TaskSubmitted)]
        return msgspec.structs.replace(finish, subtasks=[], events=events)

    @translate_errors
    def _stage(self, runner_id: str, staged: StagedSubtasks) -> int:
        """How many of ``staged`` were created (some may exist already), or -1: fenced off."""
        return int(self._run("stage", *self._stage_call(runner_id, staged)))

    # --- the task scripts' arguments ---------------------------------------------------------------
    #
    # The scripts take positional KEYS and ARGV (each script's header documents its layout); these
    # functions are the only code that lays them out, from the typed values of domain.tasks.
    # Strings only where Redis gets a value: Lua numbers decoded by cjson are doubles, which
    # Redis refuses.

    def _submit_call(self, shard: TaskKeys, jobs: Sequence[NewJob]) -> tuple[list[str], list[Any]]:
        """Keys and arguments of one submit script call (see submit.lua): one JSON for all the
        jobs (their siblings share the shapes), all their events as one argument and how many,
        and all their descriptions as one argument (the jobs are of ``shard``)."""
        payload = Payload(shard)
        keys = [shard.log(TASKS), shard.jobs]
        described: list[list[Any]] = []
        events: list[bytes] = []
        infos: list[bytes] = []
        count = 0
        for job in jobs:
            job_key = shard.job(job.id)
            keys.append(job_key)
            siblings = payload.siblings(job.specs)
            encoded, info = self._encode(job.events), _json.encode(job.info)
            # Strings only where Redis gets them: Lua numbers decoded by cjson are doubles,
            # which Redis refuses. The lengths only the script reads.
            retention = job.info.retention_ms
            described.append([job_key, job.id, len(info), siblings["tasks"], len(job.events),
                              len(encoded),
                              "" if retention is None else str(retention)])  # fmt: skip
            events.append(encoded)
            infos.append(info)
            count += len(job.events)
        keys += payload.keys
        body = _json.encode({"shapes": payload.shapes(), "jobs": described})
        return _unique(keys), [
            body,
            b"".join(events),
            count,
            b"".join(infos),
        ]

    def _claim_call(
        self, shard: TaskKeys, runner_id: str, release_id: str | None, claims: Sequence[Claim]
    ) -> tuple[list[str], list[Any]]:
        """claim.lua. KEYS: the task log, then per claim its task hash, job hash and lane. ARGV:
        runner id, release id ('' for none), then 6 per claim: its entry id, TaskClaimed,
        TaskLeaseExpired ('' for a fresh delivery), the TaskFailed of a poison task ('' if it is
        none: the runner decided, see ``is_poison``) and its TaskError (type "Poison"), kept on
        the task, and the task's scopes (skipped in a skipped optional subtree)."""
        encode = self.events.codec.compact
        keys = [shard.log(TASKS)]
        args: list[Any] = [runner_id, release_id or ""]
        for claim in claims:
            task = claim.delivery.task
            keys += (shard.task(task.task_id), shard.job(task.job_id), task.lane)
            poison = claim.poison
            args += (
                task.entry,
                encode(claim.claimed),
                encode(claim.expired) if claim.expired is not None else b"",
                encode(poison) if poison is not None else b"",
                _json.encode(TaskError("Poison", poison.error)) if poison is not None else b"",
                task.scopes,
            )
        return keys, args

    def _finish_call(
        self, shard: TaskKeys, runner_id: str, release_id: str | None, finishes: Sequence[Finish]
    ) -> tuple[list[str], list[Any]]:
        """finish.lua. KEYS: the task log, then every other key the tasks name, once: job hash,
        lane, task hash, job task list, the keys of its chain and of its subtasks. ARGV: runner
        id, release id ('' for none), every task's events encoded and concatenated in order, how
        many; then 13 per task: job hash, lane, task hash, job task list, entry id,
        outcome, compute ms, details ('' or JSON, see ``_details``), subtasks (JSON, see
        create_tasks; '' for none),
        claimed ('1': recorded before, by claim.lua; '0': by this call, and the task's events
        begin with its TaskClaimed), the extent of its events in the third, "<count>:<bytes>",
        and what its hash keeps once finished, read from its lane entry: its compact spec
        ("<version>\\n<cluster>\\n<name>") and its parent ('' for none)."""
        keys: dict[str, None] = {shard.log(TASKS): None}
        args: list[Any] = []
        events: list[bytes] = []
        count = 0
        codec = self.events.codec
        encode = codec.compact
        for finish in finishes:
            task = finish.task
            specs, spec_keys = (
                self.specs_payload(task.job_id, finish.subtasks, task.chain)
                if finish.subtasks
                else (b"", [])
            )
            job, task_key, job_tasks = self._task_keys(task)
            keys.update(dict.fromkeys(
                [job, task.lane, task_key, job_tasks, *chain_keys(task.chain), *spec_keys]
            ))  # fmt: skip
            encoded = b"".join(map(encode, finish.events))
            n = len(finish.events)
            if finish.claim is not None:  # recorded with the result, right before it
                claim = codec.compact_claim(finish.claim, next(iter(finish.events), None))
                encoded, n = claim + encoded, n + 1
            events.append(encoded)
            count += n
            args += (
                job, task.lane, task_key, job_tasks, task.entry, finish.outcome, finish.compute_ms,
                _details(finish), specs,
                "1" if finish.claim is None else "0", f"{n}:{len(encoded)}",
                f"{task.version}\n{task.cluster}\n{task.name}", task.parent_id,
            )  # fmt: skip
        return list(keys), [
            runner_id, release_id or "", b"".join(events), count, *args
        ]  # fmt: skip

    def _stage_call(self, runner_id: str, staged: StagedSubtasks) -> tuple[list[str], list[Any]]:
        """stage.lua. KEYS: the task log, job hash, the parent's lane, its task hash, the job's
        task list, then the task and lane keys the subtasks name. ARGV: runner id, the parent's
        entry id, the subtasks (JSON, see create_tasks), their TaskSubmitted events encoded and
        concatenated in order, the length of each in bytes, comma-separated."""
        task = staged.task
        specs, spec_keys = self.specs_payload(task.job_id, staged.specs, task.chain)
        job, task_key, job_tasks = self._task_keys(task)
        shard = self.shard(task.job_id)
        keys = _unique([shard.log(TASKS), job, task.lane, task_key, job_tasks, *spec_keys])
        encoded = [self.events.codec.compact(e) for e in staged.events]
        lengths = ",".join(str(len(e)) for e in encoded)
        return keys, [
            runner_id,
            task.entry,
            specs,
            b"".join(encoded),
            lengths,
        ]

    def _task_keys(self, task: ClaimedTask) -> tuple[str, str, str]:
        """The job hash, task hash and job task list of ``task``."""
        shard = self.shard(task.job_id)
        return shard.job(task.job_id), shard.task(task.task_id), shard.job_tasks(task.job_id)

    def _encode(self, events: Iterable[Event]) -> bytes:
        """Events encoded and concatenated: the scripts take a call's events as one argument."""
        return b"".join(map(self.events.codec.compact, events))

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
            pipe.hgetall(self.shard(job_id).job(job_id))
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
            pipe.lrange(self.shard(job_id).job_tasks(job_id), 0, -1)
        return [
            [*fields.get("roots", ()), *(_s(t) for t in listed)]
            for (_, fields), listed in zip(jobs, pipe.execute())
        ]

    @translate_errors
    def tasks(
        self, task_ids: Sequence[str], fields: Sequence[str], job_ids: Sequence[str] | str
    ) -> list[dict[str, str]]:
        """``fields`` of each task ("" where unset); the fields of its ``spec`` are read from it.
        ``job_ids``: the job of each task (or of all of them).

        A finished task's hash is compact (finish.lua's write_finished): its spec is version,
        cluster and name, a line each, its parent, max_retries and optional are fields of their
        own, and what only a running task needs is gone (its input, lane entry id, scopes: read
        as "")."""
        apart = [f for f in _KEPT_APART if f in fields]
        stored = [f for f in fields if f not in SPEC_FIELDS] + ["spec", *apart]
        jobs = [job_ids] * len(task_ids) if isinstance(job_ids, str) else job_ids
        prefixes = {job: self.task_key_prefix(job) for job in dict.fromkeys(jobs)}
        # Packed by hiredis and sent in one write per node: the driver's pipeline packs and
        # parses each command itself, a third of the client's CPU in reading a 10,000-task job
        # (measured 0.33 s -> 0.21 s), which is what the console's job page does.
        keys = [prefixes[job] + task for job, task in zip(jobs, task_ids)]
        replies = self._raw_many([(k, pack("HMGET", k, *stored)) for k in keys])
        rows = []
        for task_id, job_id, values in zip(task_ids, jobs, replies):
            row = {f: _s(v) if v is not None else "" for f, v in zip(stored, values)}
            spec = row.pop("spec")
            if spec.startswith("{"):  # a running task's (or an unfinished one's)
                row.update(msgspec.json.decode(spec))
            elif spec:
                row["version"], row["cluster"], row["name"] = spec.split("\n", 2)
                row["id"], row["job"] = task_id, job_id
                if "lane" in fields:
                    row["lane"] = self.lane(row["cluster"], row["name"], row["version"], job_id)
            rows.append({f: row.get(f, "") for f in fields})
        return rows

    @translate_errors
    def job_ids(self, since_ms: float = float("-inf"), until_ms: float = float("inf"),
                limit: int = 1000) -> list[str]:  # fmt: skip
        """The newest ``limit`` job ids submitted between the times, newest first (merged over
        the shards' indexes)."""
        shards = self.shards
        if len(shards) == 1:
            ids: list[bytes] = self.redis.zrevrangebyscore(  # type: ignore[assignment]
                shards[0].jobs, until_ms, since_ms, start=0, num=limit
            )
            return [_s(i) for i in ids]
        pipe = self.redis.pipeline(transaction=False)
        for shard in shards:
            pipe.zrevrangebyscore(shard.jobs, until_ms, since_ms, start=0, num=limit,
                                  withscores=True)  # fmt: skip
        # each newest first, equal times by id descending, as one index would give them
        newest = heapq.merge(*pipe.execute(), key=lambda pair: (pair[1], pair[0]), reverse=True)
        return [_s(job_id) for job_id, _ in list(newest)[:limit]]

    @translate_errors
    def retry(self, job_id: str, tasks: Sequence[tuple[str, str]], event: Event) -> tuple[int, int]:
        """Re-queue the failed ones of ``tasks`` (task id, lane), then, once the job has no failed
        task, queue again the held ones (see retry.lua); (re-queued, queued again)."""
        shard = self.shard(job_id)
        keys = [shard.log(TASKS), shard.job(job_id)]
        for task_id, lane in tasks:
            keys += (shard.task(task_id), lane)
        requeued, resumed = self._run("retry", keys, [self.events.codec.compact(event)])
        return int(requeued), int(resumed)

    @translate_errors
    def cancel(self, job_id: str, unfinished: Sequence[tuple[str, str]], event: Event) -> bool:
        """Cancel a job and drop its ``unfinished`` tasks (task id, lane); False if the job was
        cancelled already (then only the tasks are dropped, and ``event`` is not appended)."""
        shard = self.shard(job_id)
        keys = [shard.log(TASKS), shard.job(job_id)]
        for task_id, lane in unfinished:
            keys += (shard.task(task_id), lane)
        return bool(self._run("cancel", keys, [self.events.codec.compact(event)]))

    # --- retention --------------------------------------------------------------------------------

    @translate_errors
    def due(self, shard: TaskKeys, now_ms: int, limit: int) -> list[str]:
        """Up to ``limit`` ids of the shard's jobs due for removal at ``now_ms``, soonest first."""
        found: list[bytes] = self.redis.zrangebyscore(  # type: ignore[assignment]
            shard.expiring, "-inf", now_ms, 0, limit
        )
        return [_s(i) for i in found]

    @translate_errors
    def removals(self, job_ids: Sequence[str]) -> list[Removal | None]:
        """What removing each of ``job_ids`` names, in one round trip (None: no such job): how
        many ids its task list holds, its task ids and whether it is settled. (Read by a script,
        the server's time doubled: Lua's conversions of each reply cost more than the reads.)"""
        commands: list[tuple[str, bytes]] = []
        for job_id in job_ids:
            shard = self.shard(job_id)
            job, listed = shard.job(job_id), shard.job_tasks(job_id)
            commands += (
                (job, pack("HMGET", job, "info", "cancelled", "open")),
                (listed, pack("LRANGE", listed, 0, -1)),
            )
        replies = self._raw_many(commands)
        found: list[Removal | None] = []
        for job_id, (info, gate, open_), listed in zip(job_ids, replies[::2], replies[1::2]):
            if info is None:
                found.append(None)
                continue
            roots = _ROOTS.decode(info).roots
            task_ids = list(dict.fromkeys([*roots, *(_s(t) for t in listed)]))
            found.append(Removal(job_id, len(listed), task_ids, gate is None and open_ == b"0"))
        return found

    @translate_errors
    def remove_jobs(
        self, job_id: str, jobs: Sequence[tuple[Removal, Sequence[str]]], reason: str,
        now_ms: int, event: Event,
    ) -> list[str]:  # fmt: skip
        """Remove jobs of the shard of ``job_id``, each wholly, recording ``event`` (see
        remove.lua): ``jobs`` of (what removing it names, the lanes of its queued tasks). The
        status of each; nothing was removed unless all are "ok"."""
        shard = self.shard(job_id)
        keys = [shard.log(TASKS), shard.jobs, shard.expiring]
        tasks_prefix = shard.task("")
        described: list[Any] = []
        lanes: list[str] = []
        for removal, queued_lanes in jobs:
            removed_id = removal.job_id
            keys.append(shard.job(removed_id))
            if removal.listed or not removal.settled:  # (an empty list is no key)
                keys.append(shard.job_tasks(removed_id))
            keys.append(shard.job_logs(removed_id))
            keys += [tasks_prefix + t for t in removal.task_ids]
            lanes += queued_lanes
            described += (removed_id, removal.listed, len(removal.task_ids),
                          int(removal.settled))  # fmt: skip
        args = [reason, now_ms, self.events.codec.compact(event), _json.encode(described)]
        # (the lanes after every job's keys, each once: the script reads the jobs' by position)
        return [_s(s) for s in self._run("remove", [*keys, *_unique(lanes)], args)]


class Removal(NamedTuple):
    """What removing a job names (TaskStore.removals): how many ids its task list held when
    read (the script checks none was added since), its task ids (roots first), and whether it
    was settled (completed: no task open, the gate never closed), so has no queued task."""

    job_id: str
    listed: int
    task_ids: list[str]
    settled: bool


class _Roots(msgspec.Struct):
    roots: list[str] = []  # (jobs submitted before descriptions named them: in the task list)


_ROOTS = msgspec.json.Decoder(_Roots)


def _details(finish: Finish) -> bytes:
    """What a finish records besides its outcome, as finish.lua reads it: '' for nothing (most
    tasks: no JSON to decode), else JSON with "p" the progress deltas, "d" the display name and
    "e" the error (TaskError), "s" the optional task whose subtree a FAILED_NESTED result skips,
    "r" its max_retries and "o" "1" for an optional task, each left out when there is none."""
    task = finish.task
    if not (finish.progress or finish.display or finish.error or finish.skips
            or task.max_retries or task.optional):  # fmt: skip
        return b""
    details: dict[str, Any] = {}
    if task.max_retries:  # kept on the finished task (write_finished), as its spec had them
        details["r"] = str(task.max_retries)
    if task.optional:
        details["o"] = "1"
    if finish.progress:
        details["p"] = finish.progress
    if finish.display:
        details["d"] = finish.display
    if finish.error is not None:
        details["e"] = finish.error
    if finish.skips:
        details["s"] = finish.skips
    return _json.encode(details)


def chain_keys(chain: str | list[dict[str, Any]]) -> list[str]:
    """Every key a task chain names: the tasks, their dependants and the dependants' lanes."""
    nodes = msgspec.json.decode(chain) if isinstance(chain, str) else chain
    keys: list[str] = []
    for node in nodes:
        keys.append(node["k"])
        for dependant_key, dependant_lane in node["d"]:
            keys += (dependant_key, dependant_lane)
    return keys


def _xreadgroup(runner_id: str, lanes: Sequence[str], count: int, block_ms: int) -> tuple[Any, ...]:
    """XREADGROUP of new entries in ``lanes`` for ``runner_id``; ``block_ms`` -1: not blocking."""
    block = ("BLOCK", block_ms) if block_ms >= 0 else ()
    return ("XREADGROUP", "GROUP", GROUP, runner_id, "COUNT", count, *block,
            "STREAMS", *lanes, *(">" for _ in lanes))  # fmt: skip


def _sender(packed: list[bytes]) -> Callable[[Connection], list[Any]]:
    """A ``Routes.call`` sender of the commands ``packed``, in one write; their replies."""

    def send(connection: Connection) -> list[Any]:
        connection.send_packed_command([b"".join(packed)])  # (one sendall, not one each)
        return [connection.read_response() for _ in packed]

    return send


def _answered(connections: list[Connection], timeout: float) -> set[Connection]:
    """The connections with a reply to read: those whose reply arrived with an earlier one
    (buffered by the parser), else those that answer within ``timeout`` seconds, then any
    others that did meanwhile."""
    ready = {c for c in connections if c.can_read(timeout=0)}
    if ready:
        return ready
    sockets: dict[Any, Connection] = {c._sock: c for c in connections if c._sock is not None}
    readable, _, _ = select.select(list(sockets), [], [], timeout)  # (the driver's own sockets)
    if not readable:
        return set()
    return {sockets[s] for s in readable} | {c for c in connections if c.can_read(timeout=0)}


def _numbered(chunks: Iterable[Sequence[NewJob]]) -> Iterator[list[tuple[int, NewJob]]]:
    """Each chunk's jobs with their index among all the chunks' jobs."""
    count = 0
    for chunk in chunks:
        yield list(enumerate(chunk, count))
        count += len(chunk)


def _unique(keys: list[str]) -> list[str]:
    return list(dict.fromkeys(keys))


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
