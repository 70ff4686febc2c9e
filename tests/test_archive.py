"""The archive of the event logs (issue 14), on real servers and real object stores (a local
directory; moto's S3 server): the archiver puts, records and then trims; replay, ``events list``,
``deployments --as-of`` and the control projection read archive plus live as one history; a
crash (kill -9) at any step of the archiver loses and duplicates nothing; and ``audit verify``
finds each kind of tampering with the archive or the live log."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.servers import ClusterProcess, S3Server, ServerProcess
from tests.tasks_fixture import Leaf
from tests.test_chain import busy_team, rewrite
from tests.waiting import wait_for
from tilebox_core import Client, JobState, Role
from tilebox_core.archive import ObjectArchive
from tilebox_core.archiver import Archiver, archive_status
from tilebox_core.client import position_time
from tilebox_core.domain import archive as rules
from tilebox_core.domain.chain import GENESIS, BreakKind, link
from tilebox_core.domain.errors import ConcurrencyError
from tilebox_core.domain.projection import ControlState, decode_state, encode_state, fold
from tilebox_core.domain.segments import open_segment, seal
from tilebox_core.redis.archivelog import ArchiveLog
from tilebox_core.redis.eventstore import CONTROL
from tilebox_core.redis.keys import archive_record

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parent.parent


def forget_jobs(client: Client) -> None:
    """Empty every shard's jobs index, as retention does once jobs expire: their events may go."""
    for shard in client.tasks.shards:
        client.redis.delete(shard.jobs)


def archived_team(client: Client, tmp_path: Path, segment_entries: int = 4) -> list[object]:
    """A busy team whose logs are archived (in segments of ``segment_entries``) and trimmed;
    the history as it was before."""
    busy_team(client, tmp_path)
    before = list(client.events().list())
    forget_jobs(client)
    archiver = Archiver(client, retention_ms=0, segment_entries=segment_entries)
    done = archiver.run_once()
    archiver.release()
    assert all(not p.skipped for p in done), done
    assert sum(p.segments for p in done) >= 3
    return before


def stream_lengths(client: Client) -> int:
    return sum(int(client.redis.xlen(s)) for s in client.events()._streams())


# --- the rules --------------------------------------------------------------------------------


def test_the_trim_point_keeps_the_retention_window_and_every_present_job() -> None:
    day = 24 * 3600 * 1000
    assert rules.trim_point("control", now_ms=10 * day, retention_ms=7 * day) == f"{3 * day + 1}-0"
    assert rules.trim_point("control", now_ms=day, retention_ms=7 * day) == "0-0"
    assert rules.trim_point("tasks", now_ms=10 * day, oldest_job_ms=None) == rules.EVERYTHING
    assert (
        rules.trim_point("tasks", now_ms=10 * day, oldest_job_ms=5 * day, margin_ms=1000)
        == f"{5 * day - 1000}-0"
    )
    # a job older than the retention (one that never ends) holds the window open no longer
    assert (
        rules.trim_point("tasks", now_ms=10 * day, retention_ms=2 * day, oldest_job_ms=5 * day)
        == f"{8 * day + 1}-0"
    )


def test_segment_names_sort_by_time_and_parse_back() -> None:
    digest = "sha256:" + "ab" * 32
    early = rules.segment_name("p/t/t/control", "999-3", "1000-0", digest)
    late = rules.segment_name("p/t/t/control", "1000-1", "123456789-12", digest)
    assert early.path < late.path
    assert rules.parse_name(late.path) == late
    assert rules.parse_name("p/t/t/control/notes.txt") is None
    names = [early, late]
    assert rules.covering(names, "1000-0", "+") == [late]
    assert rules.covering(names, "0-0", "999") == [early]
    assert rules.successor("5-7") == "5-8"


def test_a_snapshot_gives_the_state_back(client: Client) -> None:
    client.clusters().create("one")
    client.workflows().create("w")
    state = client.state()
    assert decode_state(encode_state(state)).snapshot() == state.snapshot()


# --- one history --------------------------------------------------------------------------------


def test_archived_history_reads_as_it_did_live(client: Client, tmp_path: Path) -> None:
    before = archived_team(client, tmp_path)
    assert stream_lengths(client) == 0  # every entry was archived and trimmed
    assert list(client.events().list()) == before
    # a new session folds the control projection from the archived snapshot
    with Client(client.url, team=client.team) as fresh:
        assert fresh.state().snapshot() == fold(client.store.replay(CONTROL)).snapshot()
        assert fresh.state().position == before_control_position(client)
        assert list(fresh.events().list()) == before
    # --since/--until, served by the segments' names
    middle = position_time(before[len(before) // 2].position)  # type: ignore[attr-defined]
    since = list(client.events().list(since=middle))
    assert since == [s for s in before if position_time(s.position) >= middle]  # type: ignore[attr-defined]
    until = list(client.events().list(until=middle))
    assert until == [
        s
        for s in before
        if position_time(s.position) <= middle + dt.timedelta(milliseconds=1)
        and s.position.split("-")[0] <= str(int(middle.timestamp() * 1000))
    ]  # type: ignore[attr-defined]
    assert client.events().verify().ok
    assert not client.events().is_empty()


def before_control_position(client: Client) -> str:
    return client.archive_log.record(client.store.keys.log(CONTROL)).position


def test_live_entries_after_the_archive_and_the_untrimmed_range_read_once(
    client: Client, tmp_path: Path
) -> None:
    busy_team(client, tmp_path)
    forget_jobs(client)
    archiver = Archiver(client, retention_ms=0, segment_entries=5)
    stream = client.store.keys.log(CONTROL)
    # archived and recorded, but not trimmed yet (as after a crash before the trim)
    archiver.log.trim = lambda stream, minid: 0  # type: ignore[method-assign]
    archiver.run_once()
    assert int(client.redis.xlen(stream)) > 0
    client.clusters().create("after")
    client.jobs().submit("late", Leaf("late"))
    history = list(client.events().list())
    ids = [s.event.id for s in history]
    assert len(ids) == len(set(ids))
    assert history == _live_replay(client)
    assert history[-1].event.type == "TaskSubmitted"  # the late job's, after the archive
    assert client.events().verify().ok


def _live_replay(client: Client) -> list[object]:
    """The history read from Redis alone (nothing was trimmed)."""
    store = client.store
    saved, store.archive = store.archive, None
    try:
        return list(client.events().list())
    finally:
        store.archive = saved


def test_deployments_as_of_a_time_in_the_archive(client: Client, tmp_path: Path) -> None:
    client.clusters().create("prod")
    client.workflows().create("w")
    first = client.store.last_position("control")
    archiver = Archiver(client, retention_ms=0, segment_entries=2)
    archiver.run_once()
    then = position_time(first)
    assert client.deployments().as_of(then) == fold(_control_events(client, first)).mapping()
    assert client.deployments().state_as_of(then).clusters.keys() == {"default", "prod"}
    assert client.deployments().state_as_of(position_time("1-0")).clusters.keys() == {"default"}


def _control_events(client: Client, until: str) -> list[object]:
    return list(client.store.replay(CONTROL, until=until))


def test_the_archive_can_be_s3(
    server: ServerProcess | ClusterProcess, team: str, s3: S3Server, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    for name, value in s3.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TILEBOX_ARCHIVE_URL", f"s3://{s3.bucket()}/archive")
    with Client(server.url, team=team, actor="user:test") as client:
        assert client.archive.location.startswith("s3://")
        before = archived_team(client, tmp_path)
        assert list(client.events().list()) == before
        assert client.events().verify().ok


def test_segments_are_cut_by_bytes_too(client: Client, tmp_path: Path) -> None:
    for i in range(6):
        client.clusters().create(f"c{i}")
    archiver = Archiver(client, retention_ms=0, segment_bytes=1)  # one entry each
    (control, *_) = archiver.run_once()
    assert control.segments == control.entries == 6


# --- who archives -------------------------------------------------------------------------------


def test_one_archiver_at_a_time_and_a_stale_one_cannot_fork_the_chain(
    client: Client, tmp_path: Path
) -> None:
    client.clusters().create("a")
    first = Archiver(client, retention_ms=0, holder="first")
    second = Archiver(client, retention_ms=0, holder="second")
    assert first.run_once()[0].segments == 1
    assert {p.skipped for p in second.run_once()} == {"another archiver holds the lease"}
    first.release()
    client.clusters().create("b")
    assert second.run_once()[0].segments == 1
    stream = client.store.keys.log(CONTROL)
    with pytest.raises(ConcurrencyError, match="another archiver recorded it"):
        ArchiveLog(client.store).intend(stream, "", "sha256:" + "0" * 64, "1-0")
    assert client.events().verify().ok


@pytest.mark.parametrize("server", ["valkey"], indirect=True)
def test_a_runner_archives_the_task_logs_and_an_auditor_nothing(
    server: ServerProcess, team: str, tmp_path: Path
) -> None:
    with Client(server.url, team=team, actor="user:admin") as admin:
        change = admin.teams().create(team)
        urls = {c.role: c.url for c in change.credentials}
        busy_team(admin, tmp_path)
        forget_jobs(admin)
    with Client(urls[Role.RUNNER], team=team) as runner:
        done = {p.log: p for p in Archiver(runner, retention_ms=0).run_once()}
        assert "runner's credential may not" in done["control"].skipped
        assert done["tasks"].segments == 1 and not done["tasks"].skipped
        # its records and lease are all it may write beyond the task plane
        with pytest.raises(Exception, match=r"(?i)no permissions|not allowed"):
            runner.redis.set(archive_record(runner.store.keys.log(CONTROL)), "x")
    with Client(urls[Role.AUDITOR], team=team) as auditor:
        assert all("auditor" in p.skipped for p in Archiver(auditor, retention_ms=0).run_once())
        assert auditor.events().verify().ok
    with Client(urls[Role.DEVELOPER], team=team) as developer:
        done = {p.log: p for p in Archiver(developer, retention_ms=0).run_once()}
        assert done["control"].segments == 1


# --- crashes --------------------------------------------------------------------------------------


def run_archiver(url: str, team: str, step: str, nth: int, env: dict[str, str]) -> int:
    process = subprocess.run(
        [sys.executable, "-m", "tests.archiver_process", url, team, step, str(nth)],
        cwd=ROOT, env=env, capture_output=True, timeout=120,
    )  # fmt: skip
    if process.returncode not in (0, -9):
        raise AssertionError(process.stderr.decode())
    return process.returncode


def crash_at_every_step(client: Client, tmp_path: Path, env: dict[str, str]) -> None:
    """kill -9 the archiver after each step in turn (new events between), then once more to
    the end: the history is the one it was, once each, and it verifies."""
    leases = [client.store.keys.archiver_lease(kind) for kind in ("control", "tasks")]
    for step in ("intend", "put", "record", "trim"):
        client.clusters().create(f"c-{step}")
        client.jobs().submit_many([(f"{step}{i}", Leaf(str(i))) for i in range(3)])
        client.runner(tasks=[Leaf], cache_root=tmp_path / "cache").run_all()
        forget_jobs(client)
        before = list(client.events().list())
        assert run_archiver(client.url, client.team, step, 2, env) == -9
        assert list(client.events().list()) == before  # nothing lost, nothing twice
        wait_for(lambda: not any(client.redis.exists(k) for k in leases), timeout=30)
    before = list(client.events().list())
    assert run_archiver(client.url, client.team, "none", 0, env) == 0
    assert stream_lengths(client) == 0
    assert list(client.events().list()) == before
    audit = client.events().verify()
    assert audit.ok, audit.broken
    # no segment was put twice or left unrecorded
    for status in archive_status(client):
        folder = client.store.archive_folder(status.stream)
        assert len(client.archive.fresh_listing(folder)) == status.segments
        assert not status.pending


def test_a_crash_at_any_step_loses_and_duplicates_nothing(client: Client, tmp_path: Path) -> None:
    env = {**os.environ, "TILEBOX_HOME": os.environ["TILEBOX_HOME"]}
    crash_at_every_step(client, tmp_path, env)


@pytest.mark.parametrize("server", ["valkey"], indirect=True)
def test_a_crash_at_any_step_with_an_s3_archive(
    server: ServerProcess, team: str, s3: S3Server, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    url = f"s3://{s3.bucket()}/archive"
    env = {**os.environ, **s3.environment(), "TILEBOX_ARCHIVE_URL": url}
    for name in (*s3.environment(), "TILEBOX_ARCHIVE_URL"):
        monkeypatch.setenv(name, env[name])
    with Client(server.url, team=team, actor="user:test") as client:
        crash_at_every_step(client, tmp_path, env)


# --- audit verify over the archive ---------------------------------------------------------------


def control_segments(client: Client) -> list[rules.SegmentName]:
    return client.archive.fresh_listing(client.store.archive_folder(client.store.keys.log(CONTROL)))


def segment_file(client: Client, name: rules.SegmentName) -> Path:
    return Path(client.settings.archive_location.removeprefix("file://")) / name.path


def archive_break(client: Client, stream: str) -> str:
    audit = client.events().verify()
    assert not audit.ok and [s.stream for s in audit.broken] == [stream], audit
    broken = audit.broken[0].result.broken
    assert broken is not None and broken.kind == BreakKind.SEGMENT
    return f"{broken.position}: {broken.detail}"


@pytest.mark.parametrize("server", ["valkey"], indirect=True)
def test_an_edited_byte_in_a_segment_is_found(client: Client, tmp_path: Path) -> None:
    archived_team(client, tmp_path, segment_entries=1)
    name = control_segments(client)[1]
    path = segment_file(client, name)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    found = archive_break(client, client.store.keys.log(CONTROL))
    assert name.path in found and "altered" in found


@pytest.mark.parametrize("server", ["valkey"], indirect=True)
def test_a_replaced_segment_is_found(client: Client, tmp_path: Path) -> None:
    archived_team(client, tmp_path, segment_entries=1)
    names = control_segments(client)
    # another segment sealed from the same entries, in its place
    old = client.archive.load(names[1])
    # its entry rewritten, with its hash recomputed (what someone who can write Redis could do)
    position, fields = old.entries[0]
    body = fields[1].replace(b"b", b"q")
    forged = link(old.chain_start or GENESIS, fields[0], body, fields[3])
    entries = [(position, [fields[0], body, fields[2], fields[3], b"h", forged.encode()])]
    digest, data = seal(old.log, entries, old.previous, old.chain_start)
    segment_file(client, names[1]).unlink()
    replacement = rules.segment_name(
        names[1].path.rpartition("/")[0], old.first, entries[-1][0], digest
    )
    segment_file(client, replacement).write_bytes(data)
    assert open_segment(digest, data).previous == names[0].digest
    found = archive_break(client, client.store.keys.log(CONTROL))
    assert names[2].path in found and "follows" in found


@pytest.mark.parametrize("server", ["valkey"], indirect=True)
@pytest.mark.parametrize("which", ["first", "middle", "last"])
def test_a_deleted_segment_is_found(client: Client, tmp_path: Path, which: str) -> None:
    archived_team(client, tmp_path, segment_entries=1)
    names = control_segments(client)
    index = {"first": 0, "middle": 1, "last": len(names) - 1}[which]
    segment_file(client, names[index]).unlink()
    found = archive_break(client, client.store.keys.log(CONTROL))
    if which == "last":
        assert "segments were deleted" in found and names[index].digest in found
    else:
        assert names[index + 1].path in found and "follows" in found


def archived_then_live(client: Client, tmp_path: Path) -> str:
    """An archived team with three live control entries after its archive; its control log."""
    archived_team(client, tmp_path, segment_entries=1)
    for name in ("x", "y", "z"):
        client.clusters().create(name)
    return client.store.keys.log(CONTROL)


@pytest.mark.parametrize("server", ["valkey"], indirect=True)
def test_tampering_with_the_live_log_after_the_archive_is_found(
    client: Client, tmp_path: Path
) -> None:
    stream = archived_then_live(client, tmp_path)
    assert client.events().verify().ok
    # a live entry deleted: the next one no longer chains from the archive's end
    rewrite(client, stream, lambda entries: entries[1:])
    audit = client.events().verify()
    broken = audit.broken[0].result.broken
    assert broken is not None and broken.kind == BreakKind.MISMATCH
    assert audit.broken[0].segments == len(control_segments(client))


@pytest.mark.parametrize("server", ["valkey"], indirect=True)
def test_reordered_and_edited_live_entries_after_the_archive_are_found(
    client: Client, tmp_path: Path
) -> None:
    stream = archived_then_live(client, tmp_path)
    original = client.redis.xrange(stream)
    # reordered: the second entry's content first, under the first id
    rewrite(client, stream, lambda e: [(e[0][0], e[1][1]), (e[1][0], e[0][1]), *e[2:]])
    assert client.events().verify().broken[0].result.broken.kind == BreakKind.MISMATCH  # type: ignore[union-attr]
    client.redis.delete(stream)
    for position, fields in original:
        client.redis.xadd(stream, fields, id=position)
    assert client.events().verify().ok

    # an event edited in Redis (its bytes, the hash left as it was)
    def edit(entries: list[tuple[bytes, list[bytes]]]) -> list[tuple[bytes, list[bytes]]]:
        position, fields = entries[1]
        fields = list(fields)
        fields[1] = fields[1].replace(b"y", b"q")
        return [entries[0], (position, fields), *entries[2:]]

    rewrite(client, stream, edit)
    broken = client.events().verify().broken[0].result.broken
    assert broken is not None and broken.kind == BreakKind.MISMATCH and broken.number == 2


@pytest.mark.parametrize("server", ["valkey"], indirect=True)
def test_verify_since_a_time_in_the_archive_reads_from_there(
    client: Client, tmp_path: Path
) -> None:
    before = archived_team(client, tmp_path, segment_entries=1)
    names = control_segments(client)
    # (--since is a time: the first segment from 2 on that begins a millisecond of its own)
    at = next(i for i in range(2, len(names))
              if position_time(names[i].first) > position_time(names[i - 1].last))  # fmt: skip
    since = position_time(names[at].first)
    audit = client.events().verify(since)
    assert audit.ok, audit.broken
    control = audit.streams[0]
    assert control.anchor == names[at - 1].last and control.segments == len(names) - at
    # a break before --since is not looked at; one after it is
    segment_file(client, names[0]).unlink()
    assert client.events().verify(since).ok
    assert not client.events().verify().ok
    assert before


# --- the CLI ------------------------------------------------------------------------------------


def test_archive_run_once_and_status(cli: Cli, client: Client, tmp_path: Path) -> None:
    client.clusters().create("a")
    cli.env["TILEBOX_HOME"] = os.environ["TILEBOX_HOME"]
    status = json.loads(cli("archive", "status", "--json").output)
    assert status[0]["log"] == "control" and status[0]["segments"] == 0
    ran = cli("archive", "run", "--once", "--retention", "0s").output
    assert "control" in ran
    status = json.loads(cli("archive", "status", "--json").output)
    assert status[0]["segments"] == 1 and status[0]["live_entries"] == 0
    assert "control" in cli("archive", "status").output
    assert "OK" in cli("audit", "verify").output
    bad = cli("archive", "run", "--once", "--retention", "soon", ok=False)
    assert bad.exit_code != 0 and "Traceback" not in bad.output


def test_with_no_archive_configured_nothing_changes(client: Client) -> None:
    client.clusters().create("a")
    assert client.events().verify().ok
    assert not (Path(os.environ["TILEBOX_HOME"]) / "archive").exists()
    assert isinstance(client.archive, ObjectArchive)
    assert ControlState().position == "0-0"


@pytest.mark.parametrize("server", ["valkey"], indirect=True)
def test_a_release_runner_archives_in_the_background_unless_told_not_to(
    client: Client, tmp_path: Path
) -> None:
    import threading

    from tilebox_runner.supervisor import ReleaseRunner

    client.jobs().submit("one", Leaf("1"))
    client.runner(tasks=[Leaf], cache_root=tmp_path / "cache").run_all()
    forget_jobs(client)  # its events may go: the task log is archived to its end
    stream = client.tasks.log_streams()[0]
    for archive in (False, True):
        runner = ReleaseRunner(
            client, home=tmp_path / "runner", archive=archive, archive_interval=0.1, block_ms=50
        )
        thread = threading.Thread(target=runner.run)
        thread.start()
        try:
            if archive:
                wait_for(lambda: client.archive_log.record(stream).segments == 1, timeout=30)
                wait_for(lambda: int(client.redis.xlen(stream)) == 0, timeout=30)
            else:
                wait_for(lambda: client.runners.live("default"), timeout=30)
                assert client.archive_log.record(stream).segments == 0
        finally:
            runner.stop()
            thread.join(60)
    # it gave its lease up when it stopped
    assert not client.redis.exists(client.store.keys.archiver_lease("tasks"))


@pytest.mark.parametrize("server", ["valkey"], indirect=True)
def test_audit_verify_prints_where_the_archive_breaks(
    cli: Cli, client: Client, tmp_path: Path
) -> None:
    archived_team(client, tmp_path, segment_entries=1)
    ok = cli("audit", "verify").output
    assert ok.startswith("OK") and "archive segments and live" in ok
    names = control_segments(client)
    segment_file(client, names[1]).unlink()
    broken = cli("audit", "verify", ok=False)
    assert broken.exit_code == 1
    assert "in the archive, at segment 2" in broken.output and names[2].path in broken.output
    report = json.loads(cli("audit", "verify", "--json", ok=False).output)
    assert report["logs"][0]["broken"]["kind"] == "segment"


@pytest.mark.parametrize("server", ["valkey"], indirect=True)
def test_a_broken_live_log_is_not_archived(client: Client) -> None:
    for name in ("a", "b"):
        client.clusters().create(name)
    stream = client.store.keys.log(CONTROL)

    def edit(entries: list[tuple[bytes, list[bytes]]]) -> list[tuple[bytes, list[bytes]]]:
        position, fields = entries[0]
        return [(position, [fields[0], fields[1] + b" ", *fields[2:]]), *entries[1:]]

    rewrite(client, stream, edit)
    (control, *_) = Archiver(client, retention_ms=0).run_once()
    assert "not archived" in control.skipped and control.segments == 0
    assert int(client.redis.xlen(stream)) == 2  # nothing trimmed


class CountingArchive(ObjectArchive):
    """The archive, counting the segments it reads (a real store: this only counts)."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.read: list[str] = []

    def get(self, path: str) -> bytes | None:
        self.read.append(path)
        return super().get(path)


@pytest.mark.parametrize("server", ["valkey"], indirect=True)
def test_since_and_until_read_only_the_segments_they_need(client: Client, tmp_path: Path) -> None:
    before = archived_team(client, tmp_path, segment_entries=1)
    names = control_segments(client)
    with Client(client.url, team=client.team) as fresh:
        counting = fresh.store.archive = CountingArchive(fresh.settings.archive_location)
        # (--since is a time: the last segment that begins a millisecond of its own)
        at = max(i for i in range(1, len(names))
                 if position_time(names[i].first) > position_time(names[i - 1].last))  # fmt: skip
        since = position_time(names[at].first)
        found = list(fresh.events().list(since=since))
        assert found == [s for s in before if position_time(s.position) >= since]  # type: ignore[attr-defined]
        assert found
        control = [p for p in counting.read if p.startswith(names[0].path.rpartition("/")[0])]
        assert control == [n.path for n in names[at:]]
        counting.read.clear()
        until = position_time(names[0].last)
        ms = int(names[0].last.split("-")[0])
        expected = [s for s in before if int(s.position.split("-")[0]) <= ms]  # type: ignore[attr-defined]
        assert list(fresh.events().list(until=until)) == expected
        assert names[0].path in counting.read and names[-1].path not in counting.read


def test_a_job_that_never_ends_does_not_hold_the_task_log_open(client: Client) -> None:
    """Queued for a cluster nobody serves: once its events are older than the retention they
    leave the live log all the same, and its history is still read (from the archive)."""
    client.clusters().create("nobody")
    job = client.jobs().submit("stuck", Leaf("s"), cluster="nobody")
    submitted = list(client.events().list(job=job.id))
    assert [s.event.type for s in submitted] == ["JobSubmitted", "TaskSubmitted"]
    passes = Archiver(client, retention_ms=0).run_once()
    assert sum(p.trimmed for p in passes if p.log.startswith("tasks")) >= 1, passes
    assert stream_lengths(client) == 0
    assert client.jobs().find(job).state is JobState.QUEUED  # still in Redis, as it was
    with Client(client.url, team=client.team) as fresh:
        assert list(fresh.events().list(job=job.id)) == submitted


def test_which_runner_and_release_ran_a_task_is_answered_from_the_archive(
    client: Client, tmp_path: Path
) -> None:
    job = client.jobs().submit("traced", Leaf("t"))
    client.runner(tasks=[Leaf], cache_root=tmp_path / "cache").run_all()
    claims = list(client.events().list(types=["TaskClaimed"], job=job.id))
    assert claims and claims[0].event.runner_id  # type: ignore[union-attr]
    forget_jobs(client)
    Archiver(client, retention_ms=0).run_once()
    assert stream_lengths(client) == 0
    with Client(client.url, team=client.team) as auditor:
        assert list(auditor.events().list(types=["TaskClaimed"], job=job.id)) == claims


def test_an_expired_job_leaves_redis_and_is_still_found_from_the_archive(
    client: Client, tmp_path: Path
) -> None:
    """Retention and archive together: one pass removes the expired job (the sweep), archives
    the task log and trims it; the job is then answered from the archive alone."""
    from tests.tasks_fixture import FanOut, Sleep

    jobs = client.jobs()
    job = jobs.submit("archived", FanOut(2), retention=dt.timedelta(0))
    client.runner(tasks=[FanOut, Sleep], cache_root=tmp_path, runner_id="r-9").run_all()
    live = jobs.find(job)
    archiver = Archiver(client, retention_ms=0)
    done = {p.log: p for p in archiver.run_once()}
    archiver.release()
    assert all(not p.skipped for p in done.values()), done
    assert not client.tasks.job(job.id)  # removed from Redis ...
    for shard in client.tasks.shards:  # ... and its events left the live task log
        assert client.redis.xlen(shard.log("tasks")) == 0
    found = jobs.find(job.id)
    assert found.removed_reason == "expired" and found.state is live.state
    assert [(t.id, t.state, t.runner_id) for t in found.tasks] == [
        (t.id, t.state, t.runner_id) for t in live.tasks
    ]
    assert client.events().verify().ok
