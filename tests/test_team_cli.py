"""``tilebox team``: thin commands over Client.teams(), secrets printed once, one-line errors."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.conftest import Cli
from tests.servers import ClusterProcess, ServerProcess

pytestmark = pytest.mark.cluster


@pytest.fixture
def cli(server: ServerProcess | ClusterProcess, team: str) -> Cli:
    """``tilebox`` as the server's administrator (its default user), whatever TILEBOX_TEST_AS_TEAM."""
    return Cli(server.url, team)


@pytest.fixture
def name(server: ServerProcess | ClusterProcess) -> Iterator[str]:
    """A team the test creates; its users are removed from every node afterwards."""
    team = "c-" + uuid.uuid4().hex[:12]
    yield team
    nodes = server.nodes if isinstance(server, ClusterProcess) else [server]
    for node in nodes:
        with redis.Redis(port=node.port) as each:
            users = [f"tilebox.{team}.{role}" for role in ("developer", "runner", "auditor")]
            each.execute_command("ACL", "DELUSER", *users)


def test_create_prints_each_secret_once_and_list_never(cli: Cli, name: str) -> None:
    result = cli("team", "create", name)
    out = result.stdout
    assert f"created team {name}" in out
    for role in ("developer", "runner", "auditor"):
        assert f"  {role}: TILEBOX_REDIS_URL=" in out and f"tilebox.{name}.{role}:" in out
    # a server without an ACL file forgets users on a restart: said on stderr
    assert "the server has no ACL file" in result.stderr
    listed = cli("team", "list").stdout
    secrets = [
        line.split()[2] for line in out.splitlines() if line.startswith(("developer ", "runner "))
    ]
    assert secrets and not any(secret in listed for secret in secrets)
    assert f"{name}  developer  tilebox.{name}.developer  enabled  1" in listed
    again = cli("team", "create", name, ok=False)
    assert again.exit_code == 1 and f"team {name} exists" in again.output
    assert len(again.output.strip().splitlines()) == 1


def test_rotate_and_delete_as_json(cli: Cli, name: str) -> None:
    created = json.loads(cli("team", "create", name, "--json").stdout)
    assert {c["role"] for c in created["credentials"]} == {"developer", "runner", "auditor"}
    rotated = json.loads(cli("team", "rotate", name, "--role", "runner", "--json").stdout)
    [new] = rotated["credentials"]
    assert new["user"] == f"tilebox.{name}.runner" and new["secret"] and not rotated["persisted"]
    listed = {u["role"]: u for t in json.loads(cli("team", "list", "--json").stdout)
              if t["team"] == name for u in t["users"]}  # fmt: skip
    assert listed["runner"]["passwords"] == 2 and listed["developer"]["passwords"] == 1
    text = cli("team", "rotate", name, "--role", "runner", "--finish").stdout
    assert "only its newest secret works now" in text
    deleted = json.loads(cli("team", "delete", name, "--json").stdout)
    assert sorted(deleted["users"]) == sorted(
        f"tilebox.{name}.{r}" for r in ("developer", "runner", "auditor")
    )
    assert "deleted" in cli("team", "list").stdout


def test_bad_input_is_one_line(cli: Cli, name: str) -> None:
    for args, says in (
        (("team", "create", "Not A Slug"), "team name"),
        (("team", "rotate", name, "--role", "runner"), "does not exist or is disabled"),
        (("team", "delete", name), "no users to delete"),
        (("team", "rotate", name, "--role", "owner"), "'owner' is not one of"),
    ):
        result = cli(*args, ok=False)
        assert result.exit_code in (1, 2) and says in result.output, result.output
