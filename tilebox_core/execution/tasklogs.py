"""Task logs: what a task logs through ``context.logger`` is kept in its job's log stream.

A task's logger is built the first time the task uses it (most tasks never log): structlog's
configured logger with one processor more in front, which hands each line that passes the
configured level to ``TaskLogs`` before it is rendered as usual. ``TaskLogs`` keeps at most
``MAX_LINES`` / ``MAX_BYTES`` of each execution (the rest is counted, and noted as dropped) and
writes what it holds in batches from a thread of its own: every FLUSH_SECONDS, one pipeline for
all the jobs' lines, and once more when a run ends. The store being unavailable, the lines wait
(up to MAX_PENDING; then the oldest are dropped, with a warning).
"""

from __future__ import annotations

import datetime as dt
import sys
import threading
import traceback
from collections.abc import Mapping, MutableMapping
from typing import Any

import msgspec
import structlog

from tilebox_core.domain.errors import StoreUnavailable
from tilebox_core.domain.tasklogs import LogBound, TaskLogLine
from tilebox_core.redis.tasklogs import TaskLogStore
from tilebox_core.task import CurrentTask

from .hooks import RunnerHooks

log = structlog.get_logger(__name__)

FLUSH_SECONDS = 0.2
MAX_PENDING = 100_000  # lines waiting for the store, at most
# Bound to every task logger (the runtime's own log shows them); not stored with each line.
BOUND = frozenset({"job_id", "task_id", "task", "runner_id"})
_json = msgspec.json.Encoder()


class TaskLogs:
    """The lines of a process's task executions on their way to the store ``logs``."""

    def __init__(self, logs: TaskLogStore) -> None:
        self.store = logs
        self._pending: list[tuple[str, TaskLogLine]] = []
        self._lock = threading.Lock()
        self._sending = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost = 0  # lines dropped while the store was unavailable
        self._dropping: dict[_Capture, None] = {}  # executions that dropped lines since a batch

    def logger(self, task: CurrentTask, runner_id: str) -> Any:
        """A structlog logger for one execution of ``task``, bound as the runners' task loggers
        are, keeping what it logs."""
        capture = _Capture(self, task, runner_id)
        config = structlog.get_config()
        wrapped = structlog.wrap_logger(
            config["logger_factory"](),
            processors=[capture, *config["processors"]],
            wrapper_class=config["wrapper_class"],
            context_class=config["context_class"],
            cache_logger_on_first_use=False,
        )
        return wrapped.bind(job_id=task.job_id, task_id=task.id, task=task.name,
                            runner_id=runner_id)  # fmt: skip

    def add(self, job_id: str, line: TaskLogLine) -> None:
        with self._lock:
            self._pending.append((job_id, line))
            self._writing()

    def dropping(self, capture: _Capture) -> None:
        """``capture`` dropped a line: the next batch notes how many it dropped meanwhile."""
        with self._lock:
            self._dropping[capture] = None
            self._writing()

    def _writing(self) -> None:
        """Start the writing thread unless it runs (holding the lock)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="tilebox-task-logs",
                                            daemon=True)  # fmt: skip
            self._thread.start()

    def flush(self) -> None:
        """Write every line held now (in the caller's thread), and stop the writing thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._wake.set()
            thread.join()
            self._wake.clear()
        self._send()

    def _loop(self) -> None:
        me = threading.current_thread()
        while True:
            woken = self._wake.wait(FLUSH_SECONDS)  # by a flush: it writes what is held
            if not woken:
                self._send()
            with self._lock:
                if self._thread is not me:  # a flush took over
                    return
                if woken or not (self._pending or self._dropping):  # a later line starts one
                    self._thread = None
                    return

    def holding(self) -> bool:
        """Whether lines (or notes of dropped ones) wait to be written."""
        return bool(self._pending or self._dropping)

    def send(self) -> None:
        """Write the lines held now, in the caller's thread (the store unavailable: later)."""
        self._send()

    def _send(self) -> None:
        with self._sending:
            with self._lock:
                lines, self._pending = self._pending, []
                dropping, self._dropping = list(self._dropping), {}
            for capture in dropping:
                note = capture.note()
                if note is not None:
                    lines.append((capture.task.job_id, note))
            if not lines:
                return
            try:
                self.store.append(lines)
            except StoreUnavailable as exc:
                with self._lock:  # kept for the next round, the oldest dropped past the bound
                    self._pending[:0] = lines
                    over = len(self._pending) - MAX_PENDING
                    if over > 0:
                        del self._pending[:over]
                        self._lost += over
                log.warning("cannot write task logs yet", error=str(exc), lines=len(lines),
                            dropped=self._lost)  # fmt: skip


class _Capture:
    """The processor in front of a task logger's chain: keeps the line (within the execution's
    bound, counting dropped lines in a note) and passes it on unchanged."""

    def __init__(self, logs: TaskLogs, task: CurrentTask, runner_id: str) -> None:
        self.logs, self.task, self.runner_id = logs, task, runner_id
        self.bound = LogBound()
        self._noted = 0  # dropped lines already noted
        self._lock = threading.Lock()

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        fields = {k: v for k, v in event.items() if k != "event" and k not in BOUND}
        if "exc_info" in fields:
            fields["exception"] = _exception(fields.pop("exc_info"))
        fields = _plain(fields)
        message = str(event.get("event", ""))
        size = len(message) + (len(_json.encode(fields)) if fields else 0)
        level = "warning" if method == "warn" else "error" if method == "exception" else method
        now = dt.datetime.now(dt.UTC)
        task = self.task
        with self._lock:
            kept = self.bound.admit(size)
        if kept:
            self.logs.add(task.job_id, TaskLogLine(task.id, task.attempt, now, level, message,
                                                   fields, self.runner_id))  # fmt: skip
        else:
            self.logs.dropping(self)
        return event

    def note(self) -> TaskLogLine | None:
        """A note of the lines dropped since the last one (None: none were)."""
        with self._lock:
            dropped, self._noted = self.bound.dropped - self._noted, self.bound.dropped
        if not dropped:
            return None
        return TaskLogLine(self.task.id, self.task.attempt, dt.datetime.now(dt.UTC), "", "",
                           runner_id=self.runner_id, dropped=dropped)  # fmt: skip


def _exception(info: Any) -> str:
    """The traceback text of ``exc_info`` as structlog takes it (True: the one being handled)."""
    if info is True:
        info = sys.exc_info()
    if isinstance(info, BaseException):
        return "".join(traceback.format_exception(info)).strip()
    if isinstance(info, tuple) and len(info) == 3 and info[1] is not None:
        return "".join(traceback.format_exception(*info)).strip()
    return ""


def _plain(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` as JSON can hold them: what it cannot is kept as its repr."""
    plain: dict[str, Any] = {}
    for key, value in fields.items():
        try:
            _json.encode(value)
        except (TypeError, OverflowError, msgspec.EncodeError):
            value = repr(value)
        plain[key] = value
    return plain


class LogHooks(RunnerHooks):
    """Writes the task logs held before results are recorded (a finished job's lines are all in
    its log), and when a run ends."""

    def __init__(self, logs: TaskLogs) -> None:
        self.logs = logs

    def recording(self) -> None:
        if self.logs.holding():
            self.logs.send()

    def run_ended(self) -> None:
        try:
            self.logs.flush()
        except Exception as exc:  # called while a run ends: it must end however this goes
            log.warning("cannot write task logs", error=f"{type(exc).__name__}: {exc}")
