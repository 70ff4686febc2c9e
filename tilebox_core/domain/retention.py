"""Retention: how long an ended job stays in Redis, and what is known of a job once it is gone.

A job ends when it completes, fails for good (until a retry) or is cancelled. Its retention is
the one given at submit, else the team's (``RetentionSet``, default 7 days) as it was at submit:
it is resolved when the job is submitted and kept in its description, because the scripts that end
a job run in the job's shard, where the team's setting (in the control slot) cannot be read on
Redis Cluster. Changing the team's retention applies to jobs submitted afterwards.

Once its retention has passed since it ended, the sweep (``Jobs.expire``) removes the job's
hashes, lists, index entries and task logs, atomically per job, and records ``JobsDeleted``; its
events stay in the task log, so ``removed_job`` can still say what it did.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable

from .errors import InvalidInput
from .events import (
    Event,
    JobsDeleted,
    JobSubmitted,
    Origin,
    RetentionSet,
    TaskCompleted,
    TaskFailed,
    TaskSubmitted,
    UnknownEvent,
)
from .jobs import ExecutionStats, Job, TaskInfo
from .projection import ControlState
from .task_projection import TaskPlane, apply
from .tasks import TaskError

MAX_RETENTION = dt.timedelta(days=3650)
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str, what: str = "retention") -> dt.timedelta:
    """``text`` as a duration: a number and a unit (ms, s, m, h, d, w), or several (``1d12h``);
    ``0`` alone is zero. InvalidInput names what is wrong and how to write it."""
    spec = text.strip().lower().replace(" ", "")
    if spec == "0":
        return dt.timedelta(0)
    parts = _PART.findall(spec)
    if not spec or "".join(n + u for n, u in parts) != spec:
        raise InvalidInput(
            f"invalid {what} {text!r}: use a number and a unit (ms, s, m, h, d, w), like 30s, "
            "12h, 7d or 1d12h; 0 removes a job as soon as it ends"
        )
    return check_retention(dt.timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts)), what)


def check_retention(value: dt.timedelta, what: str = "retention") -> dt.timedelta:
    if value < dt.timedelta(0) or value > MAX_RETENTION:
        raise InvalidInput(
            f"invalid {what} {format_duration(value)}: use 0 up to {MAX_RETENTION.days} days"
        )
    return value


def format_duration(value: dt.timedelta) -> str:
    """``value`` the way ``parse_duration`` reads it: ``7d``, ``1d12h``, ``90s``, ``0``."""
    ms = round(value.total_seconds() * 1000)
    if ms == 0:
        return "0"
    sign, ms = ("-", -ms) if ms < 0 else ("", ms)
    parts = []
    for unit in ("d", "h", "m", "s"):
        size = int(_UNITS[unit] * 1000)
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    if ms:
        parts.append(f"{ms}ms")
    return sign + "".join(parts)


def set_retention(state: ControlState, origin: Origin, retention: dt.timedelta) -> list[Event]:
    """The event setting the team's retention (nothing when it is that already)."""
    seconds = int(check_retention(retention).total_seconds())
    if seconds == state.retention_seconds:
        return []
    return [RetentionSet(**origin.stamp(), seconds=seconds)]


def retention_ms(state: ControlState, given: dt.timedelta | None) -> int:
    """A new job's retention in ms: ``given``, else the team's."""
    if given is None:
        return state.retention_seconds * 1000
    return round(check_retention(given).total_seconds() * 1000)


# --- what is known of a removed job ---------------------------------------------------------------


class RemovedJobFold:
    """Folds a job's events (from its task log, in order) into the view ``jobs().find`` gives of
    it once it was removed: its state, tasks, and the runner and release of each task. ``done``
    once its ``JobsDeleted`` was folded."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.plane = TaskPlane()
        self.submitted: JobSubmitted | None = None
        self.specs: dict[str, TaskSubmitted] = {}
        self.compute: dict[str, float] = {}
        self.errors: dict[str, TaskError] = {}
        self.deleted: JobsDeleted | None = None

    @property
    def done(self) -> bool:
        return self.deleted is not None

    def apply(self, event: Event | UnknownEvent) -> None:
        if isinstance(event, JobsDeleted):
            if self.job_id in event.job_ids and self.submitted is not None:
                self.deleted = event
            return
        if getattr(event, "job_id", None) != self.job_id:
            return
        if isinstance(event, JobSubmitted):
            self.submitted = event
        elif isinstance(event, TaskSubmitted):
            self.specs.setdefault(event.task_id, event)
        elif isinstance(event, TaskCompleted | TaskFailed):
            self.compute[event.task_id] = self.compute.get(event.task_id, 0.0) + (
                event.compute_seconds
            )
            if isinstance(event, TaskFailed) and not event.will_retry:
                self.errors[event.task_id] = TaskError(
                    event.error.split(":", 1)[0], event.error.partition(": ")[2] or event.error,
                    event.traceback,
                )  # fmt: skip
        apply(self.plane, event)

    def view(self) -> Job | None:
        """The job as its events left it (None: its submission was not seen)."""
        submitted, record = self.submitted, self.plane.jobs.get(self.job_id)
        if submitted is None or record is None:
            return None
        tasks = []
        for task_id in record.tasks:
            task, spec = self.plane.tasks[task_id], self.specs[task_id]
            tasks.append(TaskInfo(
                id=task_id, name=spec.name, version=spec.version, state=task.state,
                parent_id=spec.parent_id, cluster=spec.cluster, runner_id=task.runner,
                release_id=task.release, attempts=task.attempts,
                compute_seconds=round(self.compute.get(task_id, 0.0), 3),
                depends_on=list(spec.depends_on), error=self.errors.get(task_id),
            ))  # fmt: skip
        counts: dict[str, int] = {}
        for info in tasks:
            counts[info.state] = counts.get(info.state, 0) + 1
        compute = round(sum(t.compute_seconds for t in tasks), 3)
        deleted = self.deleted
        return Job(
            id=self.job_id, name=submitted.name, cluster=submitted.cluster, state=record.state,
            submitted_at=submitted.at, submitted_by=submitted.actor, total_tasks=len(tasks),
            tasks_by_state=counts, compute_seconds=compute, progress=[], tasks=tasks,
            execution_stats=ExecutionStats(total_tasks=len(tasks), tasks_by_state=counts,
                                           compute_time=dt.timedelta(seconds=compute)),
            removed_at=deleted.at if deleted is not None else None,
            removed_reason=deleted.reason if deleted is not None else None,
        )  # fmt: skip


def removed_job(job_id: str, events: Iterable[Event | UnknownEvent]) -> Job | None:
    """``RemovedJobFold`` of ``events``, read until the job's ``JobsDeleted``."""
    fold = RemovedJobFold(job_id)
    for event in events:
        fold.apply(event)
        if fold.done:
            break
    return fold.view()
