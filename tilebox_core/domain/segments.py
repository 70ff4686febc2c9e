"""Archive segments of an event log (groundwork for issue 14's archive): immutable runs of a
stream's entries, stored elsewhere before they are trimmed from Redis.

A segment holds its entries exactly as the stream held them (position and raw fields, the hash
field ``h`` included), so the hash chain (domain.chain) carries on through it byte for byte: a
segment names the hash its first entry chains from (``chain_start``, the ``h`` of the entry before
it) and the one its last entry ends with (``chain_end``), and the digest of the segment before it
in the same stream (``previous``). It is msgpack, compressed with zstd, and named by the SHA-256
of those bytes: an edited byte changes its name, a replaced segment is not the one its successor
names, and entries rewritten with recomputed hashes no longer end with the hash the next segment
(or the live log) chains from.

Pure: encoding, naming and verifying; where segments are stored (obstore) and when the log is
trimmed is for the archiver.
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Iterable
from typing import NamedTuple

import msgspec
import zstandard

from . import chain

FORMAT = 1
ZSTD_LEVEL = 3


class Segment(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``entries`` of log ``log`` (its name in the team: ``control``, or ``tasks`` and the shard's
    tag), positions ``first`` to ``last``; ``previous`` the digest of the segment before it in
    the same stream (None: the first); ``chain_start`` the ``h`` its entries chain from, None
    while the stream's chain has not started (entries from before it may lead); ``chain_end``
    the ``h`` of its last entry, None if none of its entries is chained yet."""

    log: str
    first: str
    last: str
    previous: str | None
    chain_start: str | None
    chain_end: str | None
    entries: list[tuple[str, list[bytes]]]
    format: int = FORMAT


_decoder = msgspec.msgpack.Decoder(Segment)  # one decoder: twice as fast as msgpack.decode(type=)


class SegmentError(ValueError):
    """A segment's bytes are not the segment its name says (or not a segment at all)."""


class Sealed(NamedTuple):
    """A segment as sealed: its name (digest), bytes, content, and the events it holds."""

    name: str
    data: bytes
    segment: Segment
    events: int


def seal(
    log: str,
    entries: Iterable[chain.Entry],
    previous: str | None,
    chain_start: str | None,
) -> tuple[str, bytes]:
    """A segment of ``entries`` (raw, in stream order) as (its name, its bytes); its entries are
    verified first: a break is not archived (``SegmentError``)."""
    sealed = seal_segment(log, entries, previous, chain_start)
    return sealed.name, sealed.data


def seal_segment(
    log: str,
    entries: Iterable[chain.Entry],
    previous: str | None,
    chain_start: str | None,
) -> Sealed:
    """``seal``, with the segment and its number of events. The same entries after the same
    segment always give the same bytes (msgpack and zstd are deterministic): sealing again after
    a crash gives the segment that was sealed before."""
    rows = [
        (position if position.__class__ is str else position.decode(), list(fields))
        for position, fields in entries
    ]
    if not rows:
        raise SegmentError(f"a segment of {log} needs at least one entry")
    checked = chain.verify(rows, chain_start, check_head=False)
    if checked.broken is not None:
        b = checked.broken
        raise SegmentError(f"{log} breaks at {b.position} ({b.kind}): {b.detail}; not archived")
    segment = Segment(
        log=log, first=rows[0][0], last=rows[-1][0], previous=previous,
        chain_start=chain_start, entries=rows,
        chain_end=checked.last if chain_start is not None or checked.start is not None else None,
    )  # fmt: skip
    data = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(msgspec.msgpack.encode(segment))
    return Sealed(digest(data), data, segment, checked.events)


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def open_segment(name: str, data: bytes) -> Segment:
    """The segment stored as ``data`` under ``name``; ``SegmentError`` if it is not that one."""
    found = digest(data)
    if found != name:
        raise SegmentError(f"segment {name} holds bytes whose digest is {found}: it was altered")
    try:
        raw = zstandard.ZstdDecompressor().decompress(data)
        # Decoding makes ~10 containers an entry and no cycles: with the cyclic collector on,
        # they set off collections over everything the process holds (5x the decoding itself
        # in a replay of a million archived entries).
        collecting = gc.isenabled()
        gc.disable()
        try:
            return _decoder.decode(raw)
        finally:
            if collecting:
                gc.enable()
    except (zstandard.ZstdError, msgspec.DecodeError) as exc:
        raise SegmentError(f"segment {name} is not a readable segment: {exc}") from exc


class ArchiveCheck(NamedTuple):
    """What ``verify_segments`` found: the segments and entries checked, the hash the last one
    ends with (what the live log chains from), and the first problem (None: none): in segment
    ``at`` (its name), at entry ``position`` if it is in one of its entries."""

    segments: int
    entries: int
    events: int
    chain_end: str | None
    problem: str | None
    at: str | None = None
    position: str | None = None
    last: str | None = None  # the name of the last segment that verified


def verify_segments(
    stored: Iterable[tuple[str, bytes]], previous: str | None = None, *, anchored: bool = False
) -> ArchiveCheck:
    """Check a stream's segments, oldest first, as (name, bytes): each is what its name says,
    names the one before it, starts its chain where that one's ended, and its entries chain.

    ``anchored``: they are not the stream's first ones (``--since``): the first must name
    ``previous`` (the one before it, as listed), and its chain is taken up from the hash it says
    it starts with, as ``chain.verify`` takes up a stream's chain from the entry before."""
    count = entries = events = 0
    before: Segment | None = None
    before_name: str | None = previous if anchored else None
    for name, data in stored:
        try:
            segment = open_segment(name, data)
        except SegmentError as exc:
            return ArchiveCheck(count, entries, events, _end(before), str(exc), name, None,
                                before_name)  # fmt: skip
        if segment.previous != before_name:
            return ArchiveCheck(
                count, entries, events, _end(before),
                f"segment {name} follows {segment.previous}, not {before_name}: a segment was "
                "replaced, removed or moved", name, None, before_name,
            )  # fmt: skip
        expected_start = (
            segment.chain_start if anchored and before is None
            else None if before is None else before.chain_end
        )  # fmt: skip
        if segment.chain_start != expected_start:
            return ArchiveCheck(
                count, entries, events, _end(before),
                f"segment {name} chains from {segment.chain_start}, the one before it ended with "
                f"{expected_start}", name, None, before_name,
            )  # fmt: skip
        result = chain.verify(segment.entries, segment.chain_start, segment.chain_end)
        if result.broken is not None:
            b = result.broken
            return ArchiveCheck(
                count, entries + result.entries, events + result.events, _end(before),
                f"segment {name} breaks at entry {b.number} ({b.position}), {b.kind}: {b.detail}",
                name, b.position, before_name,
            )  # fmt: skip
        count, entries, events = count + 1, entries + result.entries, events + result.events
        before, before_name = segment, name
    return ArchiveCheck(count, entries, events, _end(before), None, None, None, before_name)


def _end(segment: Segment | None) -> str | None:
    return None if segment is None else segment.chain_end
