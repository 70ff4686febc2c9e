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
    """A task's ``state`` field (tasklib.lua): waiting -> queued -> running -> one of the last
    five (or queued -> skipped)."""

    WAITING = "waiting"  # some dependency is not complete yet
    QUEUED = "queued"  # in its lane (or held: its job failed, see task_projection.is_held)
    RUNNING = "running"  # a runner's claim is recorded
    COMPUTED = "computed"  # ran; complete once its subtasks are
    FAILED = "failed"
    # failed, and optional or inside an optional task's subtree: complete, as if computed
    FAILED_OPTIONAL = "failed_optional"
    CANCELLED = "cancelled"
    # not run: a task inside the subtree of an optional task failed (see ``failure_outcome``)
    SKIPPED = "skipped"


# A task in these states runs no more unless its job is retried; the others may still run.
TASK_DONE = frozenset({TaskState.COMPUTED, TaskState.FAILED, TaskState.FAILED_OPTIONAL,
                       TaskState.CANCELLED, TaskState.SKIPPED})  # fmt: skip
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
    # a task inside an optional task's subtree (not optional itself) failed for good: it ends
    # failed_optional, and the rest of the nearest optional ancestor's subtree is skipped
    FAILED_NESTED = "failed_nested"
    SKIPPED = "skipped"  # not run: it is inside an optional subtree whose run failed


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
    HELD = "held"  # its job failed: not handed out until the job is retried
    SKIP = "skip"  # inside an optional subtree whose run failed: to be finished as skipped


class FinishStatus(enum.IntEnum):
    """What the finish script made of one task's result (finish.lua)."""

    FENCED = 0  # another runner owns the task now (this one's lease was lost): nothing recorded
    FINISHED = 1
    SUPERSEDED = 2  # cancelled, requeued or held while it ran: dropped, nothing recorded


# --- the rules a runner applies ----------------------------------------------------------------


def failure_outcome(
    reason: FailureReason, attempts: int, max_retries: int, optional: bool, nested: bool = False
) -> Outcome:
    """The outcome of a failed run of a task that ran ``attempts`` times before: retried while
    attempts are left, unless its input is bad (that fails the same way every time); else failed.
    As in Tilebox, an optional task's failure does not fail its job (its dependants run), nor
    does the failure of a task ``nested`` inside an optional task's subtree: the rest of that
    subtree (the nearest optional ancestor's) is skipped instead, and the optional task is
    complete once what runs of it has finished."""
    if reason is FailureReason.ERROR and attempts < max_retries:
        return Outcome.RETRY
    if optional:
        return Outcome.FAILED_OPTIONAL
    return Outcome.FAILED_NESTED if nested else Outcome.FAILED


def subtask_scopes(scopes: str, task_id: str, optional: bool) -> str:
    """The scopes of the subtasks of task ``task_id`` whose scopes are ``scopes``: the ids of the
    optional tasks among their ancestors, outermost first, comma-separated ("" for none)."""
    if not optional:
        return scopes
    return f"{scopes},{task_id}" if scopes else task_id


def nearest_scope(scopes: str) -> str:
    """The optional task whose subtree a failure of a task with ``scopes`` skips: the nearest."""
    return scopes.rsplit(",", 1)[-1]


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
    scopes: str = ""  # the optional tasks among its ancestors (see ``subtask_scopes``)


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
    # How long it stays once ended (domain.retention); None: submitted before retention existed,
    # the default applies (DEFAULT_RETENTION_MS in tasklib.lua); kept apart in the job's hash too
    # (field ``retention``), which the script that ends the job reads
    retention_ms: int | None = None


class NewJob(msgspec.Struct, frozen=True):
    """A job to create: its description, root tasks and the events recording its submission."""

    id: str
    info: JobInfo
    specs: list[TaskSpec]
    events: list[Event]


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
    scopes: str = ""  # the optional tasks among its ancestors (see ``subtask_scopes``)
    parent_id: str = ""  # its parent's id ("" for a root): kept on it once finished

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


class TaskError(msgspec.Struct, frozen=True, gc=False):
    """Why a task failed for good, kept on the task (its hash's ``error``, as JSON): the error's
    type and message, and the end of its traceback (bounded: MAX_TRACEBACK characters)."""

    type: str  # the exception's class ("ValueError", "mylib.errors.Timeout"), or the reason's
    message: str
    traceback: str = ""


MAX_ERROR_MESSAGE = 4000
MAX_TRACEBACK = 8000  # characters of a traceback kept (its last lines: where it was raised)
MAX_DISPLAY = 1024  # characters of a display name kept, as in Tilebox


def bounded_traceback(text: str, limit: int = MAX_TRACEBACK) -> str:
    """``text`` if it fits ``limit``, else its last lines that do, after a line saying so."""
    if len(text) <= limit:
        return text
    tail = text[-limit:]
    cut = tail.find("\n")
    return "... (earlier lines left out)\n" + (tail[cut + 1 :] if cut >= 0 else tail)


def bounded_display(display: str) -> str:
    """A display name as kept: at most MAX_DISPLAY characters (the rest cut off, as in Tilebox)."""
    return display[:MAX_DISPLAY]


class Finish(msgspec.Struct, frozen=True):
    """A task's result, to be recorded (the finish script): its outcome, its events (in log
    order: its TaskCompleted and its subtasks' TaskSubmitted, or its TaskFailed or TaskReleased),
    the subtasks to create, and ``claim``, its TaskClaimed when the claim is recorded with the
    result (fast tasks; None: it was recorded before the task ran). ``display`` (set by the task,
    "" if not) and ``error`` (of a failure for good) are kept on the task."""

    task: ClaimedTask
    outcome: Outcome
    events: list[Event]
    compute_ms: int = 0
    progress: dict[str, list[int]] = {}  # label -> [done delta, total delta]
    subtasks: list[TaskSpec] = []
    claim: TaskClaimed | None = None
    display: str = ""
    error: TaskError | None = None
    skips: str = ""  # FAILED_NESTED: the optional task whose subtree's rest is skipped


class StagedSubtasks(msgspec.Struct, frozen=True, gc=False):
    """Subtasks of a running task created before its finish (one stage script call each), with
    their TaskSubmitted events in the same order."""

    task: ClaimedTask
    specs: list[TaskSpec]
    events: list[TaskSubmitted]
