"""The embedded server: started on first use, shared across processes, restarted after a crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from tilebox_core import Client, EmbeddedServer
from tilebox_core.domain.errors import PermissionDenied

TILEBOX = str(Path(sys.executable).parent / "tilebox")


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "h"  # short: the server listens on a Unix socket below it
    yield home
    EmbeddedServer(home).stop()


def tilebox(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TILEBOX_")}
    env["TILEBOX_HOME"] = str(home)
    result = subprocess.run([TILEBOX, *args], env=env, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"tilebox {' '.join(args)}: {result.stderr}")
    return result


def test_commands_share_one_server_and_state(home: Path) -> None:
    assert tilebox(home, "server", "status", check=False).returncode == 3
    tilebox(home, "cluster", "create", "dev")
    slugs = [c["slug"] for c in json.loads(tilebox(home, "cluster", "list", "--json").stdout)]
    assert slugs == ["default", "dev"]
    status = json.loads(tilebox(home, "server", "status", "--json").stdout)
    assert status["running"] and status["url"].startswith("unix://")
    assert Path(status["data_dir"]).is_relative_to(home)


def test_concurrent_first_use_starts_exactly_one_server(home: Path) -> None:
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: tilebox(home, "cluster", "create", f"c{i}"), range(4)))
    assert all(r.returncode == 0 for r in results)
    pids = subprocess.run(["pgrep", "-f", str(home)], capture_output=True, text=True).stdout.split()
    assert len(pids) == 1
    assert len(json.loads(tilebox(home, "cluster", "list", "--json").stdout)) == 5


def test_a_crashed_server_is_restarted_with_its_data(home: Path) -> None:
    tilebox(home, "workflow", "create", "scenes")
    server = EmbeddedServer(home)
    # Wait until the write is fsynced to the AOF (appendfsync everysec), then crash the server.
    with redis.Redis.from_url(server.url_for("admin")) as client:
        client.execute_command("WAITAOF", 1, 0, 5000)
    pid = server.status().pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    listed = json.loads(tilebox(home, "workflow", "list", "--json").stdout)
    assert [w["slug"] for w in listed] == ["scenes"]
    assert server.status().pid not in (None, pid)


def test_stop_and_start_keep_the_data(home: Path) -> None:
    tilebox(home, "cluster", "create", "dev")
    assert "server stopped" in tilebox(home, "server", "stop").stdout
    assert "not running" in tilebox(home, "server", "stop").stdout
    assert "running at unix://" in tilebox(home, "server", "start").stdout
    assert "dev" in tilebox(home, "cluster", "list").stdout


# --- ACLs on --------------------------------------------------------------------------------------


def test_the_server_starts_with_acls_on_and_its_credentials_kept_private(home: Path) -> None:
    tilebox(home, "cluster", "create", "dev")  # the default team: as its developer
    server = EmbeddedServer(home)
    with redis.Redis.from_url(server.url) as anonymous, pytest.raises(redis.AuthenticationError):
        anonymous.ping()  # the default user is disabled
    for name in ("credentials.json", "users.acl"):
        assert (home / "server" / name).stat().st_mode & 0o777 == 0o600
    known = server.credentials()
    assert set(known) == {"admin", "tilebox.default.developer", "tilebox.default.runner",
                          "tilebox.default.auditor"}  # fmt: skip
    assert not any(
        secret in (home / "server" / "users.acl").read_text() for secret in known.values()
    )
    events = json.loads(tilebox(home, "events", "list", "--json").stdout)
    assert [e["actor"] for e in events] == ["tilebox.default.developer"]
    listed = json.loads(tilebox(home, "team", "list", "--json").stdout)
    assert [t["team"] for t in listed] == ["default"]


def test_a_second_team_gets_its_credentials_and_keeps_them_over_a_restart(home: Path) -> None:
    tilebox(home, "cluster", "create", "ours")
    created = json.loads(tilebox(home, "team", "create", "b", "--json").stdout)
    urls = {c["role"]: c["url"] for c in created["credentials"]}
    assert created["persisted"] and set(urls) == {"developer", "runner", "auditor"}
    tilebox(home, "--team", "b", "cluster", "create", "theirs")  # with b's developer credential
    events = json.loads(tilebox(home, "--team", "b", "events", "list", "--json").stdout)
    assert [e["actor"] for e in events] == ["tilebox.b.developer"]
    tilebox(home, "server", "stop")
    # b's users were saved to the ACL file: its printed URL works after a restart
    tilebox(home, "server", "start")
    with Client(urls["developer"], team="b") as b:
        assert [c.slug for c in b.clusters().all()] == ["default", "theirs"]
        with pytest.raises(PermissionDenied, match="credential of team b"):
            Client(urls["developer"], team="default").clusters().all()
    refused = tilebox(home, "--team", "b", "team", "create", "b", check=False)
    assert refused.returncode == 1 and "team b exists" in refused.stderr
