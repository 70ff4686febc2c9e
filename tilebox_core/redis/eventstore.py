"""The event store: the only code that talks to Redis for event logs, projections and artifacts.

Driver errors are translated here into the project's own errors (``StoreUnavailable``,
``ConcurrencyError``), so nothing above this module imports ``redis``.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from importlib import resources
from typing import Any, NamedTuple, ParamSpec, TypeVar

from tilebox_core.domain.archive import NONE, SegmentSource, covering, directory, earlier, order
from tilebox_core.domain.chain import FIELD, Entry, Verification, verify
from tilebox_core.domain.errors import ArtifactError
from tilebox_core.domain.events import Codec, Event, UnknownEvent
from tilebox_core.domain.ids import new_id
from tilebox_core.domain.tenancy import Identity

from .connection import Client, Routes, pack
from .errors import OPERATIONS, DriverError, translated
from .keys import Keys, archive_record, chain_head, parse_log

P = ParamSpec("P")
R = TypeVar("R")

CONTROL = "control"
PAGE = 5_000
# Replay reads smaller pages than ``read``: the driver parses a page into two lists per entry, and
# beyond ~350 entries (700 objects, CPython's gen-0 threshold) those lists survive young collections
# and trigger full ones over the whole projection. In a 1M-event replay (benchmarks/store_bench.py)
# 250 cut garbage collection from ~1 s to ~0.2 s, for a ~30 us loopback round trip per page; a
# distant server pays its round-trip time 20x more often than with PAGE.
REPLAY_PAGE = 250
CHUNK_BYTES = 512 * 1024
# How long an appended batch is remembered for de-duplication: a writer retries an append whose
# reply it lost within seconds (its retry policy); a day leaves room for any client, and keeps the
# dedup hash to a day or two of control-plane writes instead of every one ever made.
DEDUP_WINDOW_MS = 24 * 3600 * 1000
# ``verify_stream`` reads raw entries (no decoding) in large pages: a control-log entry is a few
# hundred bytes; a task-log entry may batch up to a thousand events.
VERIFY_PAGE = 2_000


class Stored(NamedTuple):
    """An event with its position (the stream entry id) in its log."""

    position: str
    event: Event | UnknownEvent


class AppendResult(NamedTuple):
    positions: list[str]  # of the events appended (a duplicate: of the first one, appended before)
    duplicate: bool  # the batch had been appended before; nothing was written


ProjectionOp = tuple[str, str, str]  # ("HSET", field, value) | ("HDEL", field, "")


def translate_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn driver exceptions into the project's error family where they enter. A refusal by the
    ACL names who was refused (the store's ``identity``) and what (by the method's name)."""
    operation = OPERATIONS.get(func.__name__, f"{func.__name__.strip('_').replace('_', ' ')}")

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except DriverError as exc:
            identity = getattr(args[0], "identity", None) if args else None
            if not isinstance(identity, Identity):
                identity = None
            raise translated(exc, identity=identity, operation=operation) from exc

    return wrapper


def load_script(name: str) -> str:
    return resources.files("tilebox_core.redis").joinpath("lua", f"{name}.lua").read_text()


class EventStore:
    """Event logs, checkpoints, materialised projections and artifacts of one team.

    ``actor`` is who the events it appends are recorded as (see ``Keys.actor``): the session's
    authenticated user, or with ACLs off (the ``default`` user) whoever the session says it is.
    ``identity``, who the session is connected as, names the user in a refusal's message."""

    def __init__(
        self,
        client: Client,
        keys: Keys,
        codec: Codec | None = None,
        dedup_window_ms: int = DEDUP_WINDOW_MS,
        *,
        actor: str,
        identity: Identity | None = None,
    ) -> None:
        self.actor = actor
        self.identity = identity
        self.redis = client
        self.dedup_window_ms = dedup_window_ms
        self.routes = Routes(client)
        self.keys = keys
        # the team names the team of every compact (task-plane) event, which names none; the
        # actor is left out of those that name the one their entry records
        self.codec = codec or Codec(team=keys.team, actor=actor)
        # Where the logs' archived entries are (tilebox_core.archive); None: read only the live
        # logs. Set by the session.
        self.archive: SegmentSource | None = None
        self._append = client.register_script(load_script("actor") + "\n" + load_script("append"))
        self._commit_artifact = client.register_script(load_script("artifact_commit"))

    # --- appending ------------------------------------------------------------------------------

    @translate_errors
    def append(
        self,
        log: str,
        events: Sequence[Event],
        expected: str | None = None,
        projection: Sequence[ProjectionOp] = (),
    ) -> AppendResult:
        """Append ``events`` atomically if the log's last entry is still at position ``expected``
        (``"0-0"``: the log is empty; ``None``: append whatever the log holds).

        Raises ``ConcurrencyError`` for a stale writer. Appending a batch whose first event id was
        appended before, within ``dedup_window_ms`` (and at most twice that), is a no-op that
        reports ``duplicate=True``. The events are recorded as the store's ``actor``'s (see
        actor.lua), whatever actor they name.
        """
        if not events:
            raise ValueError("append needs at least one event")
        args: list[Any] = ["" if expected is None else expected, len(events), self.dedup_window_ms]
        for event in events:
            args += (event.id, self.codec.encode(event))
        for op in projection:
            args += op
        reply = self._append(
            keys=[
                self.keys.log(log), self.keys.dedup(log), self.keys.deployments,
                self.keys.log_head(log), self.keys.dedup_previous(log), self.keys.actor(self.actor),
            ],
            args=args,
        )  # fmt: skip
        return AppendResult(positions=[_text(p) for p in reply[1:]], duplicate=reply[0] == 0)

    # --- reading --------------------------------------------------------------------------------

    def last_position(self, log: str) -> str:
        """The position of the log's last entry (``"0-0"`` when it is empty): what ``append``
        compares ``expected`` with."""
        return self.last_position_of(self.keys.log(log))

    @translate_errors
    def last_position_of(self, stream: str) -> str:
        """``last_position`` of the log stream ``stream`` (a key: a task-plane shard's log)."""
        last: Any = self.redis.xrevrange(stream, count=1)
        return _text(last[0][0]) if last else "0-0"

    @translate_errors
    def read(
        self, log: str, after: str = "0-0", until: str = "+", count: int = PAGE
    ) -> list[Stored]:
        """Up to ``count`` events after position ``after`` (exclusive) up to ``until`` (inclusive).

        Positions are stream ids; ``until`` may be a bare millisecond timestamp (server time).
        """
        return [
            _tuple_new(Stored, (position.decode(), event))
            for position, fields in self._xrange(self.keys.log(log), after, until, count)
            for event in self.entry_events(fields)
        ]

    def replay(self, log: str, after: str = "0-0", until: str = "+") -> Iterator[Stored]:
        """Every event after ``after`` up to ``until``, in order, read page by page."""
        return self.replay_stream(self.keys.log(log), after, until)

    def replay_stream(self, stream: str, after: str = "0-0", until: str = "+") -> Iterator[Stored]:
        """``replay`` of the log stream ``stream`` (a key: a task-plane shard's log): its archived
        entries (``archive``), then its live ones, as one history. Each page of live entries is
        read with the stream's archived position (``_live_page``): entries archived and trimmed
        meanwhile are read from the archive, and entries archived but not trimmed yet only
        once, from the archive."""
        decoded, archive = self.decode_entries, self.archive
        if archive is None:
            while True:
                entries = self._xrange(stream, after, until, REPLAY_PAGE)
                yield from decoded(entries)
                if len(entries) < REPLAY_PAGE:
                    return
                after = _text(entries[-1][0])
        record = archive_record(stream)
        while True:
            archived, entries = self._live_page(stream, record, after, until)
            if order(archived) > order(after):
                end = earlier(archived, until)
                yield from decoded(self.archived_entries(stream, after, end))
                if end != archived:
                    return  # ``until`` is in the archive
                after = archived
                continue  # the live entries after it
            yield from decoded(entries)
            if len(entries) < REPLAY_PAGE:
                return
            after = _text(entries[-1][0])

    def decode_entries(self, entries: Iterable[Entry]) -> Iterator[Stored]:
        """The events of raw entries ``[position, [field, value, ...]]``, as XRANGE returns them
        or a segment holds them: the one decoding of live and archived entries."""
        entry_events = self.codec.decode_entry  # (what ``entry_events`` calls: a call less)
        # Decoded one at a time as the caller consumes them (the hot loop of a replay): a page
        # of decoded events is never alive at once, which spares the garbage collector.
        for position, fields in entries:
            text = position if position.__class__ is str else position.decode()
            for event in entry_events(fields):
                yield _tuple_new(Stored, (text, event))

    def archive_folder(self, stream: str) -> str:
        """Where the segments of log stream ``stream`` are stored (domain.archive)."""
        tag, log = parse_log(stream)
        return directory(self.keys.prefix, self.keys.team, tag, log)

    def archived_entries(self, stream: str, after: str, until: str) -> Iterator[Entry]:
        """The raw archived entries of ``stream`` after ``after`` up to ``until``, found by the
        segments' names (their time index): only the segments holding them are read."""
        archive = self.archive
        if archive is None:
            return
        low, high = order(after), order(until)
        for name in covering(archive.listing(self.archive_folder(stream), until), after, until):
            entries = archive.load(name).entries
            if order(name.first) > low and order(name.last) <= high:
                yield from entries
                continue
            for entry in entries:
                at = order(entry[0])
                if at > high:
                    return
                if at > low:
                    yield entry

    @translate_errors
    def _live_page(self, stream: str, record: str, after: str, until: str) -> tuple[str, Any]:
        """(the stream's archived position, its entries after ``after`` up to ``until``): the
        entries first, then the position, in one round trip. An archived position at or before
        ``after`` read after the entries means the stream was trimmed no further when they were
        read (it is trimmed only up to its archived position, which only grows): the page has
        every entry. (No MULTI: a read-only ACL user, +@read, may not run it.)"""
        commands = [
            pack("XRANGE", stream, f"({after}", until, "COUNT", REPLAY_PAGE),
            pack("HGET", record, "position"),
        ]

        def send(connection: Any) -> Any:
            connection.send_packed_command(commands)
            return [connection.read_response() for _ in commands]

        entries, position = self.routes.call(stream, send)
        return (NONE if position is None else _text(position)), entries

    def replay_merged(
        self, streams: Sequence[str], after: str = "0-0", until: str = "+"
    ) -> Iterator[tuple[str, Stored]]:
        """``replay`` of several log streams (the control log, a task-plane shard's log) merged
        in time order, as (stream, event): by stream id, which is the server's millisecond clock
        and a sequence number; entries of equal ids in different streams in the order of
        ``streams``. One stream is replayed as it is."""
        if len(streams) == 1:
            return ((streams[0], stored) for stored in self.replay_stream(streams[0], after, until))
        tagged = (self._ranked(r, s, after, until) for r, s in enumerate(streams))
        return ((stream, stored) for _, stream, stored in heapq.merge(*tagged))

    def _ranked(
        self, rank: int, stream: str, after: str, until: str
    ) -> Iterator[tuple[tuple[int, int, int], str, Stored]]:
        for stored in self.replay_stream(stream, after, until):
            ms, _, seq = stored.position.partition("-")
            yield (int(ms), int(seq), rank), stream, stored

    @translate_errors
    def wait(self, log: str, after: str, block_ms: int, count: int = PAGE) -> list[Stored]:
        """Block up to ``block_ms`` for events after ``after``; an empty list on timeout."""
        reply: Any = self.redis.xread({self.keys.log(log): after}, count=count, block=block_ms)
        if not reply:
            return []
        return self._decode(reply[0][1])

    @translate_errors
    def wait_any(
        self, after: dict[str, str], block_ms: int, count: int = PAGE
    ) -> list[tuple[str, Stored]]:
        """Block up to ``block_ms`` for events after ``after[log]`` on any of the logs, in one
        XREAD (a team's logs share one hash tag); (log, event) pairs in log order per log."""
        names = {self.keys.log(log): log for log in after}
        found = self.wait_streams({key: after[log] for key, log in names.items()}, block_ms, count)
        return [(names[key], stored) for key, stored in found]

    @translate_errors
    def wait_streams(
        self, after: dict[str, str], block_ms: int | None, count: int = PAGE
    ) -> list[tuple[str, Stored]]:
        """``wait_any`` by stream key; the streams must share one slot on a cluster. ``block_ms``
        None: no wait."""
        reply: Any = self.redis.xread(after, count=count, block=block_ms)  # type: ignore[arg-type]
        if isinstance(reply, dict):  # RESP3
            reply = reply.items()
        return [
            (_text(key), stored) for key, entries in reply or [] for stored in self._decode(entries)
        ]

    def _decode(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[Stored]:
        """Entries as redis-py parses them: (id, {field: value})."""
        return [
            _tuple_new(Stored, (_text(position), event))
            for position, fields in entries
            for event in self.entry_events([item for pair in fields.items() for item in pair])
        ]

    def entry_events(self, fields: Sequence[bytes]) -> list[Event | UnknownEvent]:
        """The events of a raw entry of one of the team's logs, ``[field, value, ...]`` as the
        stream holds it (or an archive segment keeps it): the one way every read decodes an
        entry (``Codec.decode_entry``: either form of event, the recorded actor, the team)."""
        return self.codec.decode_entry(fields)

    @translate_errors
    def _xrange(self, stream: str, after: str, until: str, count: int) -> list[list[Any]]:
        """Raw entries ``[id, [field, value, ...]]`` after ``after`` up to ``until``: sent packed by
        hiredis and read as the server sent them, where redis-py's XRANGE callback would build
        an (id, dict) pair per entry, which costs more than decoding the event."""
        command = [pack("XRANGE", stream, f"({after}", until, "COUNT", count)]

        def send(connection: Any) -> list[list[Any]]:
            connection.send_packed_command(command)
            return connection.read_response()  # type: ignore[no-any-return]

        return self.routes.call(stream, send)

    # --- the hash chain ---------------------------------------------------------------------------

    def verify_stream(
        self, stream: str, after: str = "0-0", start: str | None = None, *, anchored: bool = True
    ) -> tuple[str | None, Verification]:
        """Recompute the hash chain (domain.chain) of log stream ``stream`` over its entries after
        ``after``: (the position of the entry it was anchored at, Verification).

        From the stream's beginning (``after`` before its first entry) the chain is checked from
        its genesis; from a later ``after``, it carries on from the hash of the last entry at or
        before it, which is taken as it is (the anchor). The stream's head and last entry are read
        together first and the entries up to that one verified: appends meanwhile are not a
        break, and are not verified by this call.

        ``start``: the hash the stream's archived entries end with (domain.segments), when they
        were trimmed from it: its live entries chain from that, not from the genesis; with
        ``anchored`` False, the entries after ``after`` chain from ``start`` whatever entry is
        at ``after`` (the last archived one: the archive verified it).
        """
        head, last = self._chain_snapshot(stream)
        anchor: str | None = None
        if after != "0-0" and anchored:
            before = self._entry_at_or_before(stream, after)
            if before is not None:
                anchor = _text(before[0])
                hashed = _field(before[1], FIELD)
                start = None if hashed is None else _text(hashed)
        if last == "0-0" or _order(last) <= _order(after):
            return anchor, verify((), start, head)
        entries = self._entries(stream, after, last)
        with contextlib.closing(entries):  # stopped at a break: its connection is freed now
            return anchor, verify(entries, start, head)

    def _entries(self, stream: str, after: str, until: str) -> Generator[Entry]:
        """Raw entries after ``after`` up to ``until``, read in pages of VERIFY_PAGE on one
        connection, each page's successor asked for before the page is handed out: the server
        reads the next page while the caller hashes this one. A failure (a lost connection, a
        slot moved) reads the rest page by page, with the client's retries."""
        pool = self.routes.pool(stream)
        connection = pool.get_connection()
        done = after  # the last entry handed out
        asked = False  # a reply is on its way

        def ask(position: str) -> None:
            nonlocal asked
            connection.send_packed_command(
                [pack("XRANGE", stream, f"({position}", until, "COUNT", VERIFY_PAGE)]
            )
            asked = True

        try:
            ask(after)
            while True:
                page = connection.read_response()
                asked = False
                if len(page) == VERIFY_PAGE:
                    ask(_text(page[-1][0]))
                yield from page
                if len(page) < VERIFY_PAGE:
                    return
                done = _text(page[-1][0])
        except DriverError:
            pass  # read again below
        finally:
            if asked:  # failed, or the caller stopped early: the reply must not reach another
                connection.disconnect()
            pool.release(connection)
        while True:
            page = self._xrange(stream, done, until, VERIFY_PAGE)
            yield from page
            if len(page) < VERIFY_PAGE:
                return
            done = _text(page[-1][0])

    @translate_errors
    def _chain_snapshot(self, stream: str) -> tuple[str | None, str]:
        """The stream's chain head (None: absent) and its last entry's position ("0-0": none),
        read in one transaction: as they were together at one moment."""
        head_key = chain_head(stream)
        commands = [
            pack("MULTI"), pack("GET", head_key), pack("XREVRANGE", stream, "+", "-", "COUNT", 1),
            pack("EXEC"),
        ]  # fmt: skip

        def send(connection: Any) -> Any:
            connection.send_packed_command(commands)
            return [connection.read_response() for _ in commands][-1]

        head, last = self.routes.call(stream, send)
        return (None if head is None else _text(head)), (_text(last[0][0]) if last else "0-0")

    @translate_errors
    def _entry_at_or_before(self, stream: str, position: str) -> Entry | None:
        command = [pack("XREVRANGE", stream, position, "-", "COUNT", 1)]

        def send(connection: Any) -> Any:
            connection.send_packed_command(command)
            return connection.read_response()

        found = self.routes.call(stream, send)
        return (found[0][0], found[0][1]) if found else None

    # --- checkpoints ----------------------------------------------------------------------------

    @translate_errors
    def load_checkpoint(self, name: str) -> str:
        value = self.redis.get(self.keys.checkpoint(name))
        return _text(value) if value else "0-0"

    @translate_errors
    def save_checkpoint(self, name: str, position: str) -> None:
        self.redis.set(self.keys.checkpoint(name), position)

    # --- materialised projections ---------------------------------------------------------------

    @translate_errors
    def deployments(self) -> dict[tuple[str, str], str]:
        """(cluster, workflow) -> release id, as maintained atomically with each append."""
        raw = self.redis.hgetall(self.keys.deployments)
        result = {}
        for field, value in raw.items():
            cluster, workflow = _text(field).split("/", 1)
            result[(cluster, workflow)] = _text(value)
        return result

    # --- artifacts ------------------------------------------------------------------------------

    @translate_errors
    def has_artifact(self, digest: str) -> bool:
        return bool(self.redis.exists(self.keys.artifact(digest)))

    @translate_errors
    def put_artifact(
        self,
        digest: str,
        data: bytes,
        progress: Callable[[int, int], None] | None = None,
    ) -> bool:
        """Store ``data`` under ``digest`` in chunks; False (nothing kept) if already stored.

        Chunks go to a private upload key that is renamed into place atomically, so a reader never
        sees a half-uploaded artifact and an interrupted upload leaves nothing under the digest.
        """
        if self.has_artifact(digest):
            return False
        upload = self.keys.artifact_upload(digest, new_id())
        total = len(data)
        pipe = self.redis.pipeline(transaction=False)
        for offset in range(0, max(total, 1), CHUNK_BYTES):
            pipe.rpush(upload, data[offset : offset + CHUNK_BYTES])
            if len(pipe) >= 8:
                pipe.execute()
            if progress:
                progress(min(offset + CHUNK_BYTES, total), total)
        pipe.expire(upload, 3600)  # an abandoned upload cleans itself up
        pipe.execute()
        return bool(self._commit_artifact(keys=[self.keys.artifact(digest), upload], args=[]))

    @translate_errors
    def get_artifact(self, digest: str) -> bytes:
        chunks: list[bytes] = self.redis.lrange(self.keys.artifact(digest), 0, -1)  # type: ignore[assignment]
        if not chunks:
            raise ArtifactError(f"artifact {digest} is not stored in this team; publish it again")
        return b"".join(chunks)


def _field(fields: Sequence[bytes], name: bytes) -> bytes | None:
    for index in range(0, len(fields) - 1, 2):
        if fields[index] == name:
            return fields[index + 1]
    return None


def _order(position: str) -> tuple[int, int]:
    ms, _, seq = position.partition("-")
    return int(ms), int(seq or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# ``_tuple_new(Stored, (position, event))`` is ``Stored(position, event)`` without the Python-level
# NamedTuple constructor: the same object at half the cost, which shows in a million-event replay.
_tuple_new = tuple.__new__
