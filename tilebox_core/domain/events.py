"""The event catalog: every state change is one of these, encoded with msgspec as a tagged union.

Schema evolution: a new field always gets a default; a field's type never changes; a tag is never
reused for another meaning. Events are frozen and carry their own id, time, actor and team. Fields
at their default are left out of the encoding (decoding restores them): smaller log entries.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict, Union

import msgspec


class Event(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=True, omit_defaults=True
):
    id: str
    at: dt.datetime
    actor: str
    team: str

    @property
    def type(self) -> str:
        return type(self).__name__


class Stamp(TypedDict):
    """What every event carries besides its payload: ``Event(**origin.stamp(), ...)``."""

    id: str
    at: dt.datetime
    actor: str
    team: str


@dataclass(frozen=True)
class Origin:
    """Who acts, for which team, and when; ``ids`` makes new unique ids. Rules take one as an
    argument, so the clock and new ids are theirs to be given (tests give fixed ones)."""

    team: str
    actor: str
    at: dt.datetime
    ids: Callable[[], str]

    def stamp(self) -> Stamp:
        return {"id": self.ids(), "at": self.at, "actor": self.actor, "team": self.team}


# --- control plane: one ordered log per team ------------------------------------------------------


class ClusterCreated(Event, frozen=True, kw_only=True):
    slug: str
    name: str


class ClusterDeleted(Event, frozen=True, kw_only=True):
    slug: str


class WorkflowCreated(Event, frozen=True, kw_only=True):
    slug: str
    name: str


class ReleaseTask(msgspec.Struct, frozen=True):
    """A task a release provides: identifier plus the JSON schema of its input."""

    name: str
    version: str
    input_schema: dict[str, Any] = {}


class ReleasePublished(Event, frozen=True, kw_only=True):
    release_id: str
    workflow: str
    digest: str  # "sha256:<hex>" of the artifact
    size: int
    tasks: list[ReleaseTask]
    # How a runtime process starts: "module:object" naming a tilebox_runner.Runner, or a command.
    runner: str | None = None
    command: list[str] | None = None
    fingerprint: str = ""  # identity of the release content; equal fingerprints -> same release
    forced: bool = False  # published despite schema incompatibilities (--force)
    incompatibilities: list[str] = []


class DeploymentSet(Event, frozen=True, kw_only=True):
    workflow: str
    cluster: str
    release_id: str  # always the resolved id, also for --latest
    requested: str  # what was asked: a release id or "latest"
    previous_release_id: str | None = None
    target: str | None = None
    forced: bool = False
    incompatibilities: list[str] = []


class DeploymentRemoved(Event, frozen=True, kw_only=True):
    workflow: str
    cluster: str
    release_id: str
    target: str | None = None


class RetentionSet(Event, frozen=True, kw_only=True):
    """How long the team's ended jobs stay in Redis (jobs submitted from now on; see
    domain.retention)."""

    seconds: int


CONTROL_EVENTS: tuple[type[Event], ...] = (
    ClusterCreated,
    ClusterDeleted,
    WorkflowCreated,
    ReleasePublished,
    DeploymentSet,
    DeploymentRemoved,
    RetentionSet,
)

# --- task plane: jobs and tasks, one log per team ----------------------------------------------------


class JobSubmitted(Event, frozen=True, kw_only=True):
    job_id: str
    name: str
    cluster: str
    root_task_ids: list[str]
    max_retries: int = 0


class TaskSubmitted(Event, frozen=True, kw_only=True):
    job_id: str
    task_id: str
    name: str
    version: str
    cluster: str
    input: str  # the task's fields as JSON
    parent_id: str | None = None
    depends_on: list[str] = []
    max_retries: int = 0
    optional: bool = False


class TaskClaimed(Event, frozen=True, kw_only=True):
    job_id: str
    task_id: str
    runner_id: str
    release_id: str | None = None  # the release whose code executes the task (None: direct runner)


class TaskCompleted(Event, frozen=True, kw_only=True):
    job_id: str
    task_id: str
    runner_id: str
    release_id: str | None = None
    compute_seconds: float = 0.0
    subtask_ids: list[str] = []
    progress: dict[str, list[int]] = {}  # label -> [done delta, total delta]
    display: str = ""  # the display name the task set (current_task.display), if it set one


class TaskFailed(Event, frozen=True, kw_only=True):
    job_id: str
    task_id: str
    runner_id: str
    error: str
    release_id: str | None = None
    will_retry: bool = False
    reason: str = "error"  # error | input | poison | unavailable
    compute_seconds: float = 0.0
    traceback: str = ""  # the end of the error's traceback (bounded), where it has one
    display: str = ""  # the display name the task set before it failed, if it set one


class TaskLeaseExpired(Event, frozen=True, kw_only=True):
    """A runner stopped renewing its lease; ``runner_id`` took the task over."""

    job_id: str
    task_id: str
    previous_runner_id: str
    runner_id: str
    deliveries: int


class TaskReleased(Event, frozen=True, kw_only=True):
    """A draining runner handed a claimed task back to the queue without running it."""

    job_id: str
    task_id: str
    runner_id: str


class TaskSkipped(Event, frozen=True, kw_only=True):
    """A runner received a task inside an optional task's subtree after a task of that subtree
    failed: the task is skipped, unrun, and counts as complete."""

    job_id: str
    task_id: str
    runner_id: str
    release_id: str | None = None


class JobRetried(Event, frozen=True, kw_only=True):
    job_id: str
    task_ids: list[str]


class JobCancelled(Event, frozen=True, kw_only=True):
    job_id: str


class JobsDeleted(Event, frozen=True, kw_only=True):
    """Jobs removed from Redis with their tasks, lists and task logs: ``reason`` "expired" (their
    retention passed since they ended) or "deleted" (``tilebox job delete``). Their history stays
    in the task log (and the archive)."""

    job_ids: list[str]
    reason: str = "expired"


TASK_EVENTS: tuple[type[Event], ...] = (
    JobSubmitted,
    TaskSubmitted,
    TaskClaimed,
    TaskCompleted,
    TaskFailed,
    TaskLeaseExpired,
    TaskReleased,
    JobRetried,
    JobCancelled,
    TaskSkipped,
    JobsDeleted,
)

ALL_EVENTS: tuple[type[Event], ...] = CONTROL_EVENTS + TASK_EVENTS


class UnknownEvent(msgspec.Struct, frozen=True):
    """An entry whose type this version does not know (written by a newer release, or corrupt).

    Readers keep going: projections ignore it and ``events list`` shows it as unknown.
    """

    type: str
    id: str
    at: dt.datetime | None
    actor: str
    team: str
    raw: dict[str, Any]


class _Loose(msgspec.Struct):
    type: str = "?"
    id: str = "?"
    at: dt.datetime | None = None
    actor: str = "?"
    team: str = "?"


class Codec:
    """Encodes events to msgpack and decodes them back; unknown types become ``UnknownEvent``."""

    def __init__(self, types: tuple[type[Event], ...] = ALL_EVENTS) -> None:
        union = Union[types]  # type: ignore[valid-type]  # noqa: UP007 - a runtime tuple of types
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(union)
        self._loose = msgspec.msgpack.Decoder(_Loose)
        self._raw = msgspec.msgpack.Decoder(dict[str, Any])
        self._array = msgspec.msgpack.Decoder(list[msgspec.Raw])

    def encode(self, event: Event) -> bytes:
        return self._encoder.encode(event)

    def decode(self, data: bytes) -> Event | UnknownEvent:
        try:
            return self._decoder.decode(data)
        except msgspec.DecodeError:
            return self._decode_unknown(data)

    def decode_many(self, data: bytes) -> list[Event | UnknownEvent]:
        """A msgpack array of encoded events (a batched log entry); each is decoded on its own,
        so one unknown event does not hide the others."""
        try:
            items = self._array.decode(data)
        except msgspec.DecodeError:
            return [self._decode_unknown(data)]
        return [self.decode(item) for item in items]  # Raw is bytes-like

    def _decode_unknown(self, data: bytes) -> UnknownEvent:
        try:
            loose = self._loose.decode(data)
            raw = self._raw.decode(data)
        except msgspec.DecodeError:
            return UnknownEvent("<undecodable>", "?", None, "?", "?", {"bytes": len(data)})
        return UnknownEvent(loose.type, loose.id, loose.at, loose.actor, loose.team, raw)
