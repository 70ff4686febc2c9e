"""The operator's CLI (issue 16): failures you can see, errors in JSON, edges that hold.

Each test goes through the real ``tilebox`` entry point (in-process) against a real server and
checks the exit code, the one line, and that nothing changed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import redis

from tests.conftest import ACTOR_FROM_SETTINGS, Cli
from tests.servers import ServerProcess
from tests.tasks_fixture import Flaky, Leaf
from tilebox_core import Client
from tilebox_core.domain.events import ReleaseTask
from tilebox_core.task import input_schema


def control_length(server: ServerProcess, team: str) -> int:
    with redis.Redis.from_url(server.url) as r:
        return int(r.xlen(f"tilebox:{{{team}}}:log:control"))


def job_count(server: ServerProcess, team: str) -> int:
    with redis.Redis.from_url(server.url) as r:
        return int(r.zcard(f"tilebox:{{{team}}}:jobs"))


def publish(client: Client, workflow: str, content: bytes, tasks: list[ReleaseTask]) -> str:
    if workflow not in client.state().workflows:
        client.workflows().create(workflow)
    return client.workflows().publish_release(workflow, content, tasks, runner="m:r").release.id


def deploy_leaf(client: Client, cluster: str = "default") -> str:
    """A release providing test.Leaf v1.2 (Leaf's input schema) deployed on ``cluster``."""
    release = publish(
        client, "leafs", b"leaf", [ReleaseTask("test.Leaf", "v1.2", input_schema(Leaf))]
    )
    client.workflows().deploy_release(release, clusters=[cluster])
    return release


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# --- failures and waiting ---------------------------------------------------------------------


def test_retry_says_when_the_release_that_failed_is_still_deployed(
    cli: Cli, client: Client, tmp_path: Path
) -> None:
    broken = publish(client, "flaky", b"v1.0", [ReleaseTask("test.Flaky", "v1.0")])
    client.workflows().deploy_release(broken)
    job = client.jobs().submit("flaky", Flaky("a"))
    client.runner(tasks=[Flaky], cache_root=tmp_path, release_id=broken).run_all()
    assert client.jobs().find(job.id).state == "failed"

    result = cli("job", "retry", job.id)
    assert result.exit_code == 0
    assert result.stdout == f"re-queued 1 failed task of job {job.id}\n"  # the retry happened
    (warning,) = lines(result.stderr)
    assert f"release {broken} that failed test.Flaky is still the one deployed" in warning
    assert "workflow 'flaky' on cluster 'default'" in warning and "likely fail again" in warning
    assert client.jobs().find(job.id).tasks[0].state == "queued"

    client.runner(tasks=[Flaky], cache_root=tmp_path, release_id=broken).run_all()
    fixed = publish(client, "flaky", b"v1.1", [ReleaseTask("test.Flaky", "v1.1")])
    client.workflows().deploy_release(fixed)
    again = json.loads(cli("job", "retry", job.id, "--json").stdout)
    assert again == {"job_id": job.id, "requeued": 1, "warnings": []}  # a fix is deployed: quiet


def test_wait_off_a_terminal_says_why_the_job_is_queued(
    cli: Cli, client: Client, server: ServerProcess, team: str
) -> None:
    job = client.jobs().submit("stuck", Leaf("x"))
    result = cli("job", "wait", job.id, "--timeout", "1", "--diagnose-after", "0.3", ok=False)
    assert result.exit_code == 2
    reason = (
        "test.Leaf@v1.0: no release deployed on cluster 'default' provides task 'test.Leaf'; "
        "deploy one with 'tilebox workflow deploy-release'"
    )
    assert result.stdout == f"job {job.id} queued: 1 queued\nwaiting   {reason}\n"
    assert result.stderr == f"still queued: {reason}\n"  # once, however long it waited

    shown = json.loads(cli("job", "wait", job.id, "--timeout", "0.3", "--json", ok=False).stdout)
    assert shown["state"] == "queued" and shown["waiting_because"] == [reason]
    assert job_count(server, team) == 1


def test_submit_of_an_undeployed_version_warns_or_with_require_deployed_refuses(
    cli: Cli, client: Client, server: ServerProcess, team: str
) -> None:
    deploy_leaf(client)
    args = ["job", "submit", "--name", "v9", "--task", "test.Leaf", "--version", "v9.0",
            "--input", '{"label": "x"}']  # fmt: skip
    refused = cli(*args, "--require-deployed", ok=False)
    assert refused.exit_code == 1 and refused.stdout == ""
    (line,) = lines(refused.stderr)
    assert "only incompatible versions are deployed on cluster 'default' (v1.2)" in line
    assert "nothing submitted (--require-deployed)" in line
    assert job_count(server, team) == 0

    submitted = cli(*args, "--json")
    assert submitted.exit_code == 0 and json.loads(submitted.stdout)["state"] == "queued"
    (warning,) = lines(submitted.stderr)
    assert warning.startswith("warning: submitted, but it will wait: test.Leaf@v9.0: only")
    assert job_count(server, team) == 1

    quiet = cli("job", "submit", "--name", "ok", "--task", "test.Leaf", "--version", "v1.1",
                "--input", '{"label": "x"}', "--require-deployed")  # fmt: skip
    assert quiet.stderr == "" and job_count(server, team) == 2


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "exit_code", "message"),
    [
        (["cluster", "get", "nope"], "not_found", 1, "unknown cluster 'nope'"),
        (["cluster", "create", "x", "--slug", "Bad Slug"], "invalid_input", 1, "invalid cluster slug"),
        (["cluster", "delete", "default"], "conflict", 1, "default cluster cannot be deleted"),
        (["job", "submit", "--task", "t"], "usage", 2, "Missing option '--name'"),
        (["workflow", "deploy-release", "--release", "x", "--latest"], "usage", 2, "exactly one"),
        (["events", "list", "--type", "Nope"], "invalid_input", 1, "unknown event type Nope"),
        (["deployments", "--as-of", "soon"], "usage", 2, "is not a time"),
    ],
)  # fmt: skip
def test_json_errors_are_a_json_document_on_stderr(
    cli: Cli, server: ServerProcess, team: str, args: list[str], code: str, exit_code: int,
    message: str,
) -> None:  # fmt: skip
    cli("cluster", "create", "seed")
    before = control_length(server, team)
    result = cli(*args, "--json", ok=False)
    assert result.exit_code == exit_code and result.stdout == ""
    error = json.loads(result.stderr)["error"]
    assert error["code"] == code and message in error["message"], error
    assert control_length(server, team) == before
    plain = cli(*args, ok=False)  # without --json: click's one line, the same exit code
    assert plain.exit_code == exit_code and message in plain.stderr and "{" not in plain.stderr


def test_json_errors_of_an_unreachable_server_and_an_incompatible_release(
    team: str, cli: Cli, client: Client
) -> None:
    down = Cli("redis://127.0.0.1:1/0", team)("cluster", "list", "--json", ok=False)
    assert down.exit_code == 1
    assert json.loads(down.stderr)["error"]["code"] == "store_unavailable"

    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    release = publish(client, "w", b"1", [ReleaseTask("w.T", "v1.0", schema)])
    client.workflows().deploy_release(release)
    changed = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    forced = client.workflows().publish_release(
        "w", b"2", [ReleaseTask("w.T", "v1.0", changed)], runner="m:r", force=True
    )
    refused = cli("workflow", "deploy-release", "--release", forced.release.id, "--json", ok=False)
    assert refused.exit_code == 1 and refused.stdout == ""
    error = json.loads(refused.stderr)["error"]
    assert error["code"] == "incompatible" and "--force" in error["message"]
    assert client.deployments().current() == {"default": {"w": release}}


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: p.write_text('{"label": ' + "[" * 5000 + "]" * 5000 + "}"), "nested too deeply"),
        (lambda p: p.write_text('{"label": "\\ud800"}'), "unpaired UTF-16 surrogate escape"),
        (lambda p: p.write_bytes(b'{"label": "\xff"}'), "is not valid UTF-8 text"),
        (lambda p: p.write_text('{"label": "x", "lable": "y"}'),
         "unknown field 'lable' (the task's fields: label)"),
        (lambda p: p.write_text('{"label": "' + "x" * 2000 + '"}'),
         "is 2,013 bytes, over the limit of 1,000 bytes"),
    ],
    ids=["deep", "surrogate", "not-utf8", "unknown-field", "too-large"],
)  # fmt: skip
def test_bad_input_files_are_one_clear_line(
    cli: Cli, client: Client, server: ServerProcess, team: str, tmp_path: Path, write, message: str,  # type: ignore[no-untyped-def]
) -> None:  # fmt: skip
    deploy_leaf(client)
    path = tmp_path / "input.json"
    write(path)
    cli.env["TILEBOX_MAX_INPUT_BYTES"] = "1000" if "limit" in message else "100000"
    result = cli("job", "submit", "--name", "bad", "--task", "test.Leaf", "--input-file", str(path),
                 ok=False)  # fmt: skip
    assert result.exit_code == 1 and result.stdout == ""
    (line,) = lines(result.stderr)
    assert message in line and "Traceback" not in line, line
    assert job_count(server, team) == 0


def test_input_size_limit_option_and_default(
    cli: Cli, client: Client, server: ServerProcess, team: str
) -> None:
    deploy_leaf(client)
    big = '{"label": "' + "x" * (1024 * 1024) + '"}'
    args = ["job", "submit", "--name", "big", "--task", "test.Leaf", "--input", big]
    refused = cli(*args, ok=False)
    assert refused.exit_code == 1 and "over the limit of 1,048,576 bytes" in refused.stderr
    assert job_count(server, team) == 0
    cli(*args, "--max-input-bytes", str(2 * 1024 * 1024))
    assert job_count(server, team) == 1


def test_init_with_a_name_that_has_no_slug_takes_slug(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = cli("workflow", "init", str(tmp_path / "a"), "--name", "東京", ok=False)
    assert refused.exit_code == 1 and "pass one with --slug" in refused.stderr
    assert not (tmp_path / "a").exists()
    made = cli("workflow", "init", str(tmp_path / "a"), "--name", "東京", "--slug", "tokyo")
    assert 'slug = "tokyo"' in (tmp_path / "a" / "tilebox.workflow.toml").read_text()
    assert "next: tilebox workflow create 東京 --slug tokyo" in made.stdout
    spaced = cli("workflow", "init", str(tmp_path / "b"), "--name", "Hello Scenes")
    assert 'next: tilebox workflow create "Hello Scenes", then' in spaced.stdout
    bad = cli("workflow", "init", str(tmp_path / "c"), "--slug", "Not A Slug", ok=False)
    assert "invalid workflow slug 'Not A Slug'" in bad.stderr and not (tmp_path / "c").exists()


def test_an_invalid_version_in_task_code_names_the_class_and_the_file(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli("workflow", "init", str(tmp_path / "p"), "--name", "Scenes")
    runner = tmp_path / "p" / "scenes" / "runner.py"
    runner.write_text(runner.read_text().replace('"scenes.Say", "v1.0"', '"scenes.Say", "1.0"'))
    monkeypatch.chdir(tmp_path / "p")
    result = cli("workflow", "build-release", ok=False)
    assert result.exit_code == 1
    (line,) = lines(result.stderr)
    assert "task class Say in scenes/runner.py: invalid task version '1.0'" in line, line
    assert "InvalidInput" not in line


# --- edges ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cluster", "create", "x" * 300, "--slug", "long"],
         "cluster name is 300 characters long, over the limit of 128"),
        (["workflow", "create", "y" * 100_000],
         "workflow name is 100,000 characters long, over the limit of 128"),
        (["cluster", "create", "bell\x07", "--slug", "bell"], "control character U+0007"),
        (["workflow", "create", "two\nlines"], "control character U+000A"),
    ],
)  # fmt: skip
def test_names_have_a_limit_and_no_control_characters(
    cli: Cli, server: ServerProcess, team: str, args: list[str], message: str
) -> None:
    before = control_length(server, team)
    result = cli(*args, ok=False)
    assert result.exit_code == 1 and message in result.stderr, result.stderr
    assert len(lines(result.stderr)) == 1 and control_length(server, team) == before
    assert len(cli("cluster", "create", "z" * 128, "--slug", "fits").stdout) < 200


def test_deleting_a_cluster_with_deployments_or_jobs_needs_force(
    cli: Cli, client: Client, server: ServerProcess, team: str
) -> None:
    client.clusters().create("dev")
    release = deploy_leaf(client, "dev")
    job = client.jobs().submit("waits", Leaf("x"), cluster="dev")
    before = control_length(server, team)

    refused = cli("cluster", "delete", "dev", ok=False)
    assert refused.exit_code == 1
    (line,) = lines(refused.stderr)
    assert f"cluster 'dev' has deployment (leafs: {release}) and 1 unfinished job" in line
    assert "pass --force" in line
    assert control_length(server, team) == before and "dev" in client.state().clusters

    deleted = cli("cluster", "delete", "dev", "--force")
    assert deleted.stdout == (
        f"deleted cluster dev\nremoved deployment of leafs ({release})\n"
        "1 unfinished job(s) on it will not run (cluster deleted)\n"
    )
    assert "dev" not in client.state().clusters and "dev" not in client.deployments().current()
    shown = cli("job", "get", job.id).stdout
    assert "waiting   cluster 'dev' was deleted (cluster deleted)" in shown
    assert client.jobs().find(job.id).state == "queued"  # kept, visibly stranded

    client.clusters().create("empty")
    assert json.loads(cli("cluster", "delete", "empty", "--json").stdout) == {
        "deleted": "empty", "deployments": {}, "unfinished_jobs": 0,
    }  # fmt: skip


def test_an_unknown_team_is_named_on_reads_and_created_by_writes(cli: Cli) -> None:
    for args in (["cluster", "list"], ["workflow", "list"], ["job", "list"], ["deployments"],
                 ["events", "list"], ["cluster", "get", "default"]):  # fmt: skip
        result = cli(*args)
        assert result.exit_code == 0
        (line,) = lines(result.stderr)
        assert f"team '{cli.env['TILEBOX_TEAM']}' has no events yet (a typo?)" in line, args
    cli("cluster", "create", "dev")  # a write creates the team
    assert cli("cluster", "list").stderr == ""


def test_undeploying_what_is_not_deployed_is_nothing_to_change(
    cli: Cli, client: Client, server: ServerProcess, team: str
) -> None:
    release = deploy_leaf(client)
    cli("workflow", "undeploy-release", "--workflow", "leafs")
    before = control_length(server, team)
    again = cli("workflow", "undeploy-release", "--workflow", "leafs")
    assert again.stdout == "default: leafs is not deployed there\nnothing to change\n"
    shown = json.loads(cli("workflow", "undeploy-release", "--workflow", "leafs", "--json").stdout)
    assert shown["changed"] is False and shown["message"] == "nothing to change"
    cli("workflow", "deploy-release", "--release", release)
    before = control_length(server, team)
    same = cli("workflow", "deploy-release", "--release", release)
    assert same.stdout == f"default: leafs already at {release}\nnothing to change\n"
    assert (
        json.loads(cli("workflow", "deploy-release", "--release", release, "--json").stdout)[
            "message"
        ]
        == "nothing to change"
    )
    assert control_length(server, team) == before


def test_runner_start_on_an_unknown_cluster_fails_before_it_says_anything(cli: Cli) -> None:
    result = cli("runner", "start", "--cluster", "nope", ok=False)
    assert result.exit_code == 1 and result.stdout == ""
    (line,) = lines(result.stderr)
    assert "unknown cluster 'nope'" in line and "serving" not in result.stderr


def test_workflow_commands_take_the_project_as_path(
    cli: Cli, client: Client, tmp_path: Path
) -> None:
    project = tmp_path / "p"
    cli("workflow", "init", str(project), "--name", "Scenes")
    cli("workflow", "create", "Scenes")
    built = json.loads(cli("workflow", "build-release", str(project), "--json").stdout)
    published = json.loads(cli("workflow", "publish-release", str(project), "--json").stdout)
    assert published["digest"] == built["digest"]
    deployed = cli("workflow", "deploy-release", "--latest", str(project))
    assert f"default: scenes deployed {published['id']}" in deployed.stdout
    old = cli("workflow", "undeploy-release", "--path", str(project), "--dry-run")  # hidden alias
    assert "deprecated" in old.stderr and "would be undeployed" in old.stdout
    both = cli("workflow", "undeploy-release", str(project), "--path", str(project), ok=False)
    assert both.exit_code == 2 and "not also --path" in both.stderr
    assert "--path" not in cli("workflow", "deploy-release", "--help").stdout


@ACTOR_FROM_SETTINGS
def test_events_list_filters_by_job_actor_and_limit(
    cli: Cli, client: Client, tmp_path: Path
) -> None:
    first = client.jobs().submit("one", Leaf("a"))
    second = client.jobs().submit("two", Leaf("b"))
    cli("cluster", "create", "dev")  # actor user:cli; the client's actor is user:test
    client.runner(tasks=[Leaf], cache_root=tmp_path).run_all()

    def listed(*args: str) -> list[dict[str, str]]:
        return list(json.loads(cli("events", "list", "--json", *args).stdout))

    of_first = listed("--job", first.id)
    assert [e["type"] for e in of_first] == ["JobSubmitted", "TaskSubmitted", "TaskClaimed",
                                             "TaskCompleted"]  # fmt: skip
    assert all(e["job_id"] == first.id for e in of_first)
    assert [e["type"] for e in listed("--actor", "user:cli")] == ["ClusterCreated"]
    everything = listed()
    assert listed("--limit", "2") == everything[-2:]
    assert listed("--job", second.id, "--type", "TaskCompleted", "--limit", "5") == [
        e for e in everything if e["type"] == "TaskCompleted" and e["job_id"] == second.id
    ]
    assert listed("--actor", "nobody") == []
    bad = cli("events", "list", "--follow", "--until", "1h", ok=False)
    assert bad.exit_code == 2 and "--follow" in bad.stderr


def test_cluster_get_of_the_default_cluster_says_built_in(cli: Cli) -> None:
    cli("cluster", "create", "dev")
    shown = cli("cluster", "get", "default").stdout
    assert "created  built in" in shown and "- by -" not in shown
    assert f"by {cli.actor}" in cli("cluster", "get", "dev").stdout


def test_plain_output_off_a_terminal_ignores_colour_settings(
    cli: Cli, client: Client, tmp_path: Path
) -> None:
    done = client.jobs().submit("done", Leaf("a"))
    client.runner(tasks=[Leaf], cache_root=tmp_path).run_all()
    failed = client.jobs().submit("failed", Flaky("b"))
    client.runner(tasks=[Flaky], cache_root=tmp_path).run_all()
    plain = cli("job", "list").stdout_bytes
    assert b"\x1b[" not in plain
    assert cli("--no-color", "job", "list").stdout_bytes == plain
    cli.env["NO_COLOR"] = "1"
    assert cli("job", "list").stdout_bytes == plain
    rows = plain.decode().splitlines()
    assert rows[0].split() == ["ID", "NAME", "CLUSTER", "STATE", "TASKS", "SUBMITTED"]
    assert rows[1].startswith(f"{failed.id}  failed  default  failed ")
    assert rows[2].startswith(f"{done.id}  done    default  completed  1 computed")


# --- builds -----------------------------------------------------------------------------------


def everything_project(root: Path) -> Path:
    """A project whose include is "**/*", next to virtual environments, caches and git data."""
    (root / "scenes").mkdir(parents=True)
    (root / "tilebox.workflow.toml").write_text(
        '[workflow]\nslug = "scenes"\nrunner = "scenes.runner:runner"\n'
        '[build]\ninclude = ["**/*"]\n'
    )
    (root / "scenes" / "__init__.py").write_text("")
    (root / "scenes" / "runner.py").write_text(
        "from tilebox_core import Task\nfrom tilebox_runner import Runner\n\n\n"
        "class Hello(Task):\n    def execute(self, context):\n        pass\n\n\n"
        "runner = Runner(tasks=[Hello])\n"
    )
    for venv in (".venv", "venv", "envs/py311"):
        (root / venv / "lib").mkdir(parents=True)
        (root / venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
        (root / venv / "lib" / "site.py").write_text("x = 1\n")
    for cache in ("__pycache__", "scenes/__pycache__"):
        (root / cache).mkdir(exist_ok=True)
        (root / cache / "runner.cpython-311.pyc").write_bytes(b"\0")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return root


def test_include_everything_never_packs_environments_caches_or_git(
    cli: Cli, tmp_path: Path
) -> None:
    project = everything_project(tmp_path / "p")
    built = json.loads(cli("workflow", "build-release", str(project), "--json").stdout)
    assert built["files"] == ["scenes/__init__.py", "scenes/runner.py", "tilebox.workflow.toml"]


def test_large_files_are_warned_about_and_too_large_artifacts_refused(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = everything_project(tmp_path / "p")
    (project / "data.bin").write_bytes(os.urandom(3 * 2**20))
    (project / "small.bin").write_bytes(os.urandom(2**19))
    warned = cli("workflow", "build-release", str(project))
    (warning,) = lines(warned.stderr)
    assert warning.startswith("warning: the artifact is 3.5 MiB compressed, 1 file over 1.0 MiB;")
    assert "largest files: data.bin (3.0 MiB), small.bin (0.5 MiB), scenes/runner.py" in warning

    from tilebox_core.build import artifact

    monkeypatch.setattr(artifact, "MAX_ARTIFACT_BYTES", 2**20)
    (project / "data.bin").write_bytes(os.urandom(3 * 2**20 + 1))  # a new build, not the last one
    refused = cli("workflow", "build-release", str(project), "--json", ok=False)
    assert refused.exit_code == 1 and refused.stdout == ""
    error = json.loads(refused.stderr)["error"]
    assert error["code"] == "artifact" and "over the 1,048,576-byte limit" in error["message"]
    assert "largest files: data.bin (3.0 MiB), small.bin (0.5 MiB)" in error["message"]
