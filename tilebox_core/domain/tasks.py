"""The task plane's vocabulary and rules: states, outcomes, the values runners and the task store
exchange, and what a runner decides about a task it received. Pure: no I/O.

The enums' values are the wire values: what the task scripts write into task and job hashes and
return to their callers, and what earlier versions wrote, so stored data reads back unchanged.
The value types are msgspec structs, frozen, and ``gc=False`` where they hold no containers of
their own making (none can be part of a reference cycle): a batch of 64 no-op tasks creates a few
hundred of them, and the cyclic collector then has nothing of theirs to track. None is
``array_like``: none is encoded (``TaskSpecFields`` and ``JobInfo`` are, as JSON objects with field
names that scripts and older readers read).
"""

from __future__ import annotations

import enum

import msgspec

from .events import Event, Stamp, TaskClaimed, TaskFailed, TaskLeaseExpired, TaskSubmitted

# --- states and outcomes ---------------------------------------------------------------------


class TaskState(enum.StrEnum):
    """A task's ``state`` field (tasklib.lua): waiting -> queued -> running -> one of the last four."""

    WAITING = "waiting"  # some dependency is not complete yet
    QUEUED = "queued"  # in its lane
    RUNNING = "running"  # a runner's claim is recorded
    COMPUTED = "computed"  # ran; complete once its subtasks are
    FAILED = "failed"
    FAILED_OPTIONAL = "failed_optional"  # an optional task that failed: complete, as if computed
    CANCELLED = "cancelled"


# A task in these states runs no more unless its job is retried; the others may still run.
TASK_DONE = frozenset({TaskState.COMPUTED, TaskState.FAILED, TaskState.FAILED_OPTIONAL,
                       TaskState.CANCELLED})  # fmt: skip
# What a cancel drops: not handed to a runner yet (a running task finishes without subtasks).
TASK_UNSTARTED = frozenset({TaskState.WAITING, TaskState.QUEUED})


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Tilebox's names of the same states, as aliases (JobState.SUBMITTED is JobState.QUEUED;
    # iterating JobState gives the five above). Tilebox tells a job with a task running
    # (RUNNING) from one started with none running now (STARTED); here both are RUNNING.
    SUBMITTED = "queued"
    STARTED = "running"
    CANCELED = "cancelled"


JOB_DONE = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})


class Outcome(enum.StrEnum):
    """What a runner reports for a task it received (finish.lua)."""

    COMPLETED = "completed"  # ran; its subtasks are created
    RETRY = "retry"  # failed, attempts left: queued again
    FAILED = "failed"  # failed for good: the job fails
    FAILED_OPTIONAL = "failed_optional"  # an optional task failed for good: its dependants run
    RELEASED = "released"  # a draining runner hands it back unrun: queued again


class FailureReason(enum.StrEnum):
    """``TaskFailed.reason``."""

    ERROR = "error"  # the task raised
    INPUT = "input"  # its input does not decode into its class: it fails the same way every time
    POISON = "poison"  # delivered too often without finishing (it keeps killing its runners)
    UNAVAILABLE = "unavailable"  # reserved: no runner can load its code


class ClaimStatus(enum.StrEnum):
    """What the claim script made of one claim (claim.lua)."""

    OK = "ok"  # recorded: run the task
    STALE = "stale"  # its entry was superseded (requeued, cancelled, finished): dropped
    CANCELLED = "cancelled"  # its job was cancelled: the task is cancelled
    POISONED = "poisoned"  # failed as poison
    TAKEN = "taken"  # another runner's claim is recorded: it took the task over


class FinishStatus(enum.IntEnum):
    """What the finish script made of one task's result (finish.lua)."""

    FENCED = 0  # another runner owns the task now (this one's lease was lost): nothing recorded
    FINISHED = 1
    SUPERSEDED = 2  # cancelled or requeued while it ran: dropped, nothing recorded


# --- the rules a runner applies ----------------------------------------------------------------


def failure_outcome(
    reason: FailureReason, attempts: int, max_retries: int, optional: bool
) -> Outcome:
    """The outcome of a failed run of a task that ran ``attempts`` times before: retried while
    attempts are left, unless its input is bad (that fails the same way every time); else failed,
    which an optional task's job does not."""
    if reason is FailureReason.ERROR and attempts < max_retries:
        return Outcome.RETRY
    return Outcome.FAILED_OPTIONAL if optional else Outcome.FAILED


def is_poison(deliveries: int, max_deliveries: int) -> bool:
    """Whether a task delivered ``deliveries`` times without finishing is failed as poison when it
    is claimed: it has outlived more runners than a task fails by accident."""
    return deliveries > max_deliveries


def job_state_of(*, cancelled: bool, failed: bool, complete: bool, started: bool) -> JobState:
    """A job's state: cancelled over failed (a task failed for good) over completed (every root
    task complete) over running (a claim or a result recorded) over queued."""
    if cancelled:
        return JobState.CANCELLED
    if failed:
        return JobState.FAILED
    if complete:
        return JobState.COMPLETED
    return JobState.RUNNING if started else JobState.QUEUED


# --- values: what tasks and jobs are made of -----------------------------------------------------


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


def submitted_event(stamp: Stamp, job_id: str, spec: TaskSpec) -> TaskSubmitted:
    return TaskSubmitted(
        **stamp, job_id=job_id, task_id=spec.id, name=spec.name, version=spec.version,
        cluster=spec.cluster, input=spec.input, parent_id=spec.parent_id,
        depends_on=spec.depends_on, max_retries=spec.max_retries, optional=spec.optional,
    )  # fmt: skip


class JobInfo(msgspec.Struct, frozen=True):
    """A job's description, kept as one JSON field of its hash (``info``, see Keys.job)."""

    name: str
    cluster: str
    submitted_by: str
    submitted_at: str  # ISO 8601
    max_retries: int
    roots: list[str]  # its root tasks' ids: they are not in its task list (a command less)


class NewJob(msgspec.Struct, frozen=True):
    """A job to create: its description, root tasks and the events recording its submission."""

    id: str
    info: JobInfo
    specs: list[TaskSpec]
    events: list[Event]
    submitted_ms: int


# --- values: what a runner and the task store exchange ------------------------------------------


class ClaimedTask(msgspec.Struct, frozen=True, gc=False):
    """A task a runner received, with what it needs to run it (read from its lane entry)."""

    lane: str
    entry: str  # the lane entry's id
    task_id: str
    job_id: str
    name: str
    version: str
    input: bytes
    attempts: int  # runs that failed before (reset by a job retry)
    max_retries: int
    optional: bool
    chain: str  # JSON: the task and its ancestors, with their dependants (see tasklib.lua)
    cluster: str

    @property
    def key(self) -> tuple[str, str]:
        """(lane, entry id): what names one delivery. An entry id alone does not: ids are per
        stream, and one script call gives entries it adds to different lanes the same id."""
        return (self.lane, self.entry)


class Delivery(msgspec.Struct, frozen=True, gc=False):
    """A lane entry handed to a runner: fresh, or taken over after its lease expired."""

    task: ClaimedTask
    deliveries: int = 1
    previous_owner: str | None = None  # the runner whose lease expired


class Pending(msgspec.Struct, frozen=True, gc=False):
    """A lane entry delivered but not acknowledged: whose it is, and how often it was delivered."""

    lane: str
    entry: str
    deliveries: int
    owner: str


class Claim(msgspec.Struct, frozen=True, gc=False):
    """A delivery whose claim is to be recorded before its task runs (the claim script)."""

    delivery: Delivery
    claimed: TaskClaimed
    expired: TaskLeaseExpired | None = None  # with a delivery taken over
    poison: TaskFailed | None = None  # fails the task instead of claiming it (``is_poison``)


class Finish(msgspec.Struct, frozen=True):
    """A task's result, to be recorded (the finish script): its outcome, its events (in log
    order: its TaskCompleted and its subtasks' TaskSubmitted, or its TaskFailed or TaskReleased),
    the subtasks to create, and ``claim``, its TaskClaimed when the claim is recorded with the
    result (fast tasks; None: it was recorded before the task ran)."""

    task: ClaimedTask
    outcome: Outcome
    events: list[Event]
    compute_ms: int = 0
    progress: dict[str, list[int]] = {}  # label -> [done delta, total delta]
    subtasks: list[TaskSpec] = []
    claim: TaskClaimed | None = None


class StagedSubtasks(msgspec.Struct, frozen=True, gc=False):
    """Subtasks of a running task created before its finish (one stage script call each), with
    their TaskSubmitted events in the same order."""

    task: ClaimedTask
    specs: list[TaskSpec]
    events: list[TaskSubmitted]
