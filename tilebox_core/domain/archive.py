"""The archive's rules (issue 14): where a log stream's segments are stored and what they are
called, how far a log may be archived and trimmed, and what the archive record of a stream says.
Pure: the object store is ``tilebox_core.archive``, the Redis side ``redis.archivelog``.

A segment's object name is ``<directory>/<first>-<last>-<digest>.seg``, its first and last
positions zero-padded (``<ms>.<seq>``, 20 digits each): stream ids start with the server's
millisecond clock, so a listing of a stream's directory, in name order, is its time index, and
``--since/--until`` pick segments by name without reading any.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable, Sequence
from typing import NamedTuple, Protocol

import msgspec

from .projection import DEFAULT_RETENTION_SECONDS
from .segments import Segment

SUFFIX = ".seg"
# A segment: up to this many entries or (raw) bytes, whichever comes first; small enough that
# archiving one is quick (a few tens of ms) and a reader that needs one entry fetches little.
SEGMENT_ENTRIES = 10_000
SEGMENT_BYTES = 4 * 1024 * 1024
# How long the control log's entries stay live (the retention helper makes it per team; until
# then, this default, a parameter of the archiver).
# The jobs index is scored by the server's time at submission (submit.lua), read just before the
# job's first entry is appended, whose id may be stamped up to a millisecond earlier (a script's
# commands see the time it started): the task log is trimmed this much before its oldest job.
INDEX_MARGIN_MS = 1000
# One archiver per team: it holds a lease for this long, renewed every pass.
LEASE_MS = 60_000
# How often a background archiver (in a release runner) looks for work.
INTERVAL_SECONDS = 30.0
NONE = "0-0"  # the position of nothing: no entry archived yet
# A MINID above every stream id: trim (and archive) all of it.
EVERYTHING = "18446744073709551615-18446744073709551615"


def order(position: str) -> tuple[int, int]:
    """A stream id as a sortable pair; a bare millisecond timestamp means its last id, ``+`` the
    end of the stream."""
    if position == "+":
        return (2**64, 0)
    ms, dash, seq = position.partition("-")
    return int(ms), int(seq) if dash else 2**64 - 1


def successor(position: str) -> str:
    """The smallest stream id after ``position``: the MINID that trims up to it, inclusive."""
    ms, seq = order(position)
    return f"{ms}-{seq + 1}" if seq < 2**64 - 1 else f"{ms + 1}-0"


def earlier(a: str, b: str) -> str:
    return a if order(a) <= order(b) else b


# --- the trim point -----------------------------------------------------------------------------


def trim_point(
    log: str,
    *,
    now_ms: int,
    retention_ms: int = DEFAULT_RETENTION_SECONDS * 1000,
    oldest_job_ms: int | None = None,
    margin_ms: int = INDEX_MARGIN_MS,
) -> str:
    """The MINID up to which (exclusive) log ``log``'s entries may leave Redis: archived first,
    then trimmed. The control log keeps the entries younger than ``retention_ms`` live (its
    projection starts from the snapshot archived with it). A task log keeps everything from its
    shard's oldest job still in the jobs index on (minus ``margin_ms``): events leave the live
    log once their jobs are gone (retention deletes them), and all of it when no job is left;
    but no entry older than ``retention_ms`` either, so that a job that never ends (queued for
    a cluster nobody serves) does not hold the log's window open for ever. (History reads the
    archive and the live log as one: an archived event of a job still in Redis is found.)"""
    aged = max(now_ms - retention_ms + 1, 0)  # every entry that old (MINID is exclusive)
    if log == "control":
        return f"{aged}-0"
    if oldest_job_ms is None:
        return EVERYTHING
    return f"{max(oldest_job_ms - margin_ms, aged)}-0"


# --- names --------------------------------------------------------------------------------------


def directory(prefix: str, team: str, tag: str, log: str) -> str:
    """The folder of the segments of log ``log`` in hash tag ``tag`` (the control plane's, or a
    shard's: one stream each) of ``team`` under key prefix ``prefix``."""
    return "/".join(urllib.parse.quote(part, safe="") for part in (prefix, team, tag, log))


class SegmentName(NamedTuple):
    """A stored segment as its object name says: where it is, its positions and digest."""

    path: str
    first: str
    last: str
    digest: str  # "sha256:<hex>", the segment's name in the chain (``Segment.previous``)


def _pad(position: str) -> str:
    ms, seq = order(position)
    return f"{ms:020d}.{seq:020d}"


def _unpad(text: str) -> str:
    ms, _, seq = text.partition(".")
    return f"{int(ms)}-{int(seq)}"


def segment_name(folder: str, first: str, last: str, digest: str) -> SegmentName:
    hexdigest = digest.removeprefix("sha256:")
    return SegmentName(
        f"{folder}/{_pad(first)}-{_pad(last)}-{hexdigest}{SUFFIX}", first, last, digest
    )


def parse_name(path: str) -> SegmentName | None:
    """The segment an object's path names; None for an object that is not one."""
    base = path.rpartition("/")[2]
    if not base.endswith(SUFFIX):
        return None
    parts = base.removesuffix(SUFFIX).split("-")
    if len(parts) != 3 or len(parts[2]) != 64:
        return None
    try:
        return SegmentName(path, _unpad(parts[0]), _unpad(parts[1]), "sha256:" + parts[2])
    except ValueError:
        return None


def covering(names: Iterable[SegmentName], after: str, until: str) -> list[SegmentName]:
    """The segments (``names`` in order) holding entries after ``after`` up to ``until``."""
    low, high = order(after), order(until)
    return [n for n in names if order(n.last) > low and order(n.first) <= high]


class SegmentSource(Protocol):
    """Where a reader finds archived segments (``tilebox_core.archive.ObjectArchive``)."""

    def listing(self, folder: str, through: str = NONE) -> Sequence[SegmentName]:
        """The segments of ``folder``, oldest first; listed again if the last one known ends
        before ``through``."""
        ...

    def load(self, name: SegmentName) -> Segment:
        """The segment, checked to be what its name says (``segments.SegmentError`` if not)."""
        ...


# --- the record ---------------------------------------------------------------------------------


class ArchiveRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What Redis keeps of a log stream's archive (a hash beside the stream,
    ``keys.archive_record``): how far it is archived, the last segment's digest and the chain hash
    it ends with, totals, and the segment being put (``pending``), if one is."""

    position: str = NONE  # the last archived entry's position
    digest: str = ""  # the last segment's; "" none yet
    chain: str = ""  # the h its last entry ends with; "" none (or not chained yet)
    segments: int = 0
    entries: int = 0
    events: int = 0
    bytes: int = 0
    pending: str = ""  # the digest of a segment sealed to be put, not recorded yet
    pending_last: str = ""  # its last position
    actor: str = ""  # who archived last
    snapshot_position: str = ""  # the control log: where its stored projection snapshot is


class StreamStatus(msgspec.Struct, frozen=True, kw_only=True):
    """``tilebox archive status`` for one log stream."""

    log: str
    stream: str
    archived_to: str  # position ("0-0": nothing archived)
    segments: int
    entries: int  # archived
    events: int
    bytes: int  # compressed, in the archive
    live_entries: int  # in Redis
    pending: str = ""


class ArchivePass(msgspec.Struct, frozen=True, kw_only=True):
    """What one archiver pass did on one log stream."""

    log: str
    stream: str
    segments: int = 0  # put and recorded
    entries: int = 0
    events: int = 0
    bytes: int = 0
    trimmed: int = 0  # entries trimmed from Redis
    skipped: str = ""  # why it was not archived (a role that may not), "" it was
