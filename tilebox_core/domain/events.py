"""The event catalog: every state change is one of these, encoded with msgspec as a tagged union.

Schema evolution: a new field always gets a default; a field's type never changes; a tag is never
reused for another meaning. Events are frozen and carry their own id, time, actor and team. Fields
at their default are left out of the encoding (decoding restores them): smaller log entries.

Two encodings (``Codec``). Control-plane events, few and read by people, are msgpack maps keyed by
field name (``Codec.encode``). Task-plane events, a few per task and most of a team's memory, are
written to the task logs compact (``Codec.compact``): a msgpack array ``[tag, id, at, actor,
*payload]`` with the numeric tag of ``WIRE_TAGS`` and the payload fields in the order of
``WIRE_FIELDS`` (trailing ones at their default left out), UUIDs as their 16 bytes, no team (the
log's key names it) and no actor when it is the one the entry records (field ``a``). A reader tells
the two apart by the first byte (map or array) and reads both, so logs written before keep reading.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypedDict, Union

import msgspec
from uuid_utils import UUID as _UUID


class Event(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag_field="type",
    tag=True,
    omit_defaults=True,
    gc=False,
):  # (gc=False: never in a reference cycle, so not tracked: a replay makes millions of them)
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


# --- the compact form of task-plane events (Codec.compact) --------------------------------------

WIRE_TAGS: dict[type[Event], int] = {
    JobSubmitted: 1,
    TaskSubmitted: 2,
    TaskClaimed: 3,
    TaskCompleted: 4,
    TaskFailed: 5,
    TaskLeaseExpired: 6,
    TaskReleased: 7,
    JobRetried: 8,
    JobCancelled: 9,
    TaskSkipped: 10,
    JobsDeleted: 12,
}
"""The tag of each task-plane event type in its compact form. Stable forever: a tag is never
renumbered nor reused; a new event type takes the next free number (11 is CLAIM_WITH_RESULT)."""

CLAIM_WITH_RESULT = 11
"""The tag of a TaskClaimed recorded with its result (``Codec.compact_claim``): ``[11, id, at,
actor]``, its job, task, runner and release those of the event after it in its entry, a
TaskCompleted, TaskFailed or TaskSkipped. Most claims are recorded so (fast tasks): half the
bytes of a task's claim and result."""

WIRE_FIELDS: dict[type[Event], tuple[str, ...]] = {
    JobSubmitted: ("job_id", "name", "cluster", "root_task_ids", "max_retries"),
    TaskSubmitted: (
        "job_id", "task_id", "name", "version", "cluster", "input", "parent_id", "depends_on",
        "max_retries", "optional",
    ),
    TaskClaimed: ("job_id", "task_id", "runner_id", "release_id"),
    TaskCompleted: (
        "job_id", "task_id", "runner_id", "compute_seconds", "release_id", "subtask_ids",
        "progress", "display",
    ),
    TaskFailed: (
        "job_id", "task_id", "runner_id", "error", "compute_seconds", "release_id", "will_retry",
        "reason", "traceback", "display",
    ),
    TaskLeaseExpired: ("job_id", "task_id", "previous_runner_id", "runner_id", "deliveries"),
    TaskReleased: ("job_id", "task_id", "runner_id"),
    JobRetried: ("job_id", "task_ids"),
    JobCancelled: ("job_id",),
    TaskSkipped: ("job_id", "task_id", "runner_id", "release_id"),
    JobsDeleted: ("job_ids", "reason"),
}  # fmt: skip
"""The payload of each compact event: its fields after ``[tag, id, at, actor]``, in this order.
Stable forever, as the tags: a new field (it has a default) is appended, never inserted; fields
at their default at the end are left out of an entry (decoding restores them), so the fields
most often at their default come last."""

# Fields holding ids (UUIDs as text, ``ids.new_id``): compact as their 16 bytes. Any other text
# (an id of another origin) is kept as text; the reader tells them apart by msgpack type.
_ID_FIELDS = frozenset({"id", "job_id", "task_id", "parent_id", "release_id"})
_ID_LISTS = frozenset({"root_task_ids", "depends_on", "subtask_ids", "task_ids", "job_ids"})
_BASE = ("id", "at", "actor", "team")
_COMPACT_FIRST = frozenset([*range(0x90, 0xA0), 0xDC, 0xDD])  # a msgpack array begins so


_ENCODE = msgspec.msgpack.Encoder().encode
_ClaimAhead: Any = msgspec.defstruct(
    "CompactClaimWithResult", [("id", Any), ("at", dt.datetime), ("actor", str | None)],
    array_like=True, tag=CLAIM_WITH_RESULT, frozen=True, gc=False,
)  # fmt: skip
_CLAIM_RESULT_TYPES = (TaskCompleted, TaskFailed, TaskSkipped)


class _Malformed(ValueError):
    """A compact event whose fields do not decode (corrupt, or not ours)."""


def _id_bytes(text: str) -> bytes | str:
    """A UUID in canonical text (lowercase and hyphenated, as ``ids.new_id`` makes them) as its
    16 bytes; any other text as it is, so that decoding gives back exactly what was encoded.
    (A 36-character UUID parses only when hyphenated in the canonical places.)"""
    if len(text) == 36 and text.lower() == text:
        try:
            return _UUID(text).bytes
        except ValueError:
            pass
    return text


def _id_text(value: Any) -> str:
    """An id as ``_id_bytes`` encoded it, as text again."""
    if type(value) is bytes and len(value) == 16:
        return str(_UUID(bytes=value))  # (in Rust: two thirds of slicing its hex in Python)
    if type(value) is str:
        return value
    raise _Malformed(f"an id is {type(value).__name__}, not 16 bytes or text")


# The compact form is on every runner's path (a few events per task), so each event type gets an
# encoder and a decoder written out for its layout, generated from WIRE_FIELDS (as dataclasses and
# namedtuple generate theirs): a loop over a layout costs a runner about twice as much per event.
_ENCODER = """\
def encode(event, me, _ids):
    actor = event.actor
    v = [{tag}, _idb(event.id), event.at, None if actor == me else actor, {payload}]
{trim}    return _encode(v)
"""
_DECODER = """\
def decode(w, actor, team, me, _t):
    named = w.actor
    return _cls(id=_idt(w.id), at=w.at, team=team,
                actor=actor if actor is not None else named if named is not None else me,
                {payload})
"""


class _Layout(NamedTuple):
    """One event type in compact form: what decodes it and the functions written for it."""

    cls: type[Event]
    struct: type[msgspec.Struct]  # array-like, tagged: what an entry's array decodes into
    encode: Callable[..., bytes]  # (event, the codec's actor, its id encoder) -> bytes
    decode: Callable[..., Event]  # (struct, recorded actor, team, codec's actor, id decoder)


# An id as text, in a generated decoder: remembered (``_t``, the codec's ``_texts``) when it is
# bytes, as it is when it is text (inline: a call per id is a good part of a replay's time).
_TEXT = "(_t[x] if (x := {v}).__class__ is bytes else _idt(x))"


def _layout(cls: type[Event], tag: int) -> _Layout:
    names = WIRE_FIELDS[cls]
    info = {f.name: f for f in msgspec.structs.fields(cls)}
    if sorted(names) != sorted(info.keys() - set(_BASE)):
        raise TypeError(f"WIRE_FIELDS[{cls.__name__}] must list each of its fields once")
    fields: list[tuple[Any, ...]] = [("id", Any), ("at", dt.datetime), ("actor", str | None)]
    encoded, decoded, defaults = [], [], []
    for name in names:
        f = info[name]
        default = (
            f.default if f.default is not msgspec.NODEFAULT
            else f.default_factory() if f.default_factory is not msgspec.NODEFAULT
            else msgspec.NODEFAULT
        )  # fmt: skip
        defaults.append(default)
        if name in _ID_FIELDS and default is None:  # checked as they are read (_id_text)
            kind: Any = Any
            encoded.append(f"None if (x := event.{name}) is None else _ids(x)")
            decoded.append(f"{name}=None if (y := w.{name}) is None else {_TEXT.format(v='y')}")
        elif name in _ID_FIELDS:
            kind = Any
            encoded.append(f"_ids(event.{name})")
            decoded.append(f"{name}={_TEXT.format(v='w.' + name)}")
        elif name in _ID_LISTS:
            kind = list[Any]
            encoded.append(f"[_ids(x) for x in s] if (s := event.{name}) else s")
            decoded.append(f"{name}=[{_TEXT.format(v='y')} for y in s] if (s := w.{name}) else s")
        else:
            kind = f.type
            encoded.append(f"event.{name}")
            decoded.append(f"{name}=w.{name}")
        fields.append((name, kind) if default is msgspec.NODEFAULT else (name, kind, default))
    # Trailing fields at their default are left out, last first, up to the first that is not.
    trim, indent = "", "    "
    for i in reversed(range(len(names))):
        if defaults[i] is msgspec.NODEFAULT:
            break
        trim += f"{indent}if v[-1] == _d{i}:\n{indent}    v.pop()\n"
        indent += "    "
    namespace: dict[str, Any] = {f"_d{i}": d for i, d in enumerate(defaults)}
    # (an event's own id is never seen again: converted as it is, not remembered)
    namespace.update(_idb=_id_bytes, _idt=_id_text, _encode=_ENCODE, _cls=cls)
    exec(_ENCODER.format(tag=tag, payload=", ".join(encoded), trim=trim), namespace)
    exec(_DECODER.format(payload=", ".join(decoded)), namespace)
    struct = msgspec.defstruct(
        f"Compact{cls.__name__}", fields, array_like=True, tag=tag, frozen=True, gc=False
    )
    return _Layout(cls, struct, namespace["encode"], namespace["decode"])


_LAYOUTS = {cls: _layout(cls, tag) for cls, tag in WIRE_TAGS.items()}
_CLAIM_RESULTS = frozenset(
    [*_CLAIM_RESULT_TYPES, *(_LAYOUTS[cls].struct for cls in _CLAIM_RESULT_TYPES)]
)


class _Remembered(dict[Any, Any]):
    """What ``make`` made of each key lately: a dict that fills itself, cleared when it holds
    ``bound`` (what it holds is small and recurs within a few events, or a few thousand)."""

    def __init__(self, make: Callable[[Any], Any], bound: int = 4096) -> None:
        super().__init__()
        self._make = make
        self._bound = bound

    def __missing__(self, key: Any) -> Any:
        if len(self) >= self._bound:
            self.clear()
        value = self[key] = self._make(key)
        return value


class Codec:
    """Encodes events to msgpack and decodes them back; unknown types become ``UnknownEvent``.

    ``team``: the team whose logs it reads, the team of every compact event (which names none);
    ``actor``: who the store it serves records events as (an entry's field ``a``), left out of
    the compact events that name it. One instance per store: it keeps small caches."""

    def __init__(
        self, types: tuple[type[Event], ...] = ALL_EVENTS, *, team: str = "",
        actor: str | None = None,
    ) -> None:  # fmt: skip
        union = Union[types]  # type: ignore[valid-type]  # noqa: UP007 - a runtime tuple of types
        self.team = team
        self.actor = actor
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(union)
        self._loose = msgspec.msgpack.Decoder(_Loose)
        self._raw = msgspec.msgpack.Decoder(dict[str, Any])
        self._array = msgspec.msgpack.Decoder(list[msgspec.Raw])
        self._any = msgspec.msgpack.Decoder(list[Any])
        # recorded actors (field 'a'), decoded once each; ids decoded and encoded lately (a task's
        # recur in its few events; an event's own id does not, and is converted directly)
        self._actors = _Remembered(lambda recorded: recorded.decode(errors="replace"))
        # a job's and a task's ids recur in its events, which a replay of a busy log meets
        # thousands of events apart (a batch submitted, then run): ~10 MiB at most
        self._texts = _Remembered(_id_text, 65_536)
        self._bytes = _Remembered(_id_bytes).__getitem__
        layouts = [layout for cls, layout in _LAYOUTS.items() if cls in types]
        self._encoders = {layout.cls: layout.encode for layout in layouts}
        self._decoders = {layout.struct: layout.decode for layout in layouts}
        structs = (*(layout.struct for layout in layouts), _ClaimAhead)
        compact = Union[structs]  # type: ignore[valid-type]  # noqa: UP007 - a runtime tuple
        self._compact = msgspec.msgpack.Decoder(compact)
        self._compact_batch = msgspec.msgpack.Decoder(list[compact])

    # --- encoding -------------------------------------------------------------------------------

    def encode(self, event: Event) -> bytes:
        """The map form (control-plane logs, and any event outside WIRE_TAGS)."""
        return self._encoder.encode(event)

    def compact(self, event: Event) -> bytes:
        """The compact form of a task-plane event (see the module's docstring); the map form of
        any other."""
        encode = self._encoders.get(type(event))
        if encode is None:
            return self._encoder.encode(event)
        return encode(event, self.actor, self._bytes)

    def compact_claim(self, claim: TaskClaimed, result: Event | None) -> bytes:
        """The compact form of ``claim`` recorded with ``result``, the event right after it in
        the same entry (the finish script keeps a task's events together and in order): when the
        result names the same job, task, runner and release, the claim is only its id, time and
        actor (CLAIM_WITH_RESULT), which a reader completes from the result."""
        named = (claim.job_id, claim.task_id, claim.runner_id, claim.release_id)
        if isinstance(result, _CLAIM_RESULT_TYPES) and named == (
            (result.job_id, result.task_id, result.runner_id, result.release_id)
        ):
            actor = claim.actor
            return self._encoder.encode(
                (CLAIM_WITH_RESULT, _id_bytes(claim.id), claim.at,
                 None if actor == self.actor else actor)
            )  # fmt: skip
        return self.compact(claim)

    # --- decoding -------------------------------------------------------------------------------

    def decode_entry(self, fields: Sequence[bytes]) -> list[Event | UnknownEvent]:
        """The events of a raw log entry, ``[field, value, ...]`` as the stream holds it (and an
        archive segment keeps it): one event in field ``e``, or a batch (a msgpack array, as the
        task scripts append them) in field ``b``; an entry with neither reads as one undecodable
        event. Field ``a``, the actor the script recorded them as (see actor.lua), is the actor
        of each; entries written before it was recorded have none."""
        kind: bytes | None
        body: bytes
        recorded: bytes | None
        if len(fields) > 3 and fields[2] == b"a":  # [kind, body, a, actor, h, hash]: the scripts'
            kind, body, recorded = fields[0], fields[1], fields[3]
        else:
            kind, body, recorded = _entry_parts(fields)
        actor = None if recorded is None else self._actors[recorded]
        if kind == b"e":
            return [self.decode(body, actor)]
        if kind == b"b":
            return self.decode_many(body, actor)
        return [self.decode(b"", actor)]

    def decode(self, data: bytes, actor: str | None = None) -> Event | UnknownEvent:
        """One encoded event, either form; ``actor``, the entry's recorded actor, is its actor.
        (A claim recorded with its result reads only with the result: ``decode_many``.)"""
        if data and data[0] in _COMPACT_FIRST:
            return self._decode_compact(data, actor, None)
        try:
            event: Event | UnknownEvent = self._decoder.decode(data)
        except msgspec.DecodeError:
            event = self._decode_unknown(data)
        if actor is not None and event.actor != actor:
            event = msgspec.structs.replace(event, actor=actor)
        return event

    def decode_many(self, data: bytes, actor: str | None = None) -> list[Event | UnknownEvent]:
        """A msgpack array of encoded events (a batched log entry); each is decoded on its own,
        so one unknown event does not hide the others."""
        if _first_item(data) in _COMPACT_FIRST:
            try:  # all of them compact and known (as the task scripts write them): in one go
                wires = self._compact_batch.decode(data)
                # (``_event`` inlined: the hot loop of a replay, a call less per event)
                decoders, team, texts = self._decoders, self.team, self._texts
                me = self.actor if self.actor is not None else "?"
                following = wires[1:]
                following.append(None)
                return [
                    self._claim(w, actor, after) if type(w) is _ClaimAhead
                    else decoders[type(w)](w, actor, team, me, texts)
                    for w, after in zip(wires, following)
                ]  # fmt: skip
            except (msgspec.DecodeError, _Malformed):
                pass  # one of them is not: each on its own
        try:
            items = [bytes(item) for item in self._array.decode(data)]
        except msgspec.DecodeError:
            return [self.decode(data if data else b"", actor)]
        events: list[Event | UnknownEvent] = [None] * len(items)  # type: ignore[list-item]
        for i in reversed(range(len(items))):  # a claim ahead of its result reads the result
            item = items[i]
            if item and item[0] in _COMPACT_FIRST:
                events[i] = self._decode_compact(
                    item, actor, events[i + 1] if i + 1 < len(items) else None
                )
            else:
                events[i] = self.decode(item, actor)
        return events

    def _decode_compact(self, data: bytes, actor: str | None, after: Any) -> Event | UnknownEvent:
        """A compact event; ``after``, the event after it in its entry (or its struct), if any."""
        try:
            return self._event(self._compact.decode(data), actor, after)
        except (msgspec.DecodeError, _Malformed):
            return self._compact_unknown(data, actor)

    def _event(self, wire: Any, actor: str | None, after: Any) -> Event:
        """The event of a decoded compact struct: its ids as text, its team and actor filled. A
        claim recorded with its result takes its job, task, runner and release from ``after``,
        the result (as an event, or the struct it decodes from)."""
        if type(wire) is _ClaimAhead:
            return self._claim(wire, actor, after)
        decode = self._decoders[type(wire)]
        me = self.actor if self.actor is not None else "?"
        return decode(wire, actor, self.team, me, self._texts)

    def _claim(self, wire: Any, actor: str | None, after: Any) -> TaskClaimed:
        """The TaskClaimed of a claim recorded with its result (CLAIM_WITH_RESULT): its job,
        task, runner and release are ``after``'s, the result's (an event, or its struct)."""
        if type(after) not in _CLAIM_RESULTS:
            raise _Malformed("a claim recorded with its result, not followed by a result")
        text = self._text
        # (the claim's own id converted as it is: it is never seen again)
        return TaskClaimed(
            id=_id_text(wire.id), at=wire.at, team=self.team,
            actor=actor if actor is not None else self._named(wire.actor),
            job_id=text(after.job_id), task_id=text(after.task_id), runner_id=after.runner_id,
            release_id=None if after.release_id is None else text(after.release_id),
        )  # fmt: skip

    def _named(self, named: str | None) -> str:
        """The actor of a compact event whose entry records none: the one it names, else (left
        out) the codec's."""
        if named is not None:
            return named
        return self.actor if self.actor is not None else "?"

    def _text(self, value: Any) -> str:
        """``_id_text``, remembered for a while: a task's ids recur in its few events."""
        return self._texts[value] if type(value) is bytes else _id_text(value)

    def _compact_unknown(self, data: bytes, actor: str | None) -> UnknownEvent:
        """A compact event of a tag this version does not know, or that does not decode."""
        try:
            values = self._any.decode(data)
        except msgspec.DecodeError:
            return UnknownEvent("<undecodable>", "?", None, "?" if actor is None else actor,
                                self.team, {"bytes": len(data)})  # fmt: skip
        tag = values[0] if values else "?"
        try:
            event_id = _id_text(values[1]) if len(values) > 1 else "?"
        except _Malformed:
            event_id = "?"
        at = values[2] if len(values) > 2 and isinstance(values[2], dt.datetime) else None
        named = values[3] if len(values) > 3 and isinstance(values[3], str) else None
        return UnknownEvent(f"#{tag}", event_id, at, actor if actor is not None else
                            self._named(named), self.team, {"compact": values})  # fmt: skip

    def _decode_unknown(self, data: bytes) -> UnknownEvent:
        try:
            loose = self._loose.decode(data)
            raw = self._raw.decode(data)
        except msgspec.DecodeError:
            return UnknownEvent("<undecodable>", "?", None, "?", "?", {"bytes": len(data)})
        return UnknownEvent(loose.type, loose.id, loose.at, loose.actor, loose.team, raw)


def _first_item(data: bytes) -> int:
    """The first byte of the first item of the msgpack array ``data`` (-1: none, not an array)."""
    if not data:
        return -1
    first = data[0]
    at = 1 if 0x90 <= first <= 0x9F else 3 if first == 0xDC else 5 if first == 0xDD else 0
    return data[at] if at and len(data) > at else -1


def _entry_parts(fields: Sequence[bytes]) -> tuple[bytes | None, bytes, bytes | None]:
    """An entry's (event field, its value, field a) in any layout; None for a field it lacks."""
    kind: bytes | None = None
    body = b""
    actor: bytes | None = None
    for index in range(0, len(fields) - 1, 2):
        name = fields[index]
        if (name == b"e" or name == b"b") and kind is None:
            kind, body = name, fields[index + 1]
        elif name == b"a":
            actor = fields[index + 1]
    return kind, body, actor
