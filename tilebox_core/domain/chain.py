"""The hash chain of an event log: what makes its history tamper-evident.

Every entry of a log stream (the control log, each shard's task log) carries, in field ``h``,
``sha1hex(prev .. "\\n" .. kind .. "\\n" .. body .. "\\na\\n" .. actor)``: ``prev`` is the ``h`` of the
entry before it in the same stream (``GENESIS`` for the first), ``kind`` the entry's event field
(``e``: one event, ``b``: a batch), ``body`` its value, the encoded event(s), byte for byte, and
``actor`` its field ``a``, the user the script recorded the events as (redis/lua/actor.lua).
Entries chained before actors were recorded have no ``a``, and their content ends with the body. The append scripts
(append.lua, tasklib.lua's flush_events) compute it with ``redis.sha1hex`` and keep the stream's
last ``h`` in a key beside it (``<log>:head``); this module is the one definition the verifier
recomputes it by (tests/test_chain.py checks that the two agree).

What it detects: an entry's body or hash edited, an entry deleted, entries reordered or inserted,
the chain's field removed, the log's last entries deleted (the head names a hash no entry has).
What it cannot: someone who can write the server can recompute every hash after an edit; the
chain is evidence once a head (or an archive segment's digest) is kept somewhere they cannot
write. The stream id is not hashed: it is the server's clock at append time, which the events'
own timestamps (hashed) record too.

Entries appended before the chain existed have no ``h``. They may only come before a stream's
first chained entry, which links to ``GENESIS``; ``verify`` reports where the chain starts.

``verify`` takes any iterable of entries and a starting hash, so that archived segments can carry
the chain on: verify a segment's entries from the hash its predecessor ended with.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

GENESIS = "0" * 40  # the ``prev`` of a stream's first chained entry
FIELD = b"h"
ACTOR = b"a"  # the recorded actor, hashed with the entry
KINDS = (b"e", b"b")  # an entry's event fields: one event, a msgpack array of events

# An entry as read from a stream, [position, [field, value, field, value, ...]] (raw bytes, as
# the server sends it: a list or a tuple).
Entry = Sequence[Any]


def link(prev: str, kind: bytes, body: bytes, actor: bytes | None = None) -> str:
    """The ``h`` of an entry whose event field is ``kind`` holding ``body`` (and whose field
    ``a`` is ``actor``, if it has one), after an entry whose ``h`` is ``prev``: the canonical
    content, as the append scripts hash it."""
    recorded = b"" if actor is None else b"\na\n" + actor
    return hashlib.sha1(prev.encode() + b"\n" + kind + b"\n" + body + recorded).hexdigest()


def events_in(kind: bytes, body: bytes) -> int:
    """How many events an entry holds: one in ``e``; in ``b``, the count its msgpack array header
    gives (fixarray, array 16, array 32), read without decoding the events."""
    if kind == b"e" or not body:
        return 1
    first = body[0]
    if 0x90 <= first <= 0x9F:
        return first - 0x90
    if first == 0xDC and len(body) >= 3:
        return int.from_bytes(body[1:3], "big")
    if first == 0xDD and len(body) >= 5:
        return int.from_bytes(body[1:5], "big")
    return 1  # not an array: it reads as one undecodable event


class BreakKind(enum.StrEnum):
    MISMATCH = "mismatch"  # its h is not the hash of its content after the entry before it
    UNCHAINED = "unchained"  # no h (or no event field) after the chain started
    HEAD = "head"  # the stream's head names another hash than its last entry's
    SEGMENT = "segment"  # an archive segment altered, replaced, removed, or not the one recorded


class Break(NamedTuple):
    """Where a stream's chain breaks: the entry's position (stream id) and its number in what was
    verified (1: the first entry verified), or, for a head break, of the last entry (0: none)."""

    kind: BreakKind
    position: str
    number: int
    detail: str


class Verification(NamedTuple):
    """What ``verify`` found in one stream (or one run of its entries)."""

    entries: int  # entries read
    events: int  # events they hold
    unchained: int  # entries before the chain starts (appended before it existed)
    start: str | None  # position of the first chained entry verified, None if none
    last: str  # the h the verified entries end with: where the next run carries on from
    broken: Break | None

    @property
    def ok(self) -> bool:
        return self.broken is None


def verify(
    entries: Iterable[Entry],
    start: str | None = None,
    head: str | None = None,
    *,
    check_head: bool = True,
) -> Verification:
    """Recompute the chain over ``entries`` (in stream order) and stop at the first break.

    ``start`` None: the entries begin at the stream's beginning; entries without ``h`` may come
    first (appended before the chain existed), and the first chained one links to ``GENESIS``.
    ``start`` a hash: they carry on a chain that ended with it (an archive segment, the entry
    before ``--since``); every entry must be chained. With ``check_head``, ``head`` is the
    stream's head key as read with its last entry (None: absent): it must be the hash the
    entries end with (an empty, never chained stream has none).
    """
    prev = (GENESIS if start is None else start).encode()
    chained = start is not None
    count = events = unchained = 0
    first: str | None = None
    position: bytes | str = ""
    sha1, separators = hashlib.sha1, _SEPARATORS
    for position, fields in entries:
        count += 1
        # the common shape first, [kind, body, b"a", actor, b"h", hash], as the scripts write it
        if len(fields) == 6 and fields[4] == b"h" and fields[2] == b"a" and fields[0] in separators:
            kind, body, stored, recorded = fields[0], fields[1], fields[5], b"\na\n" + fields[3]
        elif len(fields) == 4 and fields[2] == b"h" and fields[0] in separators:
            kind, body, stored, recorded = fields[0], fields[1], fields[3], b""  # no actor yet
        else:
            kind, body, stored, actor = _parse(fields)
            recorded = b"" if actor is None else b"\na\n" + actor
            if kind is None or stored is None:
                if chained or stored is not None:
                    detail = (
                        "the entry has no event field (e or b): it was rewritten" if kind is None
                        else "the entry has no hash field h, though the chain started before "
                        "it: it was rewritten or inserted"
                    )  # fmt: skip
                    return _broken(
                        count, events, unchained, first, prev, BreakKind.UNCHAINED, position,
                        detail,
                    )  # fmt: skip
                unchained += 1  # appended before the chain existed
                events += 1 if kind is None else events_in(kind, body)
                continue
        # link(), inlined on bytes: this loop is the verifier's whole cost
        computed = sha1(prev + separators[kind] + body + recorded).hexdigest().encode()
        if computed != stored:
            return _broken(
                count, events, unchained, first, prev, BreakKind.MISMATCH, position,
                "its hash does not match its content and the entry before it: this entry was "
                "edited, or one before it deleted, inserted or moved",
            )  # fmt: skip
        if first is None:
            chained, first = True, _text(position)
        prev = computed
        events += 1 if kind == b"e" else events_in(kind, body)
    last = prev.decode()
    if check_head and head != (last if chained else None):
        if head is None:
            detail = "the stream has chained entries but no head key: it was deleted"
        elif not chained:
            detail = "the stream has a head but no chained entry: they were deleted or rewritten"
        else:
            detail = (
                f"its head is {head}, the last entry's hash {last}: entries after this one were "
                "deleted, or the head was changed"
            )
        return _broken(count, events, unchained, first, prev, BreakKind.HEAD, position, detail)
    return Verification(count, events, unchained, first, last, None)


_SEPARATORS = {b"e": b"\ne\n", b"b": b"\nb\n"}  # what link() puts around the kind


def _parse(fields: Sequence[bytes]) -> tuple[bytes | None, bytes, bytes | None, bytes | None]:
    """An entry's (event field, its value, h, a) in any layout; None for a field it lacks."""
    kind: bytes | None = None
    body = b""
    stored: bytes | None = None
    actor: bytes | None = None
    for i in range(0, len(fields) - 1, 2):
        name = fields[i]
        if name == FIELD:
            stored = fields[i + 1]
        elif name == ACTOR:
            actor = fields[i + 1]
        elif kind is None and name in _SEPARATORS:
            kind, body = name, fields[i + 1]
    return kind, body, stored, actor


def _broken(
    count: int, events: int, unchained: int, first: str | None, prev: bytes,
    kind: BreakKind, position: bytes | str, detail: str,
) -> Verification:  # fmt: skip
    """The break at entry ``count`` (or after it: the head), at ``position``."""
    return Verification(
        count, events, unchained, first, prev.decode(), Break(kind, _text(position), count, detail)
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class StreamAudit(NamedTuple):
    """One log stream's verification: ``log`` names it for people (``control``, ``tasks``, or
    ``tasks shard 3 of 12``), ``stream`` is its key; ``anchor`` the position of the entry the chain
    was taken up from (``--since``), None when checked from the stream's beginning. Its archived
    entries (``segments`` of them) count with its live ones in ``result``; a break in the
    archive is a ``SEGMENT`` break whose position names the segment (and the entry in it)."""

    log: str
    stream: str
    anchor: str | None
    result: Verification
    segments: int = 0  # archive segments verified before the live entries


class Audit(NamedTuple):
    """Every log stream of a team verified (``History.verify``)."""

    streams: list[StreamAudit]

    @property
    def ok(self) -> bool:
        return all(s.result.ok for s in self.streams)

    @property
    def entries(self) -> int:
        return sum(s.result.entries for s in self.streams)

    @property
    def events(self) -> int:
        return sum(s.result.events for s in self.streams)

    @property
    def broken(self) -> list[StreamAudit]:
        return [s for s in self.streams if not s.result.ok]
