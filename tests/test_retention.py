"""Retention: the team's setting and a job's own, the expiring-jobs index the task scripts keep, the
sweep that removes expired jobs wholly (also when killed mid-way), ``jobs().delete``, and a
removed job found from its history."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.tasks_fixture import FanOut, Flaky, Leaf, Sleep
from tests.waiting import wait_for
from tilebox_core import Client, Conflict, InvalidInput, JobState, NotFound, TaskState
from tilebox_core.domain.events import JobsDeleted, RetentionSet
from tilebox_core.domain.ids import utcnow
from tilebox_core.domain.projection import DEFAULT_RETENTION_SECONDS
from tilebox_core.domain.retention import format_duration, parse_duration
from tilebox_core.redis.eventstore import CONTROL
from tilebox_core.redis.taskstore import TASKS
from tilebox_core.sweep import Sweeper
from tilebox_runner.supervisor import ReleaseRunner

LATER = dt.timedelta(days=30)  # a sweep "now" past any retention a test gives


def keys_of(client: Client, job_id: str) -> list[str]:
    """Every key of job ``job_id`` that exists, and its entries in the shard's indexes."""
    shard = client.tasks.shard(job_id)
    ids = client.tasks.task_ids(job_id)
    candidates = [shard.job(job_id), shard.job_tasks(job_id), shard.job_logs(job_id),
                  *(shard.task(t) for t in ids)]  # fmt: skip
    found = [k for k in candidates if client.redis.exists(k)]
    for index in (shard.jobs, shard.expiring):
        if client.redis.zscore(index, job_id) is not None:
            found.append(f"{index}[{job_id}]")
    return found


def task_keys(client: Client, job_id: str, task_ids: list[str]) -> list[str]:
    shard = client.tasks.shard(job_id)
    return [k for k in (shard.task(t) for t in task_ids) if client.redis.exists(k)]


# --- durations and the team's setting -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0), ("30s", 30), ("15m", 900), ("12h", 43200), ("7d", 604800), ("1d12h", 129600),
     ("2w", 1209600), ("500ms", 0.5), (" 1.5h ", 5400)],
)  # fmt: skip
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


@pytest.mark.parametrize("text", ["", "7", "d", "-1d", "7 days", "1d-2h", "1y", "99999d"])
def test_bad_durations_say_how_to_write_one(text: str) -> None:
    with pytest.raises(InvalidInput, match=r"invalid retention .*(like 30s|up to 3650 days)"):
        parse_duration(text)


def test_the_team_retention_is_a_control_event(client: Client) -> None:
    jobs = client.jobs()
    assert jobs.retention() == dt.timedelta(seconds=DEFAULT_RETENTION_SECONDS)
    assert jobs.set_retention(dt.timedelta(days=1)) == dt.timedelta(days=1)
    jobs.set_retention(dt.timedelta(days=1))  # the same again: nothing appended
    events = [e for _, e in client.store.replay(CONTROL) if isinstance(e, RetentionSet)]
    assert [e.seconds for e in events] == [86400]
    assert events[0].actor == client.actor
    with pytest.raises(InvalidInput, match="invalid retention"):
        jobs.set_retention(dt.timedelta(seconds=-1))


def test_a_job_keeps_the_retention_it_was_submitted_with(client: Client) -> None:
    jobs = client.jobs()
    before = jobs.submit("before", Leaf("a"))
    jobs.set_retention(dt.timedelta(hours=1))
    after = jobs.submit("after", Leaf("b"))
    own = jobs.submit("own", Leaf("c"), retention=dt.timedelta(0))
    kept = {j.id: client.tasks.job(j.id)["retention_ms"] for j in (before, after, own)}
    assert kept == {before.id: 7 * 86400 * 1000, after.id: 3600 * 1000, own.id: 0}
    with pytest.raises(InvalidInput, match="invalid retention"):
        jobs.submit("bad", Leaf("d"), retention=dt.timedelta(days=-1))


# --- the expiring-jobs index ------------------------------------------------------------------------


def test_ending_a_job_indexes_it_and_a_retry_takes_it_out(client: Client, tmp_path: Path) -> None:
    jobs = client.jobs()
    done = jobs.submit("done", FanOut(3))
    failed = jobs.submit("failed", Flaky("x"))
    cancelled = jobs.submit("cancelled", Leaf("never"))
    running = jobs.submit("queued", Leaf("later"), cluster="default")
    jobs.cancel(cancelled)
    client.runner(tasks=[FanOut, Sleep, Flaky], cache_root=tmp_path).run_all()
    shard = client.tasks.shard
    ended = {j.id for j in (done, failed, cancelled, running)
             if client.redis.zscore(shard(j.id).expiring, j.id) is not None}  # fmt: skip
    assert ended == {done.id, failed.id, cancelled.id}
    assert jobs.retry(failed) == 1
    assert client.redis.zscore(shard(failed.id).expiring, failed.id) is None
    client.runner(tasks=[Flaky], cache_root=tmp_path).run_all()  # fails again
    assert jobs.find(failed).state is JobState.FAILED
    assert client.redis.zscore(shard(failed.id).expiring, failed.id) is not None


def test_an_ended_job_is_indexed_by_when_its_retention_is_past(
    client: Client, tmp_path: Path
) -> None:
    jobs = client.jobs()
    hour = jobs.submit("hour", Leaf("a"), retention=dt.timedelta(hours=1))
    team = jobs.submit("team's", Leaf("b"))
    earlier = jobs.submit("earlier", Leaf("c"), retention=dt.timedelta(minutes=5))
    # a job submitted before its hash held its retention: its description's applies
    client.redis.hdel(client.tasks.shard(earlier.id).job(earlier.id), "retention")
    before = utcnow().timestamp() * 1000
    client.runner(tasks=[Leaf], cache_root=tmp_path).run_all()
    after = utcnow().timestamp() * 1000
    for job, keep_ms in ((hour, 3_600_000), (team, DEFAULT_RETENTION_SECONDS * 1000),
                         (earlier, 300_000)):  # fmt: skip
        score = client.redis.zscore(client.tasks.shard(job.id).expiring, job.id)
        assert score is not None and before - 1000 <= score - keep_ms <= after + 1000


# --- the sweep ------------------------------------------------------------------------------------


@pytest.mark.cluster
def test_the_sweep_removes_expired_jobs_wholly_by_real_time(client: Client, tmp_path: Path) -> None:
    jobs = client.jobs()
    gone = jobs.submit("gone", FanOut(4), retention=dt.timedelta(0))
    kept = jobs.submit("kept", FanOut(2))  # the team's 7 days
    client.runner(tasks=[FanOut, Sleep], cache_root=tmp_path).run_all()
    task_ids = client.tasks.task_ids(gone.id)
    assert len(task_ids) == 5 and keys_of(client, gone.id)
    wait_for(lambda: jobs.expire() == 1)  # its end, by the server's clock, is past
    assert keys_of(client, gone.id) == [] and task_keys(client, gone.id, task_ids) == []
    assert len(keys_of(client, kept.id)) > 3
    assert jobs.expire() == 0  # nothing more is due
    deleted = [e for _, e in client.tasks.replay() if isinstance(e, JobsDeleted)]
    assert [(e.job_ids, e.reason, e.actor) for e in deleted] == [
        ([gone.id], "expired", client.actor)
    ]
    assert jobs.expire(utcnow() + LATER) == 1  # the kept one, once its 7 days are past
    assert keys_of(client, kept.id) == []


@pytest.mark.cluster
def test_a_removed_job_is_found_from_its_history(client: Client, tmp_path: Path) -> None:
    jobs = client.jobs()
    job = jobs.submit("history", FanOut(2), retention=dt.timedelta(0))
    failed = jobs.submit("broken", Flaky("y"), retention=dt.timedelta(0))
    client.runner(tasks=[FanOut, Sleep, Flaky], cache_root=tmp_path, runner_id="r-1").run_all()
    live = jobs.find(job)
    wait_for(lambda: jobs.expire() > 0 and not client.tasks.job(failed.id))
    found = jobs.find(job.id)
    assert found.removed_reason == "expired" and found.removed_at is not None
    assert found.state is JobState.COMPLETED and found.name == "history"
    assert [(t.id, t.name, t.version, t.state, t.runner_id, t.parent_id) for t in found.tasks] == [
        (t.id, t.name, t.version, t.state, t.runner_id, t.parent_id) for t in live.tasks
    ]
    assert {t.runner_id for t in found.tasks} == {"r-1"}
    broken = jobs.find(failed.id)
    assert broken.state is JobState.FAILED and broken.tasks[0].state is TaskState.FAILED
    assert broken.tasks[0].error is not None and "bug while processing y" in str(
        broken.tasks[0].error
    )
    assert jobs.wait(job.id, timeout=1).removed_reason == "expired"
    with pytest.raises(NotFound, match="unknown job"):
        jobs.find("0190a8c4-0000-7000-8000-000000000000")  # a UUIDv7 nothing was submitted as
    with pytest.raises(NotFound, match="unknown job"):
        jobs.find("nonsense")
    with pytest.raises(NotFound, match=f"job {job.id} was removed .* \\(expired\\) and its task"):
        jobs.logs(job.id)
    with pytest.raises(NotFound, match="unknown job"):
        jobs.logs("0190a8c4-0000-7000-8000-000000000000")


def test_a_retried_job_is_not_removed_while_it_runs(client: Client, tmp_path: Path) -> None:
    jobs = client.jobs()
    failed = jobs.submit("again", Flaky("z"), retention=dt.timedelta(0))
    client.runner(tasks=[Flaky], cache_root=tmp_path).run_all()
    # (retention 0: due as soon as it failed, then the retry takes it out of the index)
    jobs.retry(failed)
    assert jobs.expire(utcnow() + LATER) == 0
    found = jobs.find(failed)
    assert found.state is JobState.RUNNING and found.removed_at is None  # its task re-queued


# --- delete ---------------------------------------------------------------------------------------


@pytest.mark.cluster
def test_delete_removes_an_ended_job_and_refuses_a_running_one(
    client: Client, tmp_path: Path
) -> None:
    jobs = client.jobs()
    done = jobs.submit("done", Leaf("a"))
    client.runner(tasks=[Leaf], cache_root=tmp_path).run_all()
    queued = jobs.submit("queued", Leaf("b"))
    deleted = jobs.delete(done.id)
    assert deleted.removed_reason == "deleted" and keys_of(client, done.id) == []
    assert jobs.find(done.id).removed_reason == "deleted"
    with pytest.raises(NotFound, match="removed already"):
        jobs.delete(done.id)
    with pytest.raises(Conflict, match=r"is queued: cancel it first .* or pass --force"):
        jobs.delete(queued)
    assert keys_of(client, queued.id)
    lane = client.tasks.lane("default", "test.Leaf", "v1.0", queued.id)
    assert client.redis.xlen(lane) == 1
    forced = jobs.delete(queued, force=True)
    assert forced.removed_reason == "deleted" and keys_of(client, queued.id) == []
    assert client.redis.xlen(lane) == 0
    assert jobs.find(queued.id).state is JobState.CANCELLED


# --- a sweep killed mid-way -----------------------------------------------------------------------

SWEEPER = """
import sys, datetime as dt
from tilebox_core import Client
from tilebox_core.domain.ids import utcnow
import tilebox_core.jobs
tilebox_core.jobs.EXPIRE_BATCH = 20  # many batches: the kill lands between two
with Client(sys.argv[1], team=sys.argv[2], actor="user:sweeper") as client:
    print("sweeping", flush=True)
    client.jobs().expire(utcnow() + dt.timedelta(days=30))
"""


def test_a_sweep_killed_mid_way_leaves_no_half_removed_job(
    client: Client, team_url: str, team: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tilebox_core.jobs as jobs_module

    jobs = client.jobs()
    submitted = jobs.submit_many([(f"j{i}", FanOut(3)) for i in range(600)])
    client.runner(tasks=[FanOut, Sleep], cache_root=tmp_path, concurrency=8).run_all()
    tasks_of = {j.id: client.tasks.task_ids(j.id) for j in submitted}
    script = tmp_path / "sweeper.py"
    script.write_text(SWEEPER)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    process = subprocess.Popen([sys.executable, str(script), team_url, team], env=env,
                               stdout=subprocess.PIPE)  # fmt: skip
    assert process.stdout is not None and process.stdout.readline() == b"sweeping\n"
    first = submitted[0].id
    shard = client.tasks.shard(first)
    # killed once the sweep has removed some jobs, not all (a batch is 20 of the 600)
    wait_for(lambda: 0 < client.redis.zcard(shard.jobs) < 600, interval=0.001)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stdout.close()
    left = [j.id for j in submitted if client.tasks.job(j.id)]
    for job in submitted:
        present = keys_of(client, job.id) + task_keys(client, job.id, tasks_of[job.id])
        if job.id in left:
            assert len(task_keys(client, job.id, tasks_of[job.id])) == 4, job.id
            assert client.redis.exists(shard.job_tasks(job.id))
        else:
            assert present == [], present
    assert jobs.expire(utcnow() + LATER) == len(left)
    assert all(keys_of(client, j.id) == [] for j in submitted)
    removed = [i for _, e in client.tasks.replay() if isinstance(e, JobsDeleted) for i in e.job_ids]
    assert sorted(removed) == sorted(j.id for j in submitted)  # each once
    monkeypatch.setattr(jobs_module, "EXPIRE_BATCH", 1)
    assert jobs.expire(utcnow() + LATER) == 0


def test_the_task_log_names_each_removal(client: Client) -> None:
    jobs = client.jobs()
    job = jobs.submit("x", Leaf("x"))
    jobs.cancel(job)
    jobs.delete(job)
    events = [e for _, e in client.store.replay_stream(client.tasks.shard(job.id).log(TASKS))]
    assert [type(e).__name__ for e in events][-1] == "JobsDeleted"


# --- the command line -----------------------------------------------------------------------------


def test_team_retention_shows_and_sets_it(cli: Cli, client: Client) -> None:
    assert cli("team", "retention").output.endswith("is 7d\n")
    assert cli("team", "retention", "1d12h").output.endswith("set to 1d12h\n")
    assert json.loads(cli("team", "retention", "--json").stdout)["seconds"] == 129600
    bad = cli("team", "retention", "7 days please", ok=False)
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert bad.output.strip().splitlines() == [
        "Error: invalid retention '7 days please': use a number and a unit (ms, s, m, h, d, w), "
        "like 30s, 12h, 7d or 1d12h; 0 removes a job as soon as it ends"
    ]
    assert client.jobs().retention() == dt.timedelta(hours=36)  # unchanged by the bad one


def test_job_submit_retention_delete_and_get_of_a_removed_job(cli: Cli, client: Client) -> None:
    bad = cli("job", "submit", "--name", "n", "--task", "test.Leaf", "--version", "v1.0",
              "--input", '{"label": "x"}', "--retention", "soon", ok=False)  # fmt: skip
    assert bad.exit_code == 1 and "invalid retention 'soon'" in bad.output
    assert client.tasks.job_ids() == []  # nothing submitted
    out = cli("job", "submit", "--name", "n", "--task", "test.Leaf", "--version", "v1.0",
              "--input", '{"label": "x"}', "--retention", "0", "--json").stdout  # fmt: skip
    job_id = json.loads(out)["id"]
    assert client.tasks.job(job_id)["retention_ms"] == 0
    running = cli("job", "delete", job_id, ok=False)
    assert running.exit_code == 1 and "is queued: cancel it first" in running.output
    assert (
        "deleted job" in cli("job", "delete", job_id, "--force").output
    )  # off a terminal: no question
    text = cli("job", "get", job_id).output
    assert "removed   " in text and "(deleted), from history" in text and "cancelled" in text
    got = json.loads(cli("job", "get", job_id, "--json").stdout)
    assert got["removed_reason"] == "deleted" and got["state"] == "cancelled"
    again = cli("job", "delete", job_id, ok=False)
    assert again.exit_code == 1 and "was removed already" in again.output
    unknown = cli("job", "delete", "no-such-job", ok=False)
    assert unknown.exit_code == 1 and "unknown job 'no-such-job'" in unknown.output


# --- the runners' duty ----------------------------------------------------------------------------


def test_one_sweeper_of_a_team_holds_the_lease(client: Client) -> None:
    jobs = client.jobs()
    job = jobs.submit("s", Leaf("s"), retention=dt.timedelta(0))
    jobs.cancel(job)
    first, second = Sweeper(client, "runner-a", 0.01), Sweeper(client, "runner-b", 0.01)
    wait_for(lambda: first.tick() == 1)  # a takes the lease and sweeps
    assert keys_of(client, job.id) == []
    other = jobs.submit("t", Leaf("t"), retention=dt.timedelta(0))
    jobs.cancel(other)
    assert second.tick() == 0 and client.tasks.job(other.id)  # b does not: a holds the lease
    assert client.redis.ttl(client.tasks.keys.sweep_lease) > 0
    assert Sweeper(client, "off", 0).tick() == 0  # interval 0: never


def test_a_sweep_that_hit_its_limit_goes_on_at_the_next_tick(client: Client) -> None:
    jobs = client.jobs()
    for name in "abc":
        jobs.cancel(jobs.submit(name, Leaf(name), retention=dt.timedelta(0)))
    sweeper = Sweeper(client, "runner-a", interval=3600, limit=2)
    wait_for(lambda: sweeper.tick() == 2)  # (the ends, by the server's clock, are past)
    assert sweeper.tick() == 1  # at once, not an hour later: there was more
    assert sweeper.tick() == 0  # that was all: the next is an interval away


def test_a_release_runner_sweeps_its_team(client: Client, tmp_path: Path) -> None:
    job = client.jobs().submit("r", Leaf("r"), retention=dt.timedelta(0))
    client.jobs().cancel(job)
    runner = ReleaseRunner(client, stop_when_idle=True, sweep_seconds=0.01, home=tmp_path,
                           block_ms=10)  # fmt: skip
    wait_for(lambda: runner.run() is None and not client.tasks.job(job.id))
    assert client.jobs().find(job.id).removed_reason == "expired"


def test_runner_start_refuses_a_bad_cache_bound(cli: Cli) -> None:
    result = cli("runner", "start", "--cache-max-bytes", "huge", ok=False)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines() == [
        "Error: invalid size 'huge': use a number of bytes with an optional unit, like 500MB, "
        "2GiB or 10G"
    ]
