"""``TaskRunner``: claims tasks from the lanes of one cluster and executes them.

Each worker thread loops: take over expired leases or read new entries (one blocking XREADGROUP
over every lane the registered tasks can serve), record the claims, execute, and hand the results
to the recorder thread, which finishes them (fenced, atomic) while the worker goes on with the next
batch. A heartbeat thread renews the leases of in-flight entries, so a long CPU-bound task keeps
its lease; a runner that dies stops renewing and any other runner takes its tasks over.

What the runner decides about a task (retry, poison, optional) is decided here, by the rules of
``domain.tasks``; the task scripts do the atomic work. A store that is unavailable is waited for
(``retries``); any other error in any of the runner's threads stops the runner, and ``run_all`` /
``run_forever`` (or leaving a ``with`` block) raise it once the other threads are done.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import inspect
import os
import queue
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypedDict, TypeVar

import msgspec
import structlog

from tilebox_core.cache import JobCache, LocalFileSystemCache
from tilebox_core.domain.errors import StoreUnavailable, TileboxError
from tilebox_core.domain.events import (
    Event,
    Origin,
    TaskClaimed,
    TaskCompleted,
    TaskFailed,
    TaskLeaseExpired,
    TaskReleased,
    TaskSkipped,
)
from tilebox_core.domain.identifiers import TaskIdentifier, parse_version
from tilebox_core.domain.tasks import (
    MAX_ERROR_MESSAGE,
    Claim,
    ClaimedTask,
    ClaimStatus,
    Delivery,
    FailureReason,
    Finish,
    FinishStatus,
    Outcome,
    TaskError,
    bounded_display,
    failure_outcome,
    is_poison,
    nearest_scope,
    submitted_event,
    subtask_scopes,
)
from tilebox_core.jobs import task_spec
from tilebox_core.redis.tasklogs import TaskLogStore
from tilebox_core.redis.taskstore import STAGE_CHUNK, TaskStore
from tilebox_core.retries import delay, retrying
from tilebox_core.session import Session
from tilebox_core.task import CurrentTask, RunnerContext, Task, decode_input

from .aio import EventLoop, not_runnable
from .context import TaskContext
from .failure import task_error
from .hooks import RunnerHooks
from .observers import runner_hooks
from .registry import Runner
from .tasklogs import TaskLogs

log = structlog.get_logger(__name__)

T = TypeVar("T")

DEFAULT_LEASE = 30.0
MAX_DELIVERIES = 5  # a task delivered more often than this without finishing is poison
FLUSH_SECONDS = 0.05
# Tasks expected to take longer have their claims recorded (the task shows running) before they
# run; faster ones with their results, at most about FLUSH_SECONDS later.
CLAIM_AHEAD_SECONDS = 0.005
IDLE_CHECK_MS = 50  # run_all: how long a read blocks before it looks whether anything is left
# Waiting for an unavailable store: jittered exponential backoff from 50 ms, capped at 5 s (see
# retries.py); a result is recorded within up to ATTEMPTS retries (~4.5 min at most, about half
# that on average), DRAIN_ATTEMPTS when draining (~1.5 s at most).
BACKOFF_BASE, BACKOFF_CAP = 0.05, 5.0
ATTEMPTS, DRAIN_ATTEMPTS = 60, 6


class _TaskOf(TypedDict):
    """The fields that name a task and who ran it, shared by its result events."""

    job_id: str
    task_id: str
    runner_id: str
    release_id: str | None


def new_runner_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class TaskRunner:
    """Executes the tasks of ``tasks`` submitted to ``cluster``: ``run_all`` until nothing is left,
    ``run_forever`` until stopped, or in the background inside ``with runner:``.

    ``concurrency`` worker threads each claim up to ``prefetch`` tasks at once: as many as take
    about FLUSH_SECONDS to run, judged by the tasks run so far, so no-op tasks go 64 to a round
    trip and slow ones one at a time.

    ``cache`` is the job cache its tasks share (default: the ``Runner``'s, else a local one under
    ``cache_root``, by default ``TILEBOX_HOME/cache/jobs``); ``context``, the ``RunnerContext``
    class of which it makes the one instance its tasks see (default: the ``Runner``'s).
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
        cache: JobCache | None = None,
        cache_root: Path | None = None,
        context: type[RunnerContext] | None = None,
        hooks: RunnerHooks | None = None,
    ) -> None:
        if concurrency < 1 or prefetch < 1:
            raise TileboxError("concurrency and prefetch must be at least 1")
        if cache is not None and cache_root is not None:
            raise TileboxError("pass a cache or a cache_root, not both")
        self.client = client
        self.cluster = cluster or client.settings.cluster
        self.registry = tasks if isinstance(tasks, Runner) else Runner(tasks)
        if cache is None and cache_root is not None:
            cache = LocalFileSystemCache(cache_root)
        if cache is None:
            cache = self.registry.cache
        self.cache: JobCache = (
            cache if cache is not None
            else LocalFileSystemCache(client.settings.home / "cache" / "jobs")
        )  # fmt: skip
        self.runner_context = (context or self.registry.context or RunnerContext)()
        self.store: TaskStore = client.tasks
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.lease_ms = int(lease_seconds * 1000)
        self.max_deliveries = max_deliveries
        self.block_ms = block_ms
        self._block_ms = block_ms  # of each read in this run (see _serve)
        self.id = runner_id or new_runner_id()
        self.release_id = release_id
        self._classes = _classes_by_major(self.registry.identifiers(), self.registry.tasks)
        self.lanes = serving_lanes(self.store, self.cluster, self.registry.identifiers())
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._running = False  # a run is under way (one at a time)
        self._failure: BaseException | None = None  # what stopped this run (see _fail)
        self._background: threading.Thread | None = None  # the run of a ``with`` block
        self._background_failure: BaseException | None = None
        # Deliveries are named by ClaimedTask.key, (lane, entry id): entry ids repeat across lanes.
        self._in_flight: dict[tuple[str, str], ClaimedTask] = {}
        self._recording: set[tuple[str, str]] = set()  # deliveries whose finish is under way
        # Tasks whose claims are to be recorded with their results: entry id -> (task, when it
        # started running (None before), its TaskClaimed, stamped when it was received). One
        # running longer than FLUSH_SECONDS has its claim recorded by the heartbeat thread,
        # holding _claiming meanwhile (see _claim_overdue).
        self._unclaimed: dict[tuple[str, str], tuple[ClaimedTask, float | None, TaskClaimed]] = {}
        self._claiming = threading.Lock()
        self._idle: set[int] = set()  # worker threads that found nothing to do
        self._done = threading.Event()  # set when the run is over; ends the heartbeat
        self._next_reclaim = 0.0
        self._task_seconds: float | None = None  # moving average of one task's execution
        # Results on their way to the store (see _record); two batches at most, then the workers
        # wait: a runner never gets far ahead of what it has recorded.
        self._results: queue.Queue[list[Finish] | None] = queue.Queue(maxsize=2)
        self._loops = threading.local()  # each worker thread's EventLoop (coroutine tasks)
        self.log = log.bind(runner_id=self.id, cluster=self.cluster)
        # Observers of the work (metrics, tracing, task logs), called around executions only
        # where they wrap them: otherwise a task runs as if there were none.
        self.task_logs = TaskLogs(TaskLogStore(self.store))  # what tasks log, kept per job
        self.hooks = runner_hooks(client.settings, self.id, release_id, hooks, self.task_logs)

    # --- lifecycle --------------------------------------------------------------------------------

    def run_all(self) -> None:
        """Run until nothing this runner can serve is queued or in flight anywhere."""
        self._run(until_idle=True)

    def run_forever(self) -> None:
        """Run until ``stop()`` or SIGTERM/SIGINT; in-flight tasks finish first."""
        self._run(until_idle=False)

    def stop(self) -> None:
        """Stop claiming; the run returns once the tasks in flight are finished and recorded."""
        self._stopping.set()

    @property
    def running(self) -> bool:
        """Whether a run is under way (also one in a ``with`` block that has not begun yet)."""
        background = self._background
        return self._running or (background is not None and background.is_alive())

    def __enter__(self) -> TaskRunner:
        """Serve in a background thread (``run_forever``) until the block is left."""
        self._check_lanes()
        with self._lock:
            if self._running or self._background is not None:
                raise TileboxError("this runner is running already")
            self._background_failure = None
            self._background = threading.Thread(
                target=self._run_in_background, name="tilebox-runner", daemon=True
            )
            self._background.start()
        return self

    def __exit__(self, kind: object, error: BaseException | None, tb: object) -> None:
        """Stop the background run and wait for it; raise what made it fail, unless the block
        itself raised (then that error goes on, and the runner's was logged)."""
        with self._lock:
            background, self._background = self._background, None
        self.stop()
        if background is not None:
            background.join()
        failure, self._background_failure = self._background_failure, None
        if failure is not None and error is None:
            raise failure

    def _run_in_background(self) -> None:
        try:
            self.run_forever()
        except BaseException as exc:  # handed to __exit__, in the thread that entered the block
            self._background_failure = exc

    def _check_lanes(self) -> None:
        if not self.lanes:
            raise TileboxError("this runner has no tasks to serve")

    def _run(self, until_idle: bool) -> None:
        self._check_lanes()
        with self._lock:
            background = self._background
            if self._running or (
                background is not None and background is not threading.current_thread()
            ):
                raise TileboxError("this runner is running already")
            self._running = True
        try:
            self._serve(until_idle)
        finally:
            with self._lock:
                self._running = False
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def _serve(self, until_idle: bool) -> None:
        # A stop requested before the run began (a signal, an orphaned runtime) is honoured:
        # the flag is cleared when a run ends, not when one starts.
        self._done.clear()
        self._failure = None
        # run_all looks for what is left each time a read comes back empty: it returns within
        # about IDLE_CHECK_MS of the last result instead of a whole block_ms later.
        self._block_ms = min(self.block_ms, IDLE_CHECK_MS) if until_idle else self.block_ms
        restore = install_signal_handlers(self.stop)
        try:
            self._with_backoff(lambda: self.store.ensure_lanes(self.lanes))
        except BaseException:
            restore()
            self._stopping.clear()
            raise
        heartbeat = self._thread(self._heartbeat, "tilebox-heartbeat")
        recorder = self._thread(self._record, "tilebox-recorder")
        self.log.info("runner started", lanes=len(self.lanes), concurrency=self.concurrency)
        try:
            workers = [
                self._thread(self._work, f"tilebox-worker-{i}", until_idle)
                for i in range(1, self.concurrency)
            ]
            self._guarded(self._work, until_idle)
            for worker in workers:
                worker.join()
        finally:
            self._results.put(None)  # after every result handed over: they are all recorded
            recorder.join()
            self._stopping.set()
            self._done.set()
            heartbeat.join(5)  # a renewal under way may wait for a socket timeout: not for ever
            self.hooks.run_ended()
            restore()
            self._stopping.clear()
            self.log.info("runner stopped")

    def _thread(self, target: Callable[..., None], name: str, *args: object) -> threading.Thread:
        thread = threading.Thread(
            target=self._guarded, args=(target, *args), name=name, daemon=True
        )
        thread.start()
        return thread

    def _guarded(self, target: Callable[..., None], *args: object) -> None:
        """Run one of the runner's loops; an error it does not handle stops the whole runner."""
        try:
            target(*args)
        except BaseException as exc:
            self._fail(exc)

    def _fail(self, error: BaseException) -> None:
        """Stop the run because of ``error``; the first such error is raised when it is over."""
        with self._lock:
            first = self._failure is None
            if first:
                self._failure = error
        if first:
            self.log.error(
                "runner failed, stopping", thread=threading.current_thread().name,
                error=f"{type(error).__name__}: {error}", exc_info=error,
            )  # fmt: skip
        else:
            self.log.error("runner failed again while stopping",
                           error=f"{type(error).__name__}: {error}")  # fmt: skip
        self._stopping.set()

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
                    self.hooks.store_error()
                    failures += 1
                    wait = delay(failures, base=BACKOFF_BASE, cap=BACKOFF_CAP)
                    self.log.warning(
                        "store unavailable, retrying", error=str(exc), delay=round(wait, 2)
                    )
                    self._stopping.wait(wait)
        finally:
            try:
                if ahead is not None:  # what was read ahead and not run is handed back
                    with contextlib.suppress(StoreUnavailable):
                        finishes = [self._release(d.task) for d in ahead()]
                        if finishes:
                            self._hand_over(finishes, set())
            finally:
                self._close_loop()

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
                self.hooks.took_over(len(taken))
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
        # Not tasks inside an optional subtree: whether they are to be skipped is known only
        # when their claims are recorded (claim.lua), so they have them recorded before they run.
        deferred = self._defer_claims() and all(
            d.previous_owner is None and not d.task.scopes for d in deliveries
        )
        tasks = [d.task for d in deliveries] if deferred else self._claim(deliveries)
        # stamped now, when they were received, however much later they are recorded
        claims = self._claimed_events(tasks) if deferred else {}
        with self._lock:
            self._in_flight.update((t.key, t) for t in tasks)
            if deferred:
                self._unclaimed.update((t.key, (t, None, claims[t.key])) for t in tasks)
        pending = collections.deque(tasks)
        finishes: list[Finish] = []
        handed: set[tuple[str, str]] = set()  # deliveries whose results the recorder has
        # What a failure in this batch stops of the rest of it, before the store knows (it will
        # by their results, recorded after the failure's): the tasks of a job a task failed for
        # good in are handed back (and held), those of an optional subtree a failure skipped
        # are skipped (job id -> those optional tasks).
        failed_jobs: set[str] = set()
        skipped: dict[str, set[str]] = {}
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
                            self._unclaimed.pop(t.key, None)
                    kept = {t.key for t in self._claim([Delivery(t) for t in rest], claims)}
                    self._forget(t for t in rest if t.key not in kept)
                    pending = collections.deque(t for t in pending if t.key in kept)
                    if task.key not in kept:
                        continue
                handed_back = False
                # Draining: hand back what has not started rather than run it now.
                if self._stopping.is_set():
                    finish = self._release(task)
                elif failed_jobs and task.job_id in failed_jobs:
                    finish, handed_back = self._release(task), True
                elif skipped and _in_skipped(skipped, task):
                    finish = self._skipped(task, self.client.origin())
                else:
                    if deferred:
                        with self._lock:
                            self._unclaimed[task.key] = (
                                task,
                                time.monotonic(),
                                claims[task.key],
                            )
                    started = time.perf_counter()
                    hooks = self.hooks
                    finish = (
                        hooks.execute(task, self._execute)
                        if hooks.wraps_execution
                        else self._execute(task)
                    )
                    self._observe(time.perf_counter() - started)
                    if finish.outcome is Outcome.FAILED:
                        failed_jobs.add(task.job_id)
                    elif finish.outcome is Outcome.FAILED_NESTED:
                        skipped.setdefault(task.job_id, set()).add(finish.skips)
                if handed_back:  # no claim of it is recorded: its job holds it (claim.lua)
                    if deferred:
                        self._claimed_meanwhile(task)
                elif deferred and not self._claimed_meanwhile(task):
                    if len(finish.subtasks) > STAGE_CHUNK:
                        self._claim([Delivery(task)], claims)  # before its subtasks are staged
                    else:  # recorded with the result
                        finish = msgspec.structs.replace(finish, claim=claims[task.key])
                finishes.append(finish)
                # Fast tasks are recorded in batches; a batch is handed over once it is
                # FLUSH_SECONDS old, so a slow task's result (and its dependants) is not held back.
                if time.monotonic() - since >= FLUSH_SECONDS:
                    self._hand_over(finishes, handed)
                    finishes, since = [], time.monotonic()
            if finishes:
                self._hand_over(finishes, handed)
        finally:
            with self._lock:
                for t in tasks:
                    self._unclaimed.pop(t.key, None)
            self._forget(t for t in tasks if t.key not in handed)

    def _claimed_meanwhile(self, task: ClaimedTask) -> bool:
        """Whether the heartbeat thread recorded the claim of ``task`` while it ran (it ran long);
        if it is recording it now, waits: a claim is recorded before the result."""
        with self._lock:
            if self._unclaimed.pop(task.key, None) is not None:
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
                    task.key: (task, started, claim)
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
            except BaseException as exc:
                with self._lock:  # their results will record them
                    self._unclaimed.update(overdue)
                if not isinstance(exc, StoreUnavailable):
                    raise
                self.log.warning("could not record claims", error=str(exc))

    def _defer_claims(self) -> bool:
        """Whether tasks are fast enough to have their claims recorded with their results."""
        return self._task_seconds is not None and self._task_seconds < CLAIM_AHEAD_SECONDS

    def _hand_over(self, finishes: list[Finish], handed: set[tuple[str, str]]) -> None:
        self._results.put(finishes)
        handed.update(finish.task.key for finish in finishes)

    def _forget(self, tasks: Iterable[ClaimedTask]) -> None:
        """No longer in flight here: their leases are not renewed, and expire."""
        with self._lock:
            for task in tasks:
                self._in_flight.pop(task.key, None)

    def _record(self) -> None:
        """Record finished tasks, a batch per call, in a thread of its own: the server stores one
        batch while the workers claim and execute the next (the GIL is free while it waits).

        Once recording failed (not for want of a store), the runner stops: batches handed over
        meanwhile are not recorded (their leases expire and the tasks run again), but taken off
        the queue, so that no worker waits for room in it."""
        failed = False
        while (finishes := self._results.get()) is not None:
            if failed:
                self._forget(finish.task for finish in finishes)
                continue
            try:
                self._record_batch(finishes, between=self._record_waiting)
            except BaseException as exc:
                failed = True
                self._fail(exc)

    def _record_waiting(self) -> None:
        """Between two chunks of a large fan-out (see TaskStore.stage): record the batches handed
        over meanwhile, so their tasks' results and dependants do not wait for the last chunk."""
        while True:
            try:
                finishes = self._results.get_nowait()
            except queue.Empty:
                return
            if finishes is None:  # the run is over: the main loop ends once the fan-out is recorded
                self._results.put(None)
                return
            self._record_batch(finishes)

    def _record_batch(
        self, finishes: list[Finish], between: Callable[[], None] | None = None
    ) -> None:
        statuses: list[FinishStatus] = []
        entries = {finish.task.key for finish in finishes}
        with self._lock:
            self._recording |= entries
        self.hooks.recording()
        try:
            statuses = self._with_backoff(
                lambda: self.store.finish_many(self.id, self.release_id, finishes, between)
            )
        except StoreUnavailable as exc:
            # Not lost: the leases expire and the tasks run again (delivery is at-least-once).
            self.log.error("could not record finished tasks", error=str(exc), tasks=len(finishes))
        finally:
            with self._lock:  # at once: the heartbeat must not see them in flight, not recording
                self._recording -= entries
                for entry in entries:
                    self._in_flight.pop(entry, None)
        for finish, status in zip(finishes, statuses):
            if status is FinishStatus.FENCED:
                self.log.warning("lease lost; another runner owns the task now",
                                 task_id=finish.task.task_id)  # fmt: skip
            elif status is FinishStatus.SUPERSEDED:
                self.log.info("result dropped: the task was cancelled, requeued or held (its "
                              "job failed) while it ran", task_id=finish.task.task_id)  # fmt: skip

    def _claimed_events(self, tasks: Sequence[ClaimedTask]) -> dict[tuple[str, str], TaskClaimed]:
        """Entry id -> TaskClaimed of each of ``tasks``, claimed now."""
        origin = self.client.origin()
        return {
            t.key: TaskClaimed(**origin.stamp(), job_id=t.job_id, task_id=t.task_id,
                                 runner_id=self.id, release_id=self.release_id)
            for t in tasks
        }  # fmt: skip

    def _claim(
        self, deliveries: list[Delivery], stamped: dict[tuple[str, str], TaskClaimed] | None = None
    ) -> list[ClaimedTask]:
        """Record the claims of ``deliveries`` before their tasks run; the tasks to run.
        ``stamped``: TaskClaimed events made when tasks were received (by entry), else made now."""
        origin = self.client.origin()
        claims = stamped or {}
        if any(d.task.key not in claims for d in deliveries):
            claims = {**self._claimed_events([d.task for d in deliveries]), **claims}
        requests = [self._claim_of(d, claims[d.task.key], origin) for d in deliveries]
        statuses = self.store.claim(self.id, self.release_id, requests)
        claimed, skipped = [], []
        for d, status in zip(deliveries, statuses):
            if status is ClaimStatus.OK:
                claimed.append(d.task)
            elif status is ClaimStatus.SKIP:
                skipped.append(self._skipped(d.task, origin))
            elif status is ClaimStatus.POISONED:
                self.log.error(
                    "poison task failed", task_id=d.task.task_id, deliveries=d.deliveries
                )
        if skipped:  # recorded as any result (their entries are this runner's until then)
            self._hand_over(skipped, set())
        return claimed

    def _claim_of(self, delivery: Delivery, claimed: TaskClaimed, origin: Origin) -> Claim:
        """The claim of ``delivery``: with the audit record of a takeover, and failing the task
        instead when it is poison."""
        task = delivery.task
        expired = poison = None
        if delivery.previous_owner is not None:
            expired = TaskLeaseExpired(
                **origin.stamp(), job_id=task.job_id, task_id=task.task_id,
                previous_runner_id=delivery.previous_owner, runner_id=self.id,
                deliveries=delivery.deliveries,
            )  # fmt: skip
        if is_poison(delivery.deliveries, self.max_deliveries):
            poison = TaskFailed(
                **origin.stamp(), job_id=task.job_id, task_id=task.task_id, runner_id=self.id,
                release_id=self.release_id, reason=FailureReason.POISON,
                error=f"delivered {delivery.deliveries} times without finishing (it may crash its runner)",
            )  # fmt: skip
        return Claim(delivery, claimed, expired, poison)

    # --- executing --------------------------------------------------------------------------------

    def _execute(self, claimed: ClaimedTask) -> Finish:
        common: _TaskOf = {"job_id": claimed.job_id, "task_id": claimed.task_id,
                           "runner_id": self.id, "release_id": self.release_id}  # fmt: skip
        task_class = self._classes.get((claimed.name, parse_version(claimed.version)[0]))
        if task_class is None:  # cannot happen with lane routing; fail loudly rather than loop
            error = TaskError("UnknownTask", "no task class for this identifier")
            return self._failed(claimed, common, error.message, FailureReason.ERROR, error)
        try:
            task = decode_input(claimed.input, task_class)
        except msgspec.MsgspecError as exc:
            error = TaskError("InvalidInput", f"cannot decode task input: {exc}")
            return self._failed(claimed, common, error.message, FailureReason.INPUT, error)
        current = CurrentTask(claimed.task_id, claimed.job_id, claimed.name, claimed.version,
                              claimed.attempts + 1, task_class.__name__)  # fmt: skip
        context = TaskContext(current, self.cache, self.id, self.runner_context, self.task_logs)
        started = time.perf_counter()
        try:
            # annotated -> None, but an async def execute returns its coroutine (and a mistaken
            # one anything): what it returns is looked at
            execute: Callable[[TaskContext], object] = task.execute
            returned = execute(context)
            if returned is not None:  # a coroutine (async def execute), or a mistake
                self._awaited(task, returned)
            requests = context.subtasks
            scopes = (
                subtask_scopes(claimed.scopes, claimed.task_id, claimed.optional)
                if requests
                else ""
            )
            subtasks = [
                task_spec(
                    r.handle.task,
                    r.handle.id,
                    r.cluster or claimed.cluster,
                    parent_id=claimed.task_id,
                    depends_on=r.depends_on,
                    max_retries=r.max_retries,  # 0 unless given, as in Tilebox: not the parent's
                    optional=r.optional,
                    scopes=scopes,
                )
                for r in requests
            ]
            # a display name the task set is kept (checked here: it fails the task, not the runner)
            display = "" if current.display == task_class.__name__ else _display(current.display)
        except Exception as exc:
            seconds = time.perf_counter() - started
            context.logger.warning("task failed", error=f"{type(exc).__name__}: {exc}")
            detail = "".join(traceback.format_exception_only(exc)).strip()
            display = (
                "" if current.display == task_class.__name__ else _safe_display(current.display)
            )
            return self._failed(claimed, common, detail, FailureReason.ERROR, task_error(exc),
                                seconds, display)  # fmt: skip
        seconds = time.perf_counter() - started
        origin = self.client.origin()  # stamped when it finished
        progress = context.progress_deltas()
        events: list[Event] = [
            TaskCompleted(**origin.stamp(), **common, compute_seconds=round(seconds, 6),
                          subtask_ids=[s.id for s in subtasks], progress=progress,
                          display=display),
            *(submitted_event(origin.stamp(), claimed.job_id, s) for s in subtasks),
        ]  # fmt: skip
        return Finish(claimed, Outcome.COMPLETED, events, int(seconds * 1000), progress, subtasks,
                      display=display)  # fmt: skip

    def _awaited(self, task: Task, returned: object) -> None:
        """Await the coroutine an ``async def execute`` returned, on this worker's event loop;
        anything else that is not None fails the task (it would not run)."""
        if inspect.iscoroutine(returned):
            loop = getattr(self._loops, "loop", None)
            if loop is None:
                loop = self._loops.loop = EventLoop(threading.current_thread().name)
            returned = loop.run(returned)
            if returned is None:
                return
        raise not_runnable(task, returned)

    def _close_loop(self) -> None:
        loop = getattr(self._loops, "loop", None)
        if loop is not None:
            self._loops.loop = None
            loop.close()

    def _failed(
        self, claimed: ClaimedTask, common: _TaskOf, detail: str, reason: FailureReason,
        error: TaskError, seconds: float = 0.0, display: str = "",
    ) -> Finish:  # fmt: skip
        origin = self.client.origin()  # stamped when it failed
        outcome = failure_outcome(reason, claimed.attempts, claimed.max_retries, claimed.optional,
                                  nested=bool(claimed.scopes))  # fmt: skip
        skips = nearest_scope(claimed.scopes) if outcome is Outcome.FAILED_NESTED else ""
        event = TaskFailed(**origin.stamp(), **common, error=detail[:MAX_ERROR_MESSAGE],
                           will_retry=outcome is Outcome.RETRY, reason=reason,
                           compute_seconds=round(seconds, 6), traceback=error.traceback,
                           display=display)  # fmt: skip
        return Finish(claimed, outcome, [event], int(seconds * 1000), display=display,
                      error=error, skips=skips)  # fmt: skip

    def _skipped(self, claimed: ClaimedTask, origin: Origin) -> Finish:
        event = TaskSkipped(**origin.stamp(), job_id=claimed.job_id, task_id=claimed.task_id,
                            runner_id=self.id, release_id=self.release_id)  # fmt: skip
        return Finish(claimed, Outcome.SKIPPED, [event])

    def _release(self, claimed: ClaimedTask) -> Finish:
        event = TaskReleased(**self.client.origin().stamp(), job_id=claimed.job_id,
                             task_id=claimed.task_id, runner_id=self.id)  # fmt: skip
        return Finish(claimed, Outcome.RELEASED, [event])

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
                for task in self._in_flight.values():
                    by_lane.setdefault(task.lane, []).append(task.entry)
            if not by_lane:
                continue
            try:
                renewed = self.store.renew(self.id, by_lane)
            except StoreUnavailable as exc:
                self.hooks.store_error()
                self.log.warning("lease renewal failed", error=str(exc))
                continue
            lost = {(lane, e) for lane, entries in by_lane.items() for e in entries} - renewed
            if lost:
                with self._lock:  # entries finished since the snapshot (or finishing) were not lost
                    lost &= self._in_flight.keys() - self._recording
            if lost:
                self.log.warning("leases lost", entries=sorted(lost))

    def _with_backoff(self, call: Callable[[], T]) -> T:
        """Retry ``call`` while the store is unavailable: minutes normally, seconds when draining
        (an unrecorded result is not lost: the lease expires and the task runs again)."""
        return retrying(
            StoreUnavailable,
            attempts=lambda: DRAIN_ATTEMPTS if self._stopping.is_set() else ATTEMPTS,
            base=BACKOFF_BASE,
            cap=BACKOFF_CAP,
            on_retry=self._retrying,
        )(call)

    def _retrying(self, error: BaseException, wait: float) -> None:
        self.hooks.store_error()
        self.log.warning("store unavailable, retrying", error=str(error), delay=round(wait, 2))


def _in_skipped(skipped: dict[str, set[str]], task: ClaimedTask) -> bool:
    """Whether ``task`` is inside an optional subtree that ``skipped`` names for its job."""
    scopes = skipped.get(task.job_id)
    return bool(scopes and task.scopes and scopes.intersection(task.scopes.split(",")))


def _display(display: object) -> str:
    """A display name a task set, as kept; not a str, or not text (a lone surrogate), fails it."""
    if not isinstance(display, str):
        raise TypeError(f"current_task.display must be a str, got {display!r}")
    display.encode("utf-8")  # raises UnicodeEncodeError: it could not be recorded
    return bounded_display(display)


def _safe_display(display: object) -> str:
    """``_display`` of a task that failed anyway: a bad display name is left out."""
    try:
        return _display(display)
    except (TypeError, UnicodeError):
        return ""


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
    """Every lane a runner providing ``identifiers`` may read, on every shard: vX.Y serves
    vX.0 ... vX.Y."""
    served = []
    for identifier in identifiers:
        major, minor = parse_version(identifier.version)
        served += [(identifier.name, major, m) for m in range(minor + 1)]
    return store.serving_lanes(cluster, served)


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
