"""The archiver (issue 14): moves the oldest entries of a team's event logs into the archive
(``tilebox_core.archive``) before they are trimmed from Redis; ``tilebox archive run`` and
release runners (in the background) run it, one at a time per team by a lease.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from tilebox_core.domain.archive import (
    INTERVAL_SECONDS,
    LEASE_MS,
    NONE,
    SEGMENT_BYTES,
    SEGMENT_ENTRIES,
    ArchivePass,
    ArchiveRecord,
    StreamStatus,
    segment_name,
    successor,
    trim_point,
)
from tilebox_core.domain.chain import Entry
from tilebox_core.domain.errors import ConcurrencyError, StoreUnavailable
from tilebox_core.domain.projection import ControlState, decode_state, encode_state, fold
from tilebox_core.domain.segments import Sealed, SegmentError, open_segment, seal_segment
from tilebox_core.domain.tenancy import Role
from tilebox_core.redis.archivelog import ArchiveLog, Pending
from tilebox_core.redis.eventstore import CONTROL
from tilebox_core.redis.taskstore import TASKS

from .jobs import Jobs
from .session import Session

log = structlog.get_logger(__name__)

KINDS = (CONTROL, TASKS)
# The control projection's snapshot is recorded with the last segment of a pass, and with every
# this many of a long backlog: it holds every release ever published, and readers fold only the
# archived entries after it anyway.
SNAPSHOT_EVERY = 16


def team_logs(session: Session) -> list[tuple[str, str, str]]:
    """(kind, name for people, stream key) of each log stream of the team: the control log,
    then each shard's task log (``tasks``, or ``tasks shard 3 of 12``)."""
    tasks = session.tasks.log_streams()
    shards = len(tasks)
    return [(CONTROL, CONTROL, session.store.keys.log(CONTROL))] + [
        (TASKS, TASKS if shards == 1 else f"{TASKS} shard {i} of {shards}", stream)
        for i, stream in enumerate(tasks)
    ]


# --- the archiver -------------------------------------------------------------------------------

Hook = Callable[[str, str], None]  # (step, stream): after "intend", "put", "record", "trim"


class Archiver:
    """Moves the oldest entries of a team's log streams into the archive, then trims them.

    One pass (``run_once``) takes the team's archiver leases it may (a runner's credential may
    archive only the task logs, which it writes anyway; a developer's, or an admin's, every
    log; an auditor's none), and for each log stream seals its entries before the trim point
    (``domain.archive.trim_point``) into segments of up to ``segment_entries`` entries or
    ``segment_bytes`` bytes: for each, records the segment as pending, puts it, records it as
    archived (with the control projection's snapshot there, for the control log), and trims the
    stream up to it. ``hook`` is called after each step (tests crash the process there).

    ``retention_ms``: how long the logs' entries stay live at most (the control log's; a task
    log's also while a job of theirs is in Redis; default: the team's retention,
    ``RetentionSet``). ``sweep``: before the task logs, remove the team's expired jobs
    (``Jobs.expire``), whose events may then leave the live log (release runners sweep on their
    own schedule, ``tilebox_core.sweep``, and pass False)."""

    def __init__(
        self,
        session: Session,
        *,
        retention_ms: int | None = None,
        sweep: bool = True,
        segment_entries: int = SEGMENT_ENTRIES,
        segment_bytes: int = SEGMENT_BYTES,
        lease_ms: int = LEASE_MS,
        holder: str | None = None,
        hook: Hook | None = None,
    ) -> None:
        self.session = session
        self.archive = session.archive
        self.log = ArchiveLog(session.store)
        self.retention_ms = retention_ms
        self.sweep = sweep
        self.segment_entries = segment_entries
        self.segment_bytes = segment_bytes
        self.lease_ms = lease_ms
        self.holder = holder or f"{socket.gethostname()}/{uuid.uuid4().hex[:12]}"
        self.hook = hook
        self._held: set[str] = set()

    # --- what may be archived -------------------------------------------------------------------

    def allowed(self) -> dict[str, str]:
        """Log kind -> why this session may not archive it ("" it may)."""
        identity = self.session.identity
        role = identity.member.role if identity is not None and identity.member else None
        if role is Role.AUDITOR:
            return dict.fromkeys(KINDS, "an auditor's credential may not archive")
        if role is Role.RUNNER:
            return {
                CONTROL: "a runner's credential may not trim the control log; archive it with "
                "a developer's (tilebox archive run)",
                TASKS: "",
            }
        return dict.fromkeys(KINDS, "")

    # --- passes ---------------------------------------------------------------------------------

    def run_once(self) -> list[ArchivePass]:
        allowed = self.allowed()
        results = []
        swept = False
        for kind, name, stream in team_logs(self.session):
            why = allowed[kind] or ("" if self._lease(kind) else "another archiver holds the lease")
            if why:
                results.append(ArchivePass(log=name, stream=stream, skipped=why))
                continue
            if kind == TASKS and self.sweep and not swept:
                # expired jobs leave the jobs index first: a task log is trimmed up to its
                # shard's oldest job still there (domain.archive.trim_point)
                swept = True
                removed = Jobs(self.session).expire()  # all that are due: then the logs
                if removed:
                    log.info("expired jobs removed", jobs=removed)
            try:
                results.append(self._archive(kind, name, stream))
            except ConcurrencyError as exc:  # lost a race: the other archiver carries on
                results.append(ArchivePass(log=name, stream=stream, skipped=str(exc)))
            except SegmentError as exc:  # a break in the live log is not archived
                log.error("not archived", log=name, error=str(exc))
                results.append(ArchivePass(log=name, stream=stream, skipped=str(exc)))
        return results

    def run(self, stop: threading.Event, interval: float = INTERVAL_SECONDS) -> None:
        """Passes every ``interval`` seconds until ``stop`` is set; then the leases are given
        up. A pass that fails (Redis or the object store unavailable) is logged and retried."""
        try:
            while not stop.is_set():
                try:
                    done = self.run_once()
                except (StoreUnavailable, OSError) as exc:
                    log.warning("archiver pass failed; retrying", error=str(exc))
                else:
                    for result in done:
                        if result.segments or result.trimmed:
                            log.info("archived", log=result.log, segments=result.segments,
                                     entries=result.entries, trimmed=result.trimmed)  # fmt: skip
                stop.wait(interval)
        finally:
            self.release()

    def release(self) -> None:
        """Give up the leases held (another archiver may take over at once)."""
        for kind in list(self._held):
            with contextlib.suppress(StoreUnavailable):
                self.log.release_lease(self.session.store.keys.archiver_lease(kind), self.holder)
            self._held.discard(kind)

    def _lease(self, kind: str) -> bool:
        key = self.session.store.keys.archiver_lease(kind)
        if self.log.take_lease(key, self.holder, self.lease_ms):
            self._held.add(kind)
            return True
        self._held.discard(kind)
        return False

    # --- one stream -----------------------------------------------------------------------------

    def trim_point(self, kind: str, stream: str) -> str:
        now = self.log.server_ms()
        oldest = None
        if kind == TASKS:
            shard = next(s for s in self.session.tasks.shards if s.log(TASKS) == stream)
            oldest = self.log.oldest_job_ms(shard.jobs)
        keep = self.retention_ms
        if keep is None:  # the team's (RetentionSet): what its jobs keep, its control log keeps
            keep = self.session.state().retention_seconds * 1000
        return trim_point(kind, now_ms=now, retention_ms=keep, oldest_job_ms=oldest)

    def _archive(self, kind: str, name: str, stream: str) -> ArchivePass:
        point = self.trim_point(kind, stream)
        folder = self.session.store.archive_folder(stream)
        record = self.log.record(stream)
        state = self._snapshot(stream, record) if kind == CONTROL else None
        segments = entries = events = size = trimmed = 0
        while True:
            if record.pending:
                sealed, path = self._recover(name, stream, folder, record)
            else:
                rows = self._batch(stream, record.position, point)
                if not rows:
                    break
                sealed, path = self._seal(name, folder, record, rows)
                try:
                    self.log.intend(stream, record.digest, sealed.name, sealed.segment.last)
                except Pending:
                    record = self.log.record(stream)
                    continue
                self._step("intend", stream)
            self.archive.put(path, sealed.data)
            self._step("put", stream)
            segment = sealed.segment
            snapshot = b""
            if state is not None:
                fold(self.session.store.decode_entries(segment.entries), state)
                # with the pass's last segment (a short one), and now and then in a long
                # backlog: a reader folds the archived entries after it (replay reads them)
                if len(segment.entries) < self.segment_entries or segments % SNAPSHOT_EVERY == 0:
                    snapshot = encode_state(state)
            self.log.commit(
                stream, record.digest, sealed.name, segment.last, chain_end=segment.chain_end,
                entries=len(segment.entries), events=sealed.events, size=len(sealed.data),
                snapshot=snapshot,
            )  # fmt: skip
            self._step("record", stream)
            record = ArchiveRecord(
                position=segment.last, digest=sealed.name, chain=segment.chain_end or "",
                segments=record.segments + 1, entries=record.entries + len(segment.entries),
                events=record.events + sealed.events, bytes=record.bytes + len(sealed.data),
            )  # fmt: skip
            segments, entries = segments + 1, entries + len(segment.entries)
            events, size = events + sealed.events, size + len(sealed.data)
            trimmed += self.log.trim(stream, point)
            self._step("trim", stream)
            if segments % 8 == 0 and not self._lease(kind):  # a long backlog: still ours?
                break
        trimmed += self.log.trim(stream, point)  # what a crash after recording left
        return ArchivePass(log=name, stream=stream, segments=segments, entries=entries,
                           events=events, bytes=size, trimmed=trimmed)  # fmt: skip

    def _batch(self, stream: str, after: str, before: str) -> list[Entry]:
        """The entries for the next segment: after ``after``, before the trim point, up to
        ``segment_entries`` entries and ``segment_bytes`` bytes (at least one)."""
        rows = self.log.entries(stream, after, before, self.segment_entries)
        total = 0
        for index, (_, fields) in enumerate(rows):
            total += sum(map(len, fields))
            if total > self.segment_bytes and index:
                return rows[:index]
        return rows

    def _seal(
        self, name: str, folder: str, record: ArchiveRecord, rows: Sequence[Entry]
    ) -> tuple[Sealed, str]:
        sealed = seal_segment(name, rows, record.digest or None, record.chain or None)
        segment = sealed.segment
        return sealed, segment_name(folder, segment.first, segment.last, sealed.name).path

    def _recover(
        self, name: str, stream: str, folder: str, record: ArchiveRecord
    ) -> tuple[Sealed, str]:
        """The segment a crashed archiver recorded as pending: its entries (still live: nothing
        is trimmed past the record) sealed again give the same bytes; if this version seals
        them otherwise, the pending one is taken from the store when it was put, else replaced."""
        rows: list[Entry] = []
        after = record.position
        while True:
            page = self.log.entries(stream, after, successor(record.pending_last), 10_000)
            rows += page
            if len(page) < 10_000:
                break
            after = _text(page[-1][0])
        sealed, path = self._seal(name, folder, record, rows)
        if sealed.name == record.pending:
            return sealed, path
        first = sealed.segment.first
        old = segment_name(folder, first, record.pending_last, record.pending).path
        data = self.archive.get(old)
        if data is not None:
            segment = open_segment(record.pending, data)
            events = sum(1 for _ in self.session.store.decode_entries(segment.entries))
            return Sealed(record.pending, data, segment, events), old
        self.log.intend(
            stream, record.digest, sealed.name, sealed.segment.last, replaces=record.pending
        )
        return sealed, path

    def _snapshot(self, stream: str, record: ArchiveRecord) -> ControlState:
        """The control projection at the archived position: its stored snapshot and the
        archived entries after it folded in."""
        if record.position == NONE:
            return ControlState()
        found = self.log.snapshot(stream)
        state = ControlState() if found is None else decode_state(found)
        replay = self.session.store.replay_stream(stream, state.position, record.position)
        return fold(replay, state)

    def _step(self, step: str, stream: str) -> None:
        if self.hook is not None:
            self.hook(step, stream)

    # --- status ---------------------------------------------------------------------------------

    def status(self) -> list[StreamStatus]:
        return archive_status(self.session)


def archive_status(session: Session) -> list[StreamStatus]:
    """Per log stream of the team: how far it is archived, in how many segments and bytes, and
    how many entries are live in Redis."""
    archive_log = ArchiveLog(session.store)
    found = []
    for _, name, stream in team_logs(session):
        record = archive_log.record(stream)
        found.append(
            StreamStatus(
                log=name,
                stream=stream,
                archived_to=record.position,
                segments=record.segments,
                entries=record.entries,
                events=record.events,
                bytes=record.bytes,
                live_entries=archive_log.live_entries(stream),
                pending=record.pending,
            )
        )
    return found


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
