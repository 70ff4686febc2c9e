"""Task logs: what tasks log through ``context.logger`` is kept per job, bounded per execution,
written in batches, and read by ``jobs().logs``, ``tilebox job logs`` and the console."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.logging_tasks import TASKS, Chatty, Gated, Shaky
from tests.servers import ServerProcess
from tests.waiting import wait_for
from tilebox_core import Client, NotFound, TaskLogLine
from tilebox_core.domain.tasklogs import MAX_BYTES, MAX_LINES
from tilebox_core.logs import configure_logging
from tilebox_core.redis.tasklogs import TaskLogStore

TILEBOX = str(Path(sys.executable).parent / "tilebox")


class CountingStore(TaskLogStore):
    """The real store, counting its round trips (append calls) and the lines they carried."""

    calls = 0
    lines = 0

    def append(self, lines: list[tuple[str, TaskLogLine]]) -> None:  # type: ignore[override]
        self.calls += 1
        self.lines += len(lines)
        super().append(lines)


@pytest.fixture(autouse=True)
def _debug_logging() -> None:
    configure_logging("debug")  # what passes the level is kept: here, every line


def kept(lines: list[TaskLogLine]) -> list[TaskLogLine]:
    return [line for line in lines if not line.dropped]


@pytest.mark.cluster
def test_a_jobs_lines_are_kept_with_their_task_attempt_level_and_fields(client: Client) -> None:
    job = client.jobs().submit("chatty", Chatty(3))
    shaky = client.jobs().submit("shaky", Shaky(), max_retries=1)
    runner = client.runner(tasks=TASKS)
    store = runner.task_logs.store = CountingStore(client.tasks)
    runner.run_all()
    lines = client.jobs().logs(job)
    root = next(t for t in client.jobs().find(job.id).tasks if t.name == "logs.Chatty")
    assert [(line.level, line.message) for line in lines] == [
        ("info", "starting"), *(("debug", "x" * 8),) * 3, ("error", "band lookup failed"),
        ("warning", "done"),
    ]  # fmt: skip
    assert {line.task_id for line in lines} == {root.id}  # the quiet subtask logged nothing
    assert all(line.attempt == 1 and line.runner_id == runner.id for line in lines)
    assert lines[0].fields == {"lines": 3, "scene": {"id": 42, "bands": ["B04"]}}
    assert [line.fields["i"] for line in lines[1:4]] == [0, 1, 2]
    assert lines[4].fields["band"] == "B13"
    assert "ValueError: no such band" in lines[4].fields["exception"]
    assert lines[5].fields == {"path": "PosixPath('/tmp/out')"}  # not JSON: its repr
    assert lines[0].at <= lines[-1].at
    # Written in batches: far fewer round trips than lines.
    assert store.lines == len(lines) + 3 and store.calls <= 3  # and three lines of Shaky
    tried = client.jobs().logs(shaky.id)
    assert [(line.attempt, line.message) for line in tried] == [
        (1, "trying"),
        (1, "task failed"),
        (2, "trying"),
    ]  # the runner's own warning of the failure is in the task's log too
    assert tried[1].fields["error"] == "RuntimeError: flaky download"
    assert client.jobs().logs(job.id, task="nope") == []
    with pytest.raises(NotFound):
        client.jobs().logs("no-such-job")


def test_an_execution_keeps_at_most_its_bound_and_counts_the_rest(client: Client) -> None:
    many = client.jobs().submit("many", Chatty(MAX_LINES + 500))
    big = client.jobs().submit("big", Chatty(100, size=2048))
    client.runner(tasks=TASKS).run_all()
    lines = client.jobs().logs(many)
    assert len(kept(lines)) == MAX_LINES
    assert sum(line.dropped for line in lines) == 503  # 500 lines, the exception and "done"
    lines = client.jobs().logs(big)
    size = sum(len(line.message) + len(json.dumps(line.fields)) for line in kept(lines))
    assert MAX_BYTES - 2200 < size <= MAX_BYTES + 100
    assert len(kept(lines)) + sum(line.dropped for line in lines) == 103


def test_a_tasks_log_is_in_its_jobs_stream_a_key_per_job(client: Client) -> None:
    first = client.jobs().submit("a", Chatty(1))
    second = client.jobs().submit("b", Chatty(2))
    client.runner(tasks=TASKS).run_all()
    keys = client.redis.keys(f"*job:{first.id}:logs") + client.redis.keys(f"*job:{second.id}:logs")
    assert len(keys) == 2
    assert [client.redis.xlen(k) for k in keys] == [4, 5]


def test_job_logs_cli(cli: Cli, client: Client) -> None:
    job = client.jobs().submit("chatty", Chatty(2))
    client.runner(tasks=TASKS).run_all()
    root = next(t for t in client.jobs().find(job.id).tasks if t.name == "logs.Chatty")
    out = cli("job", "logs", job.id).output.splitlines()
    assert out[0].endswith(f"INFO     logs.Chatty@v1.0 {root.id[:8]}  starting  lines=2 scene={{'id': 42, 'bands': ['B04']}}")  # fmt: skip
    assert "ERROR    logs.Chatty@v1.0" in out[3] and "band lookup failed  band=B13" in out[3]
    assert "ValueError: no such band" in "\n".join(out)
    lines = [json.loads(line) for line in cli("job", "logs", job.id, "--json").output.splitlines()]
    assert [line["message"] for line in lines] == ["starting", "x" * 8, "x" * 8,
                                                   "band lookup failed", "done"]  # fmt: skip
    assert lines[0]["task"] == "logs.Chatty@v1.0" and lines[0]["task_id"] == root.id
    only = cli("job", "logs", job.id, "--task", root.id).output
    assert only.count("logs.Chatty@v1.0") == 5
    wrong = cli("job", "logs", job.id, "--task", "nope", ok=False)
    assert wrong.exit_code != 0 and f"job {job.id} has no task 'nope'" in wrong.output
    unknown = cli("job", "logs", "no-such-job", ok=False)
    assert unknown.exit_code != 0 and "unknown job 'no-such-job'" in unknown.output


def test_job_logs_follow_prints_lines_as_they_come_until_the_job_is_done(
    server: ServerProcess, team: str, client: Client, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    job = client.jobs().submit("gated", Gated(str(gate)))
    env = {"TILEBOX_REDIS_URL": server.url, "TILEBOX_TEAM": team, "PATH": str(Path(TILEBOX).parent)}
    follower = subprocess.Popen([TILEBOX, "job", "logs", job.id, "--follow"], env=env,
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        with client.runner(tasks=TASKS):
            assert follower.stdout is not None
            first = follower.stdout.readline()  # written while the task still runs
            assert "waiting at the gate" in first
            assert follower.poll() is None
            gate.touch()
            rest = follower.stdout.read()  # until it exits: the job is done
            follower.wait(30)
        assert "through the gate" in rest and follower.returncode == 0
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
        if follower.stdout is not None:
            follower.stdout.close()


def test_tasks_run_by_a_runner_process_keep_their_logs(
    server: ServerProcess, team: str, client: Client
) -> None:
    job = client.jobs().submit("chatty", Chatty(2))
    classes = ",".join(f"tests.logging_tasks:{c.__name__}" for c in TASKS)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.runner_process", server.url, team, "default", classes],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(lambda: client.jobs().find(job.id).state == "completed")
        # the runner process logs at warning: its task lines that pass are kept
        assert [line.message for line in client.jobs().logs(job)] == ["band lookup failed", "done"]
    finally:
        process.terminate()
        process.wait(30)
        if process.stdout is not None:
            process.stdout.close()
