"""``TaskRunner``: claims tasks from the lanes of one cluster and executes them.

Each worker thread loops: take over expired leases or read new entries (one blocking XREADGROUP
over every lane the registered tasks can serve), record the claims, execute, and hand the results
to the recorder thread, which finishes them (fenced, atomic) while the worker goes on with the next
batch. A heartbeat thread renews the leases of in-flight entries, so a long CPU-bound task keeps
its lease; a runner that dies stops renewing and any other runner takes its tasks over.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import itertools
import os
import queue
import random
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypedDict

import msgspec
import structlog

from tilebox_core.domain.errors import StoreUnavailable, TileboxError
from tilebox_core.domain.events import (
    Event,
    TaskClaimed,
    TaskCompleted,
    TaskFailed,
    TaskLeaseExpired,
    TaskReleased,
)
from tilebox_core.domain.identifiers import TaskIdentifier, parse_version
from tilebox_core.jobs import submitted_event, task_spec
from tilebox_core.redis.taskstore import STAGE_CHUNK, ClaimedTask, Delivery, TaskStore
from tilebox_core.session import Session
from tilebox_core.task import CurrentTask, Task

from .context import TaskContext
from .registry import Runner

log = structlog.get_logger(__name__)

DEFAULT_LEASE = 30.0
MAX_DELIVERIES = 5  # a task delivered more often than this without finishing is poison
FLUSH_SECONDS = 0.05
# Tasks expected to take longer have their claims recorded (the task shows running) before they
# run; faster ones with their results, at most about FLUSH_SECONDS later.
CLAIM_AHEAD_SECONDS = 0.005
IDLE_CHECK_MS = 50  # run_all: how long a read blocks before it looks whether anything is left
LOST, SUPERSEDED = 0, 2  # finish statuses besides 1, finished (see TaskStore.finish_many)
ATTEMPTS, DRAIN_ATTEMPTS = 60, 6  # store retries with backoff capped at 5 s: ~4.5 min / ~1.5 s


class _TaskOf(TypedDict):
    """The fields that name a task and who ran it, shared by its result events."""

    job_id: str
    task_id: str
    runner_id: str
    release_id: str | None


def new_runner_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class TaskRunner:
    """Executes the tasks of ``tasks`` submitted to ``cluster``; see ``run_all``/``run_forever``.

    ``concurrency`` worker threads each claim up to ``prefetch`` tasks at once: as many as take
    about FLUSH_SECONDS to run, judged by the tasks run so far, so no-op tasks go 64 to a round
    trip and slow ones one at a time.
    """

    def __init__(
        self,
        client: Session,
        cluster: str | None = None,
        tasks: Runner | Iterable[type[Task]] = (),
        *,
        concurrency: int = 1,
        prefetch: int = 64,
        lease_seconds: float = DEFAULT_LEASE,
        max_deliveries: int = MAX_DELIVERIES,
        block_ms: int = 500,
        runner_id: str | None = None,
        release_id: str | None = None,
        cache_root: Path | None = None,
    ) -> None:
        if concurrency < 1 or prefetch < 1:
            raise TileboxError("concurrency and prefetch must be at least 1")
        self.client = client
        self.cluster = cluster or client.settings.cluster
        self.registry = tasks if isinstance(tasks, Runner) else Runner(tasks)
        self.store: TaskStore = client.tasks
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.lease_ms = int(lease_seconds * 1000)
        self.max_deliveries = max_deliveries
        self.block_ms = block_ms
        self._block_ms = block_ms  # of each read in this run (see _run)
        self.id = runner_id or new_runner_id()
        self.release_id = release_id
        self.cache_root = cache_root or client.settings.home / "cache" / "jobs"
        self._classes = _classes_by_major(self.registry.identifiers(), self.registry.tasks)
        self.lanes = serving_lanes(self.store, self.cluster, self.registry.identifiers())
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: dict[str, ClaimedTask] = {}  # entry id -> task
        self._recording: set[str] = set()  # entries whose finish call is under way
        # Tasks whose claims are to be recorded with their results: entry id -> (task, when it
        # started running (None before), its TaskClaimed, stamped when it was received). One running longer than FLUSH_SECONDS has its claim
        # recorded by the heartbeat thread, holding _claiming meanwhile (see _claim_overdue).
        self._unclaimed: dict[str, tuple[ClaimedTask, float | None, TaskClaimed]] = {}
        self._claiming = threading.Lock()
        self._idle: set[int] = set()  # worker threads that found nothing to do
        self._done = threading.Event()  # set when the run is over; ends the heartbeat
        self._next_reclaim = 0.0
        self._task_seconds: float | None = None  # moving average of one task's execution
        # Results on their way to the store (see _record); two batches at most, then the workers
        # wait: a runner never gets far ahead of what it has recorded.
        self._results: queue.Queue[list[dict[str, Any]] | None] = queue.Queue(maxsize=2)
        self.log = log.bind(runner_id=self.id, cluster=self.cluster)

    # --- lifecycle --------------------------------------------------------------------------------

    def run_all(self) -> None:
        """Run until nothing this runner can serve is queued or in flight anywhere."""
        self._run(until_idle=True)

    def run_forever(self) -> None:
        """Run until ``stop()`` or SIGTERM/SIGINT; in-flight tasks finish first."""
        self._run(until_idle=False)

    def stop(self) -> None:
        self._stopping.set()

    def __enter__(self) -> TaskRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, until_idle: bool) -> None:
        if not self.lanes:
            raise TileboxError("this runner has no tasks to serve")
        # A stop requested before the run began (a signal, an orphaned runtime) is honoured:
        # the flag is cleared when a run ends, not when one starts.
        self._done.clear()
        # run_all looks for what is left each time a read comes back empty: it returns within
        # about IDLE_CHECK_MS of the last result instead of a whole block_ms later.
        self._block_ms = min(self.block_ms, IDLE_CHECK_MS) if until_idle else self.block_ms
        restore = install_signal_handlers(self.stop)
        self._with_backoff(lambda: self.store.ensure_lanes(self.lanes))
        heartbeat = threading.Thread(target=self._heartbeat, name="tilebox-heartbeat", daemon=True)
        heartbeat.start()
        recorder = threading.Thread(target=self._record, name="tilebox-recorder", daemon=True)
        recorder.start()
        self.log.info("runner started", lanes=len(self.lanes), concurrency=self.concurrency)
        try:
            workers = [
                threading.Thread(target=self._work, args=(until_idle,), name=f"tilebox-worker-{i}")
                for i in range(1, self.concurrency)
            ]
            for worker in workers:
                worker.start()
            self._work(until_idle)
            for worker in workers:
                worker.join()
        finally:
            self._results.put(None)  # after every result handed over: they are all recorded
            recorder.join()
            self._stopping.set()
            self._done.set()
            heartbeat.join(5)
            restore()
            self._stopping.clear()
            self.log.info("runner stopped")

    # --- the worker loop ----------------------------------------------------------------------------

    def _work(self, until_idle: bool) -> None:
        failures = 0
        # While fast tasks run, the next batch is already asked for: otherwise the read waits
        # behind the server's recording of this batch, and the worker idles while it does.
        ahead: Callable[[], list[Delivery]] | None = None
        try:
            while not self._stopping.is_set():
                try:
                    if ahead is not None:
                        receive, ahead = ahead, None
                        deliveries = receive()
                    else:
                        deliveries = self._next_deliveries()
                    if deliveries:
                        self._set_idle(False)
                        if self._defer_claims():
                            ahead = self._read_ahead()
                        self._handle(deliveries)
                    elif until_idle and self._finished():
                        return
                    failures = 0
                except StoreUnavailable as exc:
                    failures += 1
                    delay = min(5.0, 0.05 * 2**failures) * random.uniform(0.5, 1.0)
                    self.log.warning(
                        "store unavailable, retrying", error=str(exc), delay=round(delay, 2)
                    )
                    self._stopping.wait(delay)
        finally:
            if ahead is not None:  # what was read ahead and not run is handed back
                with contextlib.suppress(StoreUnavailable):
                    calls = [self._release(d.task) for d in ahead()]
                    if calls:
                        self._hand_over(calls, set())

    def _read_ahead(self) -> Callable[[], list[Delivery]]:
        """The next deliveries, asked for now and received when the function returned is called."""
        if time.monotonic() >= self._next_reclaim:
            taken = self._next_deliveries()  # expired leases first; rare, so not ahead
            return lambda: taken
        return self.store.read_begin(self.id, self.lanes, self._batch_size(), self._block_ms)

    def _next_deliveries(self) -> list[Delivery]:
        now = time.monotonic()
        if now >= self._next_reclaim:
            self._next_reclaim = now + self.lease_ms / 2000
            expired = self.store.expired(self.lanes, self.lease_ms, self._batch_size())
            taken = self.store.take_over(self.id, expired, self.lease_ms) if expired else []
            if taken:
                return taken
        return self.store.read(self.id, self.lanes, self._batch_size(), self._block_ms)

    def _batch_size(self) -> int:
        """How many tasks to claim at once: about FLUSH_SECONDS of work, at most ``prefetch``.

        Fast tasks are claimed (and recorded) many per round trip; slow ones one at a time, so
        that a claimed task never waits behind others here while another runner is idle.
        """
        seconds = self._task_seconds
        if seconds is None:
            return 1  # nothing known yet: the first task tells
        return max(1, min(self.prefetch, int(FLUSH_SECONDS / max(seconds, 1e-6))))

    def _observe(self, seconds: float) -> None:
        previous = self._task_seconds
        # weighted to the recent: after one slow task, a few fast ones restore large batches
        self._task_seconds = seconds if previous is None else (previous + seconds) / 2

    def _finished(self) -> bool:
        """True when every worker found nothing and no lane of ours holds an entry."""
        self._set_idle(True)
        with self._lock:
            if self._in_flight or len(self._idle) < self.concurrency:
                return False
        waiting, pending = self.store.lane_backlog(self.lanes)
        if waiting or pending:
            return False
        self._stopping.set()  # wake and stop the other workers too
        return True

    def _set_idle(self, idle: bool) -> None:
        with self._lock:
            if idle:
                self._idle.add(threading.get_ident())
            else:
                self._idle.discard(threading.get_ident())

    def _handle(self, deliveries: list[Delivery]) -> None:
        # Fast tasks have their claims recorded with their results, one script call per batch
        # instead of two: the lease is the lane entry's, held since XREADGROUP delivered it.
        deferred = self._defer_claims() and all(d.previous_owner is None for d in deliveries)
        tasks = [d.task for d in deliveries] if deferred else self._claim(deliveries)
        # stamped now, when they were received, however much later they are recorded
        claims = self._claimed_events(tasks) if deferred else {}
        with self._lock:
            self._in_flight.update((t.entry, t) for t in tasks)
            if deferred:
                self._unclaimed.update((t.entry, (t, None, claims[t.entry])) for t in tasks)
        pending = collections.deque(tasks)
        calls: list[dict[str, Any]] = []
        handed: set[str] = set()  # entries of the tasks whose results the recorder has
        since = began = time.monotonic()
        try:
            while pending:
                task = pending.popleft()
                if deferred and time.monotonic() - began >= FLUSH_SECONDS:
                    # Slower than they looked: the rest have their claims recorded before they run.
                    deferred = False
                    rest = [task, *pending]
                    with self._lock:
                        for t in rest:
                            self._unclaimed.pop(t.entry, None)
                    kept = {t.entry for t in self._claim([Delivery(t) for t in rest], claims)}
                    self._forget(t for t in rest if t.entry not in kept)
                    pending = collections.deque(t for t in pending if t.entry in kept)
                    if task.entry not in kept:
                        continue
                # Draining: hand back what has not started rather than run it now.
                if self._stopping.is_set():
                    call = self._release(task)
                else:
                    if deferred:
                        with self._lock:
                            self._unclaimed[task.entry] = (
                                task,
                                time.monotonic(),
                                claims[task.entry],
                            )
                    started = time.perf_counter()
                    call = self._execute(task)
                    self._observe(time.perf_counter() - started)
                if deferred and not self._claimed_meanwhile(task):
                    if len(call.get("subtasks", ())) > STAGE_CHUNK:
                        self._claim([Delivery(task)], claims)  # before its subtasks are staged
                    else:
                        call.update(claimed=False, events=[claims[task.entry], *call["events"]])
                calls.append(call)
                # Fast tasks are recorded in batches; a batch is handed over once it is
                # FLUSH_SECONDS old, so a slow task's result (and its dependants) is not held back.
                if time.monotonic() - since >= FLUSH_SECONDS:
                    self._hand_over(calls, handed)
                    calls, since = [], time.monotonic()
            if calls:
                self._hand_over(calls, handed)
        finally:
            with self._lock:
                for t in tasks:
                    self._unclaimed.pop(t.entry, None)
            self._forget(t for t in tasks if t.entry not in handed)

    def _claimed_meanwhile(self, task: ClaimedTask) -> bool:
        """Whether the heartbeat thread recorded the claim of ``task`` while it ran (it ran long);
        if it is recording it now, waits: a claim is recorded before the result."""
        with self._lock:
            if self._unclaimed.pop(task.entry, None) is not None:
                return False
        with self._claiming:
            return True

    def _claim_overdue(self) -> None:
        """Record the claims of tasks running unclaimed for longer than FLUSH_SECONDS, so a task
        that turned out slow shows as running (with its runner and release) while it runs."""
        with self._claiming:
            now = time.monotonic()
            with self._lock:
                overdue = {
                    task.entry: (task, started, claim)
                    for task, started, claim in self._unclaimed.values()
                    if started is not None and now - started >= FLUSH_SECONDS
                }  # fmt: skip
                for entry in overdue:
                    del self._unclaimed[entry]
            if not overdue:
                return
            try:  # stamped when they were received, as their results would have recorded them
                self._claim(
                    [Delivery(task) for task, _, _ in overdue.values()],
                    {entry: claim for entry, (_, _, claim) in overdue.items()},
                )
            except Exception as exc:
                self.log.warning("could not record claims", error=f"{type(exc).__name__}: {exc}")
                with self._lock:  # their results will record them
                    self._unclaimed.update(overdue)

    def _defer_claims(self) -> bool:
        """Whether tasks are fast enough to have their claims recorded with their results."""
        return self._task_seconds is not None and self._task_seconds < CLAIM_AHEAD_SECONDS

    def _hand_over(self, calls: list[dict[str, Any]], handed: set[str]) -> None:
        self._results.put(calls)
        handed.update(call["task"].entry for call in calls)

    def _forget(self, tasks: Iterable[ClaimedTask]) -> None:
        """No longer in flight here: their leases are not renewed, and expire."""
        with self._lock:
            for task in tasks:
                self._in_flight.pop(task.entry, None)

    def _record(self) -> None:
        """Record finished tasks, a batch per call, in a thread of its own: the server stores one
        batch while the workers claim and execute the next (the GIL is free while it waits)."""
        while (calls := self._results.get()) is not None:
            self._record_batch(calls, between=self._record_waiting)

    def _record_waiting(self) -> None:
        """Between two chunks of a large fan-out (see TaskStore.stage): record the batches handed
        over meanwhile, so their tasks' results and dependants do not wait for the last chunk."""
        while True:
            try:
                calls = self._results.get_nowait()
            except queue.Empty:
                return
            if calls is None:  # the run is over: the main loop ends once the fan-out is recorded
                self._results.put(None)
                return
            self._record_batch(calls)

    def _record_batch(
        self, calls: list[dict[str, Any]], between: Callable[[], None] | None = None
    ) -> None:
        statuses: list[int] = []
        entries = {call["task"].entry for call in calls}
        with self._lock:
            self._recording |= entries
        try:
            statuses = self._with_backoff(
                lambda: self.store.finish_many(self.id, self.release_id, calls, between)
            )
        except StoreUnavailable as exc:
            # Not lost: the leases expire and the tasks run again (delivery is at-least-once).
            self.log.error("could not record finished tasks", error=str(exc), tasks=len(calls))
        except Exception:  # the recorder must outlive a bad batch, or the workers would block
            self.log.exception("could not record finished tasks", tasks=len(calls))
        with self._lock:  # at once: the heartbeat must not see them in flight but not recording
            self._recording -= entries
            for entry in entries:
                self._in_flight.pop(entry, None)
        for call, status in zip(calls, statuses):
            if status == LOST:
                self.log.warning("lease lost; another runner owns the task now",
                                 task_id=call["task"].task_id)  # fmt: skip
            elif status == SUPERSEDED:
                self.log.info("result dropped: the task was cancelled or requeued while it ran",
                              task_id=call["task"].task_id)  # fmt: skip

    def _claimed_events(self, tasks: Sequence[ClaimedTask]) -> dict[str, TaskClaimed]:
        """Entry id -> TaskClaimed of each of ``tasks``, claimed now."""
        origin = self.client.origin()
        return {
            t.entry: TaskClaimed(**origin.stamp(), job_id=t.job_id, task_id=t.task_id,
                                 runner_id=self.id, release_id=self.release_id)
            for t in tasks
        }  # fmt: skip

    def _claim(
        self, deliveries: list[Delivery], stamped: dict[str, TaskClaimed] | None = None
    ) -> list[ClaimedTask]:
        """Record the claims of ``deliveries`` before their tasks run; the tasks to run.
        ``stamped``: TaskClaimed events made when tasks were received (by entry), else made now."""
        origin = self.client.origin()
        claims = stamped or {}
        if any(d.task.entry not in claims for d in deliveries):
            claims = {**self._claimed_events([d.task for d in deliveries]), **claims}
        events = []
        for d in deliveries:
            task = d.task
            expired = b""
            if d.previous_owner is not None:
                expired = self._encode(TaskLeaseExpired(
                    **origin.stamp(), job_id=task.job_id, task_id=task.task_id,
                    previous_runner_id=d.previous_owner, runner_id=self.id, deliveries=d.deliveries,
                ))  # fmt: skip
            poisoned = b""  # the claim script fails the task as poison only past max_deliveries
            if d.deliveries > self.max_deliveries:
                poisoned = self._encode(TaskFailed(
                    **origin.stamp(), job_id=task.job_id, task_id=task.task_id, runner_id=self.id,
                    release_id=self.release_id, reason="poison",
                    error=f"delivered {d.deliveries} times without finishing (it may crash its runner)",
                ))  # fmt: skip
            events.append((self._encode(claims[task.entry]), expired, poisoned))
        statuses = self.store.claim(
            self.id, self.release_id, self.max_deliveries, deliveries, events
        )
        claimed = []
        for d, status in zip(deliveries, statuses):
            if status == "ok":
                claimed.append(d.task)
            elif status == "poisoned":
                self.log.error(
                    "poison task failed", task_id=d.task.task_id, deliveries=d.deliveries
                )
        return claimed

    # --- executing --------------------------------------------------------------------------------

    def _execute(self, claimed: ClaimedTask) -> dict[str, Any]:
        common: _TaskOf = {"job_id": claimed.job_id, "task_id": claimed.task_id,
                           "runner_id": self.id, "release_id": self.release_id}  # fmt: skip
        task_class = self._classes.get((claimed.name, parse_version(claimed.version)[0]))
        if task_class is None:  # cannot happen with lane routing; fail loudly rather than loop
            return self._failed(claimed, common, "no task class for this identifier", "error")
        try:
            task = msgspec.json.decode(claimed.input, type=task_class)
        except msgspec.MsgspecError as exc:
            return self._failed(claimed, common, f"cannot decode task input: {exc}", "input")
        context = TaskContext(
            CurrentTask(claimed.task_id, claimed.job_id, claimed.name, claimed.version,
                        claimed.attempts + 1),
            self.cache_root, self.id,
        )  # fmt: skip
        started = time.perf_counter()
        try:
            task.execute(context)
            subtasks = [
                task_spec(
                    r.handle.task,
                    r.handle.id,
                    r.cluster or claimed.cluster,
                    parent_id=claimed.task_id,
                    depends_on=r.depends_on,
                    max_retries=claimed.max_retries if r.max_retries is None else r.max_retries,
                    optional=r.optional,
                )
                for r in context.subtasks
            ]
        except Exception as exc:
            seconds = time.perf_counter() - started
            context.logger.warning("task failed", error=f"{type(exc).__name__}: {exc}")
            detail = "".join(traceback.format_exception_only(exc)).strip()
            return self._failed(claimed, common, detail, "error", seconds)
        seconds = time.perf_counter() - started
        origin = self.client.origin()  # stamped when it finished
        progress = context.progress_deltas()
        events: list[Event] = [
            TaskCompleted(**origin.stamp(), **common, compute_seconds=round(seconds, 6),
                          subtask_ids=[s.id for s in subtasks], progress=progress),
            *(submitted_event(origin.stamp(), claimed.job_id, s) for s in subtasks),
        ]  # fmt: skip
        return {"task": claimed, "outcome": "completed", "events": events,
                "compute_ms": int(seconds * 1000), "progress": progress, "subtasks": subtasks}  # fmt: skip

    def _failed(
        self, claimed: ClaimedTask, common: _TaskOf, error: str, reason: str,
        seconds: float = 0.0,
    ) -> dict[str, Any]:  # fmt: skip
        origin = self.client.origin()  # stamped when it failed
        # Bad input fails the same way every time: retrying it only burns attempts.
        will_retry = reason == "error" and claimed.attempts < claimed.max_retries
        outcome = "retry" if will_retry else "failed_optional" if claimed.optional else "failed"
        event = TaskFailed(**origin.stamp(), **common, error=error[:4000], will_retry=will_retry,
                           reason=reason, compute_seconds=round(seconds, 6))  # fmt: skip
        return {"task": claimed, "outcome": outcome, "events": [event],
                "compute_ms": int(seconds * 1000)}  # fmt: skip

    def _release(self, claimed: ClaimedTask) -> dict[str, Any]:
        event = TaskReleased(**self.client.origin().stamp(), job_id=claimed.job_id,
                             task_id=claimed.task_id, runner_id=self.id)  # fmt: skip
        return {"task": claimed, "outcome": "released", "events": [event]}

    def _encode(self, event: Event) -> bytes:
        return self.store.events.codec.encode(event)

    # --- leases -----------------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        """Renews the leases of in-flight entries, every third of a lease; and records the claims
        of tasks that run longer than they looked (every FLUSH_SECONDS)."""
        interval = self.lease_ms / 3000
        renew_at = time.monotonic() + interval
        while not self._done.wait(min(FLUSH_SECONDS, interval)):
            self._claim_overdue()
            if time.monotonic() < renew_at:
                continue
            renew_at = time.monotonic() + interval
            with self._lock:
                by_lane: dict[str, list[str]] = {}
                for entry, task in self._in_flight.items():
                    by_lane.setdefault(task.lane, []).append(entry)
            if not by_lane:
                continue
            try:
                renewed = self.store.renew(self.id, by_lane)
            except StoreUnavailable as exc:
                self.log.warning("lease renewal failed", error=str(exc))
                continue
            lost = {e for entries in by_lane.values() for e in entries} - renewed
            if lost:
                with self._lock:  # entries finished since the snapshot (or finishing) were not lost
                    lost &= self._in_flight.keys() - self._recording
            if lost:
                self.log.warning("leases lost", entries=sorted(lost))

    def _with_backoff(self, call: Callable[[], Any]) -> Any:
        """Retry ``call`` while the store is unavailable: minutes normally, seconds when draining
        (an unrecorded result is not lost: the lease expires and the task runs again)."""
        for attempt in itertools.count():
            try:
                return call()
            except StoreUnavailable as exc:
                if attempt >= (DRAIN_ATTEMPTS if self._stopping.is_set() else ATTEMPTS):
                    raise
                delay = min(5.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0)
                self.log.warning(
                    "store unavailable, retrying", error=str(exc), delay=round(delay, 2)
                )
                time.sleep(delay)
        raise AssertionError("unreachable")


def freeze_heap() -> None:
    """For a process that exists to run tasks (a release's runtime): collect once, then keep every
    object alive now (modules, the task classes, the client) out of later collections, so that a
    task allocating much (a fan-out of 100,000 subtasks) does not make each full collection walk
    them again (about a third of such a task's time). Not done for ``client.runner``: a user's own
    process is theirs to tune."""
    gc.collect()
    gc.freeze()


def serving_lanes(
    store: TaskStore, cluster: str, identifiers: Sequence[TaskIdentifier]
) -> list[str]:
    """Every lane a runner providing ``identifiers`` may read: vX.Y serves vX.0 ... vX.Y."""
    lanes = []
    for identifier in identifiers:
        major, minor = parse_version(identifier.version)
        lanes += [store.keys.lane(cluster, identifier.name, major, m) for m in range(minor + 1)]
    return list(dict.fromkeys(lanes))


def _classes_by_major(
    identifiers: Sequence[TaskIdentifier], classes: dict[TaskIdentifier, type[Task]]
) -> dict[tuple[str, int], type[Task]]:
    """(name, major) -> the class with the highest minor: it runs every older minor of that major."""
    result: dict[tuple[str, int], type[Task]] = {}
    for identifier in sorted(identifiers, key=lambda i: parse_version(i.version)):
        result[(identifier.name, parse_version(identifier.version)[0])] = classes[identifier]
    return result


def install_signal_handlers(stop: Callable[[], None]) -> Callable[[], None]:
    """SIGTERM/SIGINT stop claiming and drain (main thread only); returns a restore function."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum: int, frame: object) -> None:
        log.info("signal received, draining", signal=signal.Signals(signum).name)
        stop()

    for sig in previous:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
