"""The archiver's Redis side: archive records, their compare-and-set, trimming up to what is
archived, the archiver's lease, and reading what to archive.

Each log stream (the control log; each shard's task log) has its archive record beside it, in
its own hash tag (``keys.archive_record``), so that each script touches one slot. The order of
the archiver's steps, for each segment: ``intend`` (record the digest about to be put), put it
in the object store, ``commit`` (record it as archived), ``trim``. A crash between any two
loses nothing (nothing is trimmed that is not recorded, nothing recorded that is not put) and
duplicates nothing (the next run seals the pending segment's entries again: the same bytes).
"""

from __future__ import annotations

from typing import Any

from tilebox_core.domain.archive import NONE, ArchiveRecord
from tilebox_core.domain.chain import Entry
from tilebox_core.domain.errors import ConcurrencyError

from .connection import pack
from .eventstore import EventStore, load_script, translate_errors
from .keys import actor_key, archive_record, archive_snapshot

_INT_FIELDS = frozenset({"segments", "entries", "events", "bytes"})


class Pending(ConcurrencyError):
    """Another segment is pending for the stream (a crashed archiver's): put and commit it
    first."""

    def __init__(self, digest: str, last: str) -> None:
        super().__init__(f"segment {digest} (up to {last}) is pending")
        self.digest, self.last = digest, last


class ArchiveLog:
    """Archive records and trimming of a team's log streams (through ``store``'s connection,
    recorded as its actor)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.redis = store.redis
        self.identity = store.identity  # named in a refusal (translate_errors)
        prelude = load_script("actor") + "\n"
        self._record = self.redis.register_script(prelude + load_script("archive_record"))
        self._trim = self.redis.register_script(prelude + load_script("archive_trim"))
        self._lease = self.redis.register_script(prelude + load_script("archive_lease"))

    # --- records ------------------------------------------------------------------------------

    @translate_errors
    def record(self, stream: str) -> ArchiveRecord:
        raw: Any = self.redis.hgetall(archive_record(stream))
        fields = {_text(k): _text(v) for k, v in raw.items()}
        values: dict[str, Any] = {
            k: int(v) if k in _INT_FIELDS else v
            for k, v in fields.items()
            if k in ArchiveRecord.__struct_fields__
        }
        return ArchiveRecord(**values)

    @translate_errors
    def snapshot(self, stream: str) -> bytes | None:
        """The control log's projection snapshot (it holds its own position), if it has one."""
        data: Any = self.redis.get(archive_snapshot(stream))
        return None if data is None else bytes(data)

    @translate_errors
    def intend(
        self, stream: str, expected: str, digest: str, last: str, replaces: str = ""
    ) -> None:
        """Record that segment ``digest`` (up to ``last``) is about to be put, if the stream's
        last archived segment is still ``expected``. ``ConcurrencyError`` for a stale archiver;
        ``Pending`` when another segment is pending (``replaces``: one that may be given up)."""
        self._cas(stream, ["intend", expected, digest, last, replaces])

    @translate_errors
    def commit(
        self, stream: str, expected: str, digest: str, last: str, *, chain_end: str | None,
        entries: int, events: int, size: int, snapshot: bytes = b"",
    ) -> None:  # fmt: skip
        """Record the pending segment ``digest`` (put) as the stream's last archived one, after
        ``expected``; with the projection ``snapshot`` at ``last`` (the control log)."""
        self._cas(
            stream,
            ["commit", expected, digest, last, chain_end or "", entries, events, size, snapshot],
        )

    def _cas(self, stream: str, args: list[Any]) -> None:
        keys = [archive_record(stream)]
        if args[0] == "commit" and args[-1]:
            keys.append(archive_snapshot(stream))
        reply: Any = self._record(keys=[*keys, actor_key(stream, self.store.actor)], args=args)
        status = int(reply[0])
        if status == 0:
            raise ConcurrencyError(
                f"the archive of {stream} moved on (its last segment is {_text(reply[1]) or 'none'}, "
                f"not {args[1] or 'none'}): another archiver recorded it"
            )
        if status == 2:
            raise Pending(_text(reply[1]), _text(reply[2]))

    @translate_errors
    def trim(self, stream: str, minid: str) -> int:
        """Trim ``stream`` before ``minid``, but never past its archived position."""
        reply: Any = self._trim(
            keys=[stream, archive_record(stream), actor_key(stream, self.store.actor)],
            args=[minid],
        )
        return int(reply)

    # --- reading ------------------------------------------------------------------------------

    @translate_errors
    def entries(self, stream: str, after: str, before: str, count: int) -> list[Entry]:
        """Up to ``count`` raw entries after ``after`` and before ``before`` (exclusive)."""
        if before == NONE:
            return []
        command = [pack("XRANGE", stream, f"({after}", f"({before}", "COUNT", count)]

        def send(connection: Any) -> Any:
            connection.send_packed_command(command)
            return connection.read_response()

        found: list[Entry] = self.store.routes.call(stream, send)
        return found

    @translate_errors
    def live_entries(self, stream: str) -> int:
        return int(self.redis.xlen(stream))

    @translate_errors
    def oldest_job_ms(self, jobs: str) -> int | None:
        """The submission time (ms, the server's) of the oldest job in jobs index ``jobs``;
        None: none."""
        found: Any = self.redis.zrangebyscore(jobs, "-inf", "+inf", start=0, num=1, withscores=True)
        return int(found[0][1]) if found else None

    @translate_errors
    def server_ms(self) -> int:
        seconds, micros = self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    # --- the lease ----------------------------------------------------------------------------

    @translate_errors
    def take_lease(self, key: str, holder: str, ms: int) -> bool:
        """Take (or renew) the lease ``key`` for ``ms`` (an archiver's, or the sweep's); False:
        someone else holds it."""
        reply: Any = self._lease(
            keys=[key, actor_key(key, self.store.actor)], args=["take", holder, ms]
        )
        return bool(reply)

    @translate_errors
    def release_lease(self, key: str, holder: str) -> None:
        self._lease(keys=[key, actor_key(key, self.store.actor)], args=["release", holder, 0])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
