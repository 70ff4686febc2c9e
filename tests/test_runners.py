"""Runners as real processes: crashes, server restarts, retries after a fix, routing, poison, drain."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import ServerProcess
from tests.tasks_fixture import (
    Busy,
    Crash,
    FanOut,
    Flaky,
    FlakyFixed,
    Leaf,
    Pipeline,
    Sleep,
)
from tests.waiting import wait_for
from tilebox_core import Client
from tilebox_core.domain.events import (
    TaskClaimed,
    TaskCompleted,
    TaskFailed,
    TaskLeaseExpired,
    TaskReleased,
    TaskSubmitted,
)
from tilebox_core.redis.taskstore import STAGE_CHUNK

ROOT = Path(__file__).resolve().parents[1]
FANOUT = "tests.tasks_fixture:FanOut,tests.tasks_fixture:Sleep"


class Runners:
    """Runner subprocesses started by a test, all stopped at teardown."""

    def __init__(self, url: str, team: str, env: dict[str, str]) -> None:
        self.url, self.team, self.env = url, team, env
        self.processes: list[subprocess.Popen[str]] = []

    def start(self, classes: str, cluster: str = "default", lease: float = 1.0, prefetch: int = 4):  # type: ignore[no-untyped-def]
        args = [sys.executable, "-m", "tests.runner_process", self.url, self.team, cluster, classes,
                str(lease), str(prefetch)]  # fmt: skip
        process = subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(10)
            if process.stdout is not None:
                process.stdout.close()


@pytest.fixture
def runners(private_server: ServerProcess, team: str, tmp_path: Path) -> Iterator[Runners]:
    env = dict(
        os.environ, TILEBOX_HOME=str(tmp_path / "home"), TILEBOX_TEST_TRACE=str(tmp_path / "trace")
    )
    group = Runners(private_server.url, team, env)
    yield group
    group.stop_all()


@pytest.fixture
def pclient(private_server: ServerProcess, team: str) -> Iterator[Client]:
    with Client(private_server.url, team=team, retries=20) as c:
        yield c


def events_of(client: Client, kind: type) -> list:
    return [s.event for s in client.tasks.replay() if isinstance(s.event, kind)]


def assert_exactly_once(client: Client, job_id: str) -> None:
    job = client.jobs().find(job_id)
    completions = collections.Counter(e.task_id for e in events_of(client, TaskCompleted))
    assert set(completions) == {t.id for t in job.tasks}
    assert max(completions.values()) == 1


@pytest.mark.slow
def test_kill_9_of_a_runner_loses_no_task(runners: Runners, pclient: Client) -> None:
    victims = runners.start(FANOUT)
    runners.start(FANOUT)
    runners.start(FANOUT)
    job = pclient.jobs().submit("thousand", FanOut(1000))
    wait_for(
        lambda: (
            pclient.jobs().find(job.id, with_tasks=False).tasks_by_state.get("computed", 0) > 150
        )
    )
    victims.send_signal(signal.SIGKILL)
    done = pclient.jobs().wait(job.id, timeout=120)
    assert done.state == "completed" and done.total_tasks == 1001
    assert done.tasks_by_state == {"computed": 1001}
    assert_exactly_once(pclient, job.id)
    # What the dead runner held was taken over after its lease expired.
    assert all(e.previous_runner_id for e in events_of(pclient, TaskLeaseExpired))


@pytest.mark.slow
def test_kill_9_while_a_large_fan_out_is_staged_creates_each_subtask_once(
    runners: Runners, pclient: Client
) -> None:
    count = 12 * STAGE_CHUNK  # created a chunk per call, before the root's finish
    victim = runners.start(FANOUT)  # alone at first: it runs the root
    job = pclient.jobs().submit("staged", FanOut(count))
    subtasks = pclient.store.keys.job_tasks(job.id)  # the job's task list: roots aside
    wait_for(lambda: pclient.redis.llen(subtasks) > 0, interval=0.002)
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    assert pclient.redis.llen(subtasks) < count  # died between two chunks
    runners.start(FANOUT)
    runners.start(FANOUT)
    done = pclient.jobs().wait(job.id, timeout=180)
    # The root ran again and created only the subtasks missing: their ids derive from its own.
    assert done.state == "completed" and done.total_tasks == count + 1
    assert done.tasks_by_state == {"computed": count + 1}
    assert_exactly_once(pclient, job.id)
    submitted = collections.Counter(e.task_id for e in events_of(pclient, TaskSubmitted))
    assert len(submitted) == count + 1 and max(submitted.values()) == 1
    root = pclient.jobs().find(job.id).tasks[0].id
    assert [e.task_id for e in events_of(pclient, TaskLeaseExpired)].count(root) == 1


@pytest.mark.slow
def test_runners_ride_over_a_server_restart(
    runners: Runners, pclient: Client, private_server: ServerProcess, tmp_path: Path
) -> None:
    runners.start(FANOUT)
    runners.start(FANOUT)
    job = pclient.jobs().submit("restart", FanOut(300))
    wait_for(
        lambda: pclient.jobs().find(job.id, with_tasks=False).tasks_by_state.get("computed", 0) > 30
    )
    private_server.restart()  # kill -9 and start again on the same AOF
    done = pclient.jobs().wait(job.id, timeout=120)
    assert done.state == "completed" and done.tasks_by_state == {"computed": 301}
    assert_exactly_once(pclient, job.id)


@pytest.mark.cluster
def test_failed_task_is_retried_then_fixed_by_a_compatible_release(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = tmp_path / "trace"
    monkeypatch.setenv("TILEBOX_TEST_TRACE", str(trace))
    job = client.jobs().submit("story", Pipeline())
    client.runner(tasks=[Pipeline, Leaf, Flaky], cache_root=tmp_path).run_all()
    failed = client.jobs().find(job.id)
    assert failed.state == "failed"
    assert trace.read_text().split().count("flaky-x") == 3  # first run + max_retries=2
    failures = events_of(client, TaskFailed)
    assert [f.will_retry for f in failures] == [True, True, False]
    assert "RuntimeError: bug while processing x" in failures[-1].error

    retried = client.jobs().retry(job.id)
    assert retried == 1
    trace.write_text("")
    # The fix: same name and major, higher minor; a v1.1 runner serves the v1.0 task.
    client.runner(tasks=[Pipeline, Leaf, FlakyFixed], cache_root=tmp_path).run_all()
    done = client.jobs().find(job.id)
    assert done.state == "completed"
    assert trace.read_text().split() == ["fixed-x"]  # finished work was not rerun
    assert_exactly_once(client, job.id)


@pytest.mark.cluster
def test_runners_claim_only_what_they_can_run(client: Client, tmp_path: Path) -> None:
    client.clusters().create("other")
    here = client.jobs().submit("here", Leaf("x"))
    there = client.jobs().submit("there", Leaf("y"), cluster="other")
    newer = client.jobs().submit_by_name("newer", "test.Leaf", "v1.3", '{"label": "z"}')
    other_major = client.jobs().submit_by_name("v2", "test.Leaf", "v2.0", '{"label": "w"}')
    client.runner("other", [Sleep], cache_root=tmp_path).run_all()  # serves nothing submitted
    client.runner(tasks=[Leaf], cache_root=tmp_path).run_all()  # default cluster, Leaf v1.0
    states = [client.jobs().find(j.id).state for j in (here, there, newer, other_major)]
    # v1.3 needs a runner with at least v1.3; v2.0 needs major 2; "other" has no Leaf runner.
    assert states == ["completed", "queued", "queued", "queued"]
    (claim,) = events_of(client, TaskClaimed)
    assert claim.task_id == client.jobs().find(here.id).tasks[0].id


def test_a_poison_task_ends_failed_after_bounded_deliveries(
    runners: Runners, pclient: Client
) -> None:
    job = pclient.jobs().submit("poison", Crash())
    for _ in range(8):  # each runner dies on it; a new one takes the expired lease over
        process = runners.start("tests.tasks_fixture:Crash", lease=0.3, prefetch=1)
        failed = lambda: pclient.jobs().find(job.id).state == "failed"  # noqa: E731
        wait_for(lambda process=process, failed=failed: process.poll() is not None or failed())
        if failed():
            break
        assert process.returncode == 42  # the task killed it
    done = pclient.jobs().find(job.id)
    assert done.state == "failed"
    (failure,) = events_of(pclient, TaskFailed)
    assert failure.reason == "poison" and "delivered 6 times" in failure.error


def test_a_long_cpu_bound_task_keeps_its_lease(
    runners: Runners, pclient: Client, tmp_path: Path
) -> None:
    job = pclient.jobs().submit("busy", Busy(2.0))
    runners.start("tests.tasks_fixture:Busy", lease=0.6)
    runners.start("tests.tasks_fixture:Busy", lease=0.6)
    assert pclient.jobs().wait(job.id, timeout=60).state == "completed"
    assert len(events_of(pclient, TaskClaimed)) == 1
    assert events_of(pclient, TaskLeaseExpired) == []


def test_sigterm_drains_and_exits(runners: Runners, pclient: Client, tmp_path: Path) -> None:
    pclient.jobs().submit("drain", FanOut(6))
    runner = runners.start(
        "tests.tasks_fixture:FanOut,tests.tasks_fixture:Busy,tests.tasks_fixture:Sleep"
    )
    wait_for(lambda: len(events_of(pclient, TaskCompleted)) >= 1)
    slow = pclient.jobs().submit("slow", Busy(1.0))
    wait_for(lambda: any(e.task_id == pclient.jobs().find(slow.id).tasks[0].id
                         for e in events_of(pclient, TaskClaimed)))  # fmt: skip
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(30) == 0
    assert pclient.jobs().find(slow.id).state == "completed"  # in-flight work finished first
    released = events_of(pclient, TaskReleased)
    for event in released:  # claimed but not started: handed back, queued again
        assert pclient.jobs().find(event.job_id).state in ("queued", "running", "completed")


@pytest.mark.cluster
def test_cancel_stops_handing_out_tasks(client: Client, tmp_path: Path) -> None:
    job = client.jobs().submit("cancel-me", FanOut(5))
    client.jobs().cancel(job.id)
    client.runner(tasks=[FanOut, Sleep], cache_root=tmp_path).run_all()
    done = client.jobs().find(job.id)
    assert done.state == "cancelled" and done.tasks_by_state == {"cancelled": 1}
    assert events_of(client, TaskClaimed) == []


@pytest.mark.cluster
def test_cancel_lets_running_tasks_finish_without_subtasks(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = client.jobs().submit("cancel-later", FanOut(5))
    runner = client.runner(tasks=[FanOut, Sleep], cache_root=tmp_path)
    original = FanOut.execute

    def cancelling(self: FanOut, context) -> None:  # type: ignore[no-untyped-def]
        client.jobs().cancel(job.id)  # cancelled while this task runs
        original(self, context)

    monkeypatch.setattr(FanOut, "execute", cancelling)
    runner.run_all()
    done = client.jobs().find(job.id)
    assert done.state == "cancelled"
    assert done.tasks_by_state == {"computed": 1}  # it finished; its 5 subtasks were not queued


@pytest.mark.cluster
def test_run_all_returns_after_a_cancel_in_a_lane_it_read_before(
    client: Client, tmp_path: Path
) -> None:
    # The cancel deletes the lane entry of a task no runner has read: the lane's consumer group
    # never reads it, and "nothing left" must not count it as waiting (issue 11, bug 1).
    client.clusters().create("dev")
    runner = client.runner("dev", [Leaf], cache_root=tmp_path)
    client.jobs().submit("first", Leaf("1"), cluster="dev")
    runner.run_all()
    cancelled = client.jobs().submit("second", Leaf("2"), cluster="dev")
    client.jobs().cancel(cancelled.id)
    assert client.tasks.lane_backlog(runner.lanes) == (0, 0)
    run = threading.Thread(target=runner.run_all, daemon=True)
    run.start()
    run.join(10)
    if run.is_alive():
        runner.stop()
        run.join(10)
        raise AssertionError("run_all did not return")
    # An entry deleted before one still waiting: that one is counted, and run.
    dropped = client.jobs().submit("third", Leaf("3"), cluster="dev")
    kept = client.jobs().submit("fourth", Leaf("4"), cluster="dev")
    client.jobs().cancel(dropped.id)
    assert client.tasks.lane_backlog(runner.lanes) == (1, 0)
    runner.run_all()
    assert client.jobs().find(kept.id).state == "completed"
    assert client.jobs().find(cancelled.id).tasks_by_state == {"cancelled": 1}
    assert client.tasks.lane_backlog(runner.lanes) == (0, 0)
