"""`tilebox job` commands and the bad-input rules of the task plane."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from tests.conftest import Cli
from tests.servers import ServerProcess
from tests.tasks_fixture import Flaky, Leaf
from tilebox_core import Client, InvalidInput, Task
from tilebox_core.domain.events import ReleaseTask, TaskFailed
from tilebox_core.execution.context import TaskContext
from tilebox_core.task import CurrentTask, input_schema
from tilebox_runner import Runner

pytestmark = pytest.mark.cluster


def job_count(server: ServerProcess, team: str) -> int:
    """Jobs in the team's index, over every shard."""
    with Client(server.url, team=team) as client:
        return sum(int(client.redis.zcard(shard.jobs)) for shard in client.tasks.shards)


def deploy_leaf(client: Client) -> None:
    """A release on the default cluster that provides test.Leaf v1.2 with Leaf's input schema."""
    client.workflows().create("leafs")
    published = client.workflows().publish_release(
        "leafs", b"leaf", [ReleaseTask("test.Leaf", "v1.2", input_schema(Leaf))], runner="m:r"
    )
    client.workflows().deploy_release(published.release.id)


def test_submit_get_list_wait(cli: Cli, client: Client, tmp_path: Path) -> None:
    out = cli("job", "submit", "--name", "hello", "--task", "test.Leaf", "--version", "v1.0",
              "--input", '{"label": "x"}', "--json")  # fmt: skip
    submitted = json.loads(out.stdout)
    assert submitted["state"] == "queued" and submitted["cluster"] == "default"
    listed = json.loads(cli("job", "list", "--json").stdout)
    assert [j["id"] for j in listed] == [submitted["id"]]
    assert json.loads(cli("job", "list", "--state", "completed", "--json").stdout) == []
    client.runner(tasks=[Leaf], cache_root=tmp_path).run_all()
    waited = cli("job", "wait", submitted["id"])
    assert "completed" in waited.output
    shown = json.loads(cli("job", "get", submitted["id"], "--json").stdout)
    (task,) = shown["tasks"]
    assert task["state"] == "computed" and task["runner_id"]
    text = cli("job", "get", submitted["id"]).output
    assert "test.Leaf@v1.0  computed runner=" in text


def test_wait_exits_non_zero_for_a_failed_job(cli: Cli, client: Client, tmp_path: Path) -> None:
    job = client.jobs().submit("flaky", Flaky("a"))
    client.runner(tasks=[Flaky], cache_root=tmp_path).run_all()
    assert cli("job", "wait", job.id, ok=False).exit_code == 1
    assert "re-queued 1 failed task" in cli("job", "retry", job.id).output
    assert "cancelled job" in cli("job", "cancel", job.id).output


def test_input_file_and_schema_defaults(cli: Cli, client: Client, tmp_path: Path) -> None:
    deploy_leaf(client)
    (tmp_path / "input.json").write_text('{"label": "from-file"}')
    out = cli("job", "submit", "--name", "f", "--task", "test.Leaf",
              "--input-file", str(tmp_path / "input.json"), "--json")  # fmt: skip
    job = client.jobs().find(json.loads(out.stdout)["id"])
    assert job.tasks[0].version == "v1.2"  # the newest deployed version


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "test.Leaf", "--version", "v1.0", "--input", "{nope"], "is not valid JSON"),
        (["--task", "test.Leaf", "--version", "v1.0", "--input", "[1]"], "must be a JSON object"),
        (["--task", "test.Leaf", "--version", "1.0"], "invalid task version '1.0'"),
        (["--task", "test.Leaf", "--input", '{"label": 3}'], "label: 3 is not of type 'string'"),
        (["--task", "test.Leaf", "--input", "{}"], "'label' is a required property"),
        (["--task", "test.Unknown"], "no release deployed on cluster 'default' provides task"),
        (["--task", "test.Leaf", "--cluster", "mars"], "unknown cluster 'mars'"),
        (["--task", "test.Leaf", "--input", "{}", "--input-file", __file__], "either --input or"),
    ],
)
def test_bad_submissions_change_nothing(
    cli: Cli, client: Client, server: ServerProcess, team: str, args: list[str], message: str
) -> None:
    deploy_leaf(client)
    result = cli("job", "submit", "--name", "bad", *args, ok=False)
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output
    assert job_count(server, team) == 0


@pytest.mark.parametrize("command", ["get", "wait", "retry", "cancel"])
def test_unknown_job_ids(cli: Cli, command: str) -> None:
    result = cli("job", command, "no-such-job", ok=False)
    assert result.exit_code == 1 and "unknown job 'no-such-job'" in result.output


def test_depends_on_must_name_earlier_siblings() -> None:
    context = TaskContext(CurrentTask("t", "j", "n", "v1.0", 1), Path("/tmp"))
    other = TaskContext(CurrentTask("t2", "j", "n", "v1.0", 1), Path("/tmp"))
    foreign = other.submit_subtask(Leaf("x"))
    with pytest.raises(InvalidInput, match="submitted earlier in the same execute call"):
        context.submit_subtask(Leaf("y"), depends_on=[foreign])
    with pytest.raises(InvalidInput, match="submitted earlier"):
        context.submit_subtask(Leaf("y"), depends_on=["not-a-handle"])  # type: ignore[list-item]


class NoExecute(Task):
    label: str

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "test.Leaf", "v1.0"  # a stub of Leaf, as a client without its code has it


def test_a_stub_is_submitted_but_never_registered(client: Client, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"NoExecute \(test.Leaf\) in .* is not executable"):
        Runner([NoExecute])
    with pytest.raises(InvalidInput, match="is not executable"):
        client.runner(tasks=[NoExecute])
    stub_job = client.jobs().submit("stub", NoExecute("from a stub"))
    assert stub_job.state == "queued"
    # A runner that has the code runs what the stub submitted.
    client.runner(tasks=[Leaf], cache_root=tmp_path).run_all()
    assert client.jobs().find(stub_job.id).state == "completed"


def test_undecodable_input_fails_the_task_not_the_runner(client: Client, tmp_path: Path) -> None:
    bad = client.jobs().submit_by_name("bad", "test.Leaf", "v1.0", '{"label": 42}')
    good = client.jobs().submit("good", Leaf("fine"))
    client.runner(tasks=[Leaf], cache_root=tmp_path).run_all()
    assert client.jobs().find(bad.id).state == "failed"
    assert client.jobs().find(good.id).state == "completed"
    failure = next(s.event for s in client.tasks.replay() if isinstance(s.event, TaskFailed))
    assert failure.reason == "input" and "Expected `str`, got `int`" in failure.error
    assert not failure.will_retry


def test_job_events_appear_in_the_history(cli: Cli, client: Client, tmp_path: Path) -> None:
    job = client.jobs().submit("audit", Leaf("a"))
    client.runner(tasks=[Leaf], cache_root=tmp_path).run_all()
    history = json.loads(cli("events", "list", "--json").stdout)
    types = [e["type"] for e in history]
    assert types == ["JobSubmitted", "TaskSubmitted", "TaskClaimed", "TaskCompleted"]
    claimed = history[2]
    assert claimed["job_id"] == job.id and claimed["runner_id"]
    assert msgspec.json.decode(history[1]["input"]) == {"label": "a"}


def test_a_dependency_named_twice_counts_once(client: Client, tmp_path: Path) -> None:
    from tests.tasks_fixture import Twice

    job = client.jobs().submit("twice", Twice())
    client.runner(tasks=[Twice, Leaf], cache_root=tmp_path).run_all()
    assert client.jobs().find(job.id).state == "completed"


def test_job_list_filters_by_state_name_and_time(client: Client, cli: Cli, tmp_path: Path) -> None:
    done = [client.jobs().submit(f"scene-{i}", Leaf(str(i))) for i in range(3)]
    client.runner(tasks=[Leaf], cache_root=tmp_path).run_all()
    broken = client.jobs().submit("broken-scene", Flaky("x"))
    client.runner(tasks=[Flaky], cache_root=tmp_path).run_all()
    waiting = client.jobs().submit_many([("later-1", Leaf("a")), ("later-2", Leaf("b"))])
    cancelled = client.jobs().submit("dropped", Leaf("c"))
    client.jobs().cancel(cancelled.id)

    def listed(*args: str) -> list[tuple[str, str]]:
        rows = json.loads(cli("job", "list", "--json", *args).stdout)
        return [(row["name"], row["state"]) for row in rows]

    assert listed() == [
        ("dropped", "cancelled"), ("later-2", "queued"), ("later-1", "queued"),
        ("broken-scene", "failed"), ("scene-2", "completed"), ("scene-1", "completed"),
        ("scene-0", "completed"),
    ]  # newest first  # fmt: skip
    assert listed("--state", "completed", "--limit", "2") == [
        ("scene-2", "completed"), ("scene-1", "completed")
    ]  # fmt: skip
    assert listed("--name", "scene") == [
        ("broken-scene", "failed"), ("scene-2", "completed"), ("scene-1", "completed"),
        ("scene-0", "completed"),
    ]  # fmt: skip
    assert listed("--state", "failed") == [("broken-scene", "failed")]
    since = waiting[0].submitted_at.isoformat()
    assert [n for n, _ in listed("--since", since)] == ["dropped", "later-2", "later-1"]
    until = done[-1].submitted_at.isoformat()
    assert [n for n, _ in listed("--until", until)] == ["scene-2", "scene-1", "scene-0"]
    assert broken.id in cli("job", "list", "--state", "failed").output
