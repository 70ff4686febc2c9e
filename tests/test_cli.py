"""The ``tilebox`` command line: control-plane commands, JSON output, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from tests.conftest import Cli
from tests.servers import ServerProcess
from tilebox_core import Client
from tilebox_core.domain.events import ReleaseTask


def publish(server: ServerProcess, team: str, workflow: str, content: bytes) -> str:
    with Client(server.url, team=team) as client:
        result = client.workflows().publish_release(
            workflow, content, [ReleaseTask(f"{workflow}.Task", "v1.0")], runner="m:runner"
        )
        return result.release.id


def log_length(server: ServerProcess, team: str) -> int:
    with redis.Redis.from_url(server.url) as client:
        return int(client.xlen(f"tilebox:{{{team}}}:log:control"))


def test_cluster_lifecycle(cli: Cli) -> None:
    assert "created cluster prod-eu (Prod EU)" in cli("cluster", "create", "Prod EU").output
    listed = json.loads(cli("cluster", "list", "--json").stdout)
    assert [c["slug"] for c in listed] == ["default", "prod-eu"]
    shown = json.loads(cli("cluster", "get", "prod-eu", "--json").stdout)
    assert shown["name"] == "Prod EU" and shown["created_by"] == cli.actor
    cli("cluster", "delete", "prod-eu")
    assert [c["slug"] for c in json.loads(cli("cluster", "list", "--json").stdout)] == ["default"]


def test_workflow_release_deploy_story(
    cli: Cli, server: ServerProcess, team: str, tmp_path: Path
) -> None:
    cli("cluster", "create", "dev")
    cli("cluster", "create", "prod-a")
    cli("cluster", "create", "prod-b")
    created = json.loads(cli("workflow", "create", "My Scenes", "--json").stdout)
    assert created["slug"] == "my-scenes"
    r1 = publish(server, team, "my-scenes", b"v1")
    r2 = publish(server, team, "my-scenes", b"v2")

    out = cli(
        "workflow", "deploy-release", "--release", r1, "--cluster", "dev", "--workflow", "my-scenes"
    )
    assert f"dev: my-scenes deployed {r1}" in out.output
    cli("workflow", "deploy-release", "--latest", "--workflow", "my-scenes")  # default cluster
    (tmp_path / "tilebox.workflow.toml").write_text(
        '[workflow]\nslug = "my-scenes"\nrunner = "m:runner"\n[build]\ninclude = ["*.py"]\n'
        '[targets.production]\nclusters = ["prod-a", "prod-b"]\n'
    )
    (tmp_path / "m.py").write_text("")
    dry = json.loads(cli("workflow", "deploy-release", "--release", r1, "--target", "production",
                         str(tmp_path), "--dry-run", "--json").output)  # fmt: skip
    assert dry["dry_run"] and [c["cluster"] for c in dry["changes"]] == ["prod-a", "prod-b"]
    assert json.loads(cli("deployments", "--json").stdout) == {
        "default": {"my-scenes": r2}, "dev": {"my-scenes": r1},
    }  # fmt: skip
    cli(
        "workflow",
        "deploy-release",
        "--release",
        r1,
        "--target",
        "production",
        str(tmp_path),
    )
    mapping = json.loads(cli("deployments", "--json").stdout)
    assert mapping["prod-a"] == mapping["prod-b"] == {"my-scenes": r1}

    releases = json.loads(cli("workflow", "releases", "my-scenes", "--json").stdout)
    assert {r["id"]: r["deployed_on"] for r in releases} == {
        r1: ["dev", "prod-a", "prod-b"], r2: ["default"],
    }  # fmt: skip
    cli("workflow", "undeploy-release", "--cluster", "dev", "--workflow", "my-scenes")
    assert "dev" not in json.loads(cli("deployments", "--json").stdout)

    history = json.loads(cli("events", "list", "--json").stdout)
    types = [e["type"] for e in history]
    assert types.count("DeploymentSet") == 4 and types[-1] == "DeploymentRemoved"
    latest = next(e for e in history if e["type"] == "DeploymentSet" and e["requested"] == "latest")
    assert latest["release_id"] == r2 and latest["actor"] == cli.actor
    only = json.loads(cli("events", "list", "--type", "WorkflowCreated", "--json").stdout)
    assert [e["slug"] for e in only] == ["my-scenes"]
    text = cli("events", "list").output
    assert "DeploymentRemoved" in text and cli.actor in text


def test_deployments_as_of_a_past_time(cli: Cli, server: ServerProcess, team: str) -> None:
    cli("workflow", "create", "scenes")
    r1 = publish(server, team, "scenes", b"one")
    cli("workflow", "deploy-release", "--release", r1)
    first = json.loads(cli("events", "list", "--type", "DeploymentSet", "--json").stdout)[0]
    r2 = publish(server, team, "scenes", b"two")
    cli("workflow", "deploy-release", "--release", r2)
    from tilebox_core.client import position_time

    at = position_time(first["position"]).isoformat()
    assert json.loads(cli("deployments", "--as-of", at, "--json").stdout) == {
        "default": {"scenes": r1}
    }
    assert json.loads(cli("deployments", "--json").stdout) == {"default": {"scenes": r2}}
    assert json.loads(cli("deployments", "--as-of", "2000-01-01T00:00:00Z", "--json").stdout) == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cluster", "get", "nope"], "unknown cluster 'nope'"),
        (["cluster", "create", "x", "--slug", "Bad Slug"], "invalid cluster slug 'Bad Slug'"),
        (["cluster", "delete", "default"], "default cluster cannot be deleted"),
        (["workflow", "get", "nope"], "unknown workflow 'nope'"),
        (["workflow", "deploy-release", "--release", "r-missing"], "unknown release 'r-missing'"),
        (["workflow", "deploy-release", "--release", "x", "--latest"], "exactly one of --release"),
        (["workflow", "deploy-release", "--latest", "--workflow", "scenes", "--cluster", "mars"],
         "unknown cluster 'mars'"),
        (["workflow", "deploy-release", "--latest", "--workflow", "scenes", "--target", "prod"],
         "needs a tilebox.workflow.toml"),
        (["events", "list", "--type", "Nope"], "unknown event type Nope"),
        (["deployments", "--as-of", "yesterday-ish"], "is not a time"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_changes_nothing(
    cli: Cli, server: ServerProcess, team: str, args: list[str], message: str,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    cli("workflow", "create", "scenes")
    publish(server, team, "scenes", b"x")
    before = log_length(server, team)
    result = cli(*args, ok=False)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) <= 3
    assert log_length(server, team) == before


def test_release_of_another_workflow_is_refused(cli: Cli, server: ServerProcess, team: str) -> None:
    cli("workflow", "create", "a")
    cli("workflow", "create", "b")
    release_of_a = publish(server, team, "a", b"a")
    before = log_length(server, team)
    result = cli(
        "workflow", "deploy-release", "--release", release_of_a, "--workflow", "b", ok=False
    )
    assert result.exit_code == 1 and "belongs to workflow 'a', not 'b'" in result.output
    assert log_length(server, team) == before


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://127.0.0.1:1/0", "cannot reach Redis at redis://127.0.0.1:1/0"),
        ("http://x", "unsupported Redis URL"),
    ],
)
def test_unreachable_server_is_one_line(url: str, message: str, team: str) -> None:
    cli = Cli(url, team)
    result = cli("cluster", "list", ok=False)
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_auth_refusal_is_one_line(tmp_path: Path, team: str) -> None:
    from tests.servers import valkey_binary

    locked = ServerProcess(
        "valkey", valkey_binary(), tmp_path / "auth", ["--requirepass", "s3cret"]
    ).start()
    try:
        for url, message in [
            (locked.url, "requires authentication"),
            (f"redis://:wrong@127.0.0.1:{locked.port}/0", "refused authentication"),
        ]:
            result = Cli(url, team)("cluster", "list", ok=False)
            assert result.exit_code == 1 and message in result.output
            assert "wrong" not in result.output  # the password is never echoed
        ok = Cli(f"redis://:s3cret@127.0.0.1:{locked.port}/0", team)("cluster", "list")
        assert "default" in ok.output
    finally:
        locked.stop()


def test_old_server_versions_are_refused() -> None:
    from tilebox_core.domain.errors import StoreUnavailable
    from tilebox_core.redis.connection import check_version

    with pytest.raises(StoreUnavailable, match=r"version 6\.2\.14; tilebox needs Redis >= 7\.0"):
        check_version({"redis_version": "6.2.14"}, "redis://h:6379")
    check_version({"redis_version": "7.0.15"}, "redis://h:6379")
