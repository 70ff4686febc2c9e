"""The task-plane projection: every job's and task's state, folded from the task log.

The task scripts keep the same state in job and task hashes, atomically with the events they
append (a materialised projection, what ``jobs().find`` reads); this fold is its definition in
Python, and the property tests check that the two agree for random job trees. ``apply`` mutates
the state it is given and returns it, like ``projection.apply``.

Log order is the order the scripts ran in, so the fold needs only these rules besides the
events' own meaning:

- A task completes when it and all the subtasks it created have (its ``open`` count, itself and
  its unfinished subtasks, reaches 0); then its dependants have one dependency fewer, and its
  parent (or, for a root, its job) one open subtask fewer. A failed optional task completes too.
- A completion creates the subtasks its ``subtask_ids`` name unless its job is cancelled (their
  TaskSubmitted events are logged all the same); a large fan-out has them created before the
  completion, chunk by chunk, each chunk logged when it is created.
- A cancelled job hands out no further tasks: its waiting and queued tasks are cancelled, and so
  is any task of it that would be queued later (a retry, a release, a dependency completed); a
  running task finishes, without subtasks.
- A poison task (``TaskFailed.reason`` poison, failed by a claim) fails for good, optional or not.
- A task failed for good inside an optional task's subtree (not optional itself) ends
  failed_optional and completes, as an optional one does; the rest of the subtree of the nearest
  optional ancestor is skipped: each of its tasks that a runner receives from then on is skipped
  (``TaskSkipped``: complete, unrun), and a completion in it creates none of the subtasks it
  names (their TaskSubmitted events are logged all the same).
- A job with a task failed for good hands out no further tasks until it is retried: a queued task
  of it is held (``is_held``; no event: its state stays queued, and no claim of it is logged), a
  running one finishes, and its completion still creates its subtasks (held in turn). A job retry
  queues the held tasks again once the job has no failed task left.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from .events import (
    Event,
    JobCancelled,
    JobRetried,
    JobSubmitted,
    TaskClaimed,
    TaskCompleted,
    TaskFailed,
    TaskReleased,
    TaskSkipped,
    TaskSubmitted,
    UnknownEvent,
)
from .tasks import TASK_UNSTARTED, FailureReason, JobState, TaskState, job_state_of


class TaskRecord(msgspec.Struct):
    id: str
    job_id: str
    parent_id: str | None
    optional: bool
    state: TaskState
    attempts: int = 0  # failed runs (reset by a job retry)
    runner: str | None = None  # whose claim was recorded last (None once queued again)
    release: str | None = None
    waiting_on: int = 0  # dependencies not complete yet
    dependants: list[str] = []
    open: int = 1  # the task itself and its subtasks not complete yet; 0: complete


class JobRecord(msgspec.Struct):
    id: str
    open: int  # root tasks not complete yet
    tasks: list[str] = []  # in the order they were created: roots first
    failed: int = 0  # tasks failed for good (a job retry queues them again)
    started: bool = False  # some claim was recorded
    cancelled: bool = False
    skipped: set[str] = set()  # optional tasks whose subtree's rest is skipped

    @property
    def state(self) -> JobState:
        return job_state_of(cancelled=self.cancelled, failed=self.failed > 0,
                            complete=self.open == 0, started=self.started)  # fmt: skip


class TaskPlane:
    """Jobs and tasks of one team's task log."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobRecord] = {}
        self.tasks: dict[str, TaskRecord] = {}
        # subtasks a completion created, by id -> their parent, until their TaskSubmitted
        self._created: dict[str, str] = {}


def apply(plane: TaskPlane, event: Event | UnknownEvent) -> TaskPlane:
    """Fold one event into ``plane``; unknown events, control-plane events and events of jobs the
    log does not show submitted (trimmed away) change nothing."""
    match event:
        case JobSubmitted():
            plane.jobs[event.job_id] = JobRecord(event.job_id, len(event.root_task_ids))
        case TaskSubmitted():
            _submitted(plane, event)
        case TaskClaimed():
            task = plane.tasks.get(event.task_id)
            if task is not None:
                task.state = TaskState.RUNNING
                task.runner, task.release = event.runner_id, event.release_id
                plane.jobs[task.job_id].started = True
        case TaskCompleted():
            _completed(plane, event)
        case TaskFailed():
            _failed(plane, event)
        case TaskReleased():
            task = plane.tasks.get(event.task_id)
            if task is not None:
                _queue(plane, task)
        case TaskSkipped():
            task = plane.tasks.get(event.task_id)
            if task is not None:
                task.state = TaskState.SKIPPED
                task.open -= 1
                if task.open == 0:
                    _settle(plane, task)
        case JobRetried():
            for task_id in event.task_ids:
                task = plane.tasks.get(task_id)
                if task is not None and task.state is TaskState.FAILED:
                    task.attempts = 0
                    plane.jobs[task.job_id].failed -= 1
                    _queue(plane, task)
        case JobCancelled():
            job = plane.jobs.get(event.job_id)
            if job is not None:
                job.cancelled = True
                for task_id in job.tasks:
                    task = plane.tasks[task_id]
                    if task.state in TASK_UNSTARTED:
                        task.state = TaskState.CANCELLED
    return plane


def is_held(plane: TaskPlane, task_id: str) -> bool:
    """Whether task ``task_id`` is held: queued in a job that failed (and is not cancelled), so
    no runner is given it (no claim of it, no poison failure, is logged) until a retry."""
    task = plane.tasks.get(task_id)
    if task is None or task.state is not TaskState.QUEUED:
        return False
    job = plane.jobs[task.job_id]
    return job.failed > 0 and not job.cancelled


def in_skipped_subtree(plane: TaskPlane, task_id: str) -> bool:
    """Whether task ``task_id`` is inside an optional subtree whose run failed: no runner is to
    run it (a claim of it is refused while it is queued: it is skipped)."""
    task = plane.tasks.get(task_id)
    if task is None:
        return False
    return not plane.jobs[task.job_id].skipped.isdisjoint(_scopes(plane, task))


def fold(
    events: Iterable[Event | UnknownEvent | tuple[str, Event | UnknownEvent]],
    plane: TaskPlane | None = None,
) -> TaskPlane:
    """Fold events, or (position, event) pairs as a replay yields them, into ``plane`` (or a new
    one)."""
    plane = plane if plane is not None else TaskPlane()
    for item in events:
        apply(plane, item[1] if isinstance(item, tuple) else item)
    return plane


def _submitted(plane: TaskPlane, event: TaskSubmitted) -> None:
    job = plane.jobs.get(event.job_id)
    if job is None or event.task_id in plane.tasks:
        return
    parent = plane.tasks.get(event.parent_id) if event.parent_id is not None else None
    # A subtask its parent's completion created, or one staged before it (while it runs); else
    # its parent completed in a cancelled job, and it was not created.
    if parent is not None and plane._created.pop(event.task_id, None) is None:
        if parent.state is not TaskState.RUNNING:
            return
        parent.open += 1
    task = TaskRecord(event.task_id, event.job_id, event.parent_id, event.optional,
                      TaskState.QUEUED)  # fmt: skip
    for dependency in dict.fromkeys(event.depends_on):
        other = plane.tasks.get(dependency)
        if other is not None and other.open > 0:
            other.dependants.append(task.id)
            task.waiting_on += 1
    if task.waiting_on:
        task.state = TaskState.WAITING
    plane.tasks[task.id] = task
    job.tasks.append(task.id)


def _completed(plane: TaskPlane, event: TaskCompleted) -> None:
    task = plane.tasks.get(event.task_id)
    if task is None:
        return
    task.state = TaskState.COMPUTED
    job = plane.jobs[task.job_id]
    # a cancelled job gets no new tasks, nor does a skipped subtree
    if not job.cancelled and not job.skipped.intersection(_scopes(plane, task, itself=True)):
        for subtask_id in event.subtask_ids:
            if subtask_id not in plane.tasks:  # not staged before
                plane._created[subtask_id] = task.id
                task.open += 1
    task.open -= 1
    if task.open == 0:
        _settle(plane, task)


def _failed(plane: TaskPlane, event: TaskFailed) -> None:
    task = plane.tasks.get(event.task_id)
    if task is None:
        return
    job = plane.jobs[task.job_id]
    if event.reason == FailureReason.POISON:  # failed by a claim: no run counted
        task.state, task.runner = TaskState.FAILED, event.runner_id
        job.failed += 1
        return
    task.attempts += 1
    scopes = _scopes(plane, task)
    if event.will_retry:
        _queue(plane, task)
    elif task.optional or scopes:
        task.state = TaskState.FAILED_OPTIONAL
        if not task.optional:  # nested in an optional subtree: the rest of it is skipped
            job.skipped.add(scopes[-1])
        task.open -= 1
        if task.open == 0:  # (subtasks it staged before it failed are not complete yet)
            _settle(plane, task)
    else:
        task.state = TaskState.FAILED
        job.failed += 1


def _scopes(plane: TaskPlane, task: TaskRecord, itself: bool = False) -> list[str]:
    """The optional tasks among ``task``'s ancestors (and itself, if ``itself``), outermost
    first: what ``domain.tasks.subtask_scopes`` gives its subtasks (or it)."""
    scopes = [task.id] if itself and task.optional else []
    parent_id = task.parent_id
    while parent_id is not None:
        parent = plane.tasks[parent_id]
        if parent.optional:
            scopes.append(parent.id)
        parent_id = parent.parent_id
    return scopes[::-1]


def _queue(plane: TaskPlane, task: TaskRecord) -> None:
    """Back in its lane, without an owner; cancelled instead in a cancelled job."""
    task.runner = task.release = None
    cancelled = plane.jobs[task.job_id].cancelled
    task.state = TaskState.CANCELLED if cancelled else TaskState.QUEUED


def _settle(plane: TaskPlane, task: TaskRecord) -> None:
    """``task`` is complete: its dependants wait for one dependency fewer, and its parent (or its
    job) for one subtask fewer; a parent thereby complete settles in turn."""
    while True:
        for dependant_id in task.dependants:
            dependant = plane.tasks[dependant_id]
            dependant.waiting_on -= 1
            if dependant.waiting_on == 0 and dependant.state is TaskState.WAITING:
                _queue(plane, dependant)
        if task.parent_id is None:
            plane.jobs[task.job_id].open -= 1
            return
        parent = plane.tasks[task.parent_id]
        parent.open -= 1
        if parent.open > 0:
            return
        task = parent
