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

from tilebox_core import EmbeddedServer

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
    with redis.Redis.from_url(server.url) as client:
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
