"""What a user reads when the server refuses: real servers in the states that make it refuse (full,
ACL-restricted, a replica, a Redis Cluster node), each giving one line that says what to do.

redis-py 8 turns these replies into exception classes with the reply's first word stripped, so the
old text-prefix checks never matched and users saw "Redis answered an error: ..." instead."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import BACKENDS, Cli
from tests.servers import ServerProcess, free_port
from tests.waiting import wait_for

pytestmark = pytest.mark.parametrize("backend", sorted(BACKENDS))


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """Servers a test starts (with ``start``), killed at teardown."""
    started: list[ServerProcess] = []
    yield started
    for process in started:
        process.kill()


def start(started: list[ServerProcess], backend: str, where: Path, *extra: str) -> ServerProcess:
    process = ServerProcess(backend, BACKENDS[backend], where, list(extra))
    started.append(process)
    return process.start()


def refused(url: str, team: str, *command: str) -> str:
    """The output of a ``tilebox`` command that must fail with one line and change nothing."""
    result = Cli(url, team)(*command, ok=False)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "answered an error" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    return result.output


def test_a_full_server_says_it_is_out_of_memory(
    backend: str, servers: list[ServerProcess], tmp_path: Path, team: str
) -> None:
    full = start(servers, backend, tmp_path / "full", "--maxmemory", "4mb")  # noeviction
    # Open while the command runs: closing it would free its buffers, and with them the few
    # bytes by which the last write went over the limit.
    with redis.Redis(port=full.port) as raw:
        for size in (65_536, 256):  # in big writes, then small ones up to the limit
            with pytest.raises(redis.exceptions.OutOfMemoryError):
                for i in range(100_000):
                    raw.set(f"fill:{size}:{i}", b"x" * size)
        output = refused(full.url, team, "cluster", "create", "dev")
    assert "is out of memory and refuses writes" in output and "raise maxmemory" in output


def test_an_acl_refusal_says_which_user_lacks_what(
    backend: str, servers: list[ServerProcess], tmp_path: Path, team: str
) -> None:
    primary = start(servers, backend, tmp_path / "acl")
    with redis.Redis(port=primary.port) as admin:
        # May read (and so connect and list), may not run scripts: the append is refused.
        admin.acl_setuser("reader", enabled=True, passwords=["+pw"], keys=["*"],
                          commands=["+@read", "+info", "+ping"])  # fmt: skip
        # May run scripts, but not the XADD inside them: the server says so without a NOPERM code.
        admin.acl_setuser("scripter", enabled=True, passwords=["+pw"], keys=["*"],
                          commands=["+@read", "+info", "+ping", "+@scripting"])  # fmt: skip
    for user, denied in (("reader", "'evalsha'"), ("scripter", "script")):
        url = f"redis://{user}:pw@127.0.0.1:{primary.port}/0"
        assert "default" in Cli(url, team)("cluster", "list").output
        output = refused(url, team, "cluster", "create", "dev")
        assert "refuses this to the connected user" in output and denied in output
        assert "grant that user the team's keys and commands" in output
        assert "pw@" not in output  # the password is never echoed


def test_a_replica_says_to_connect_to_its_primary(
    backend: str, servers: list[ServerProcess], tmp_path: Path, team: str
) -> None:
    primary = start(servers, backend, tmp_path / "primary")
    replica = start(
        servers, backend, tmp_path / "replica", "--replicaof", "127.0.0.1", str(primary.port)
    )
    with redis.Redis(port=replica.port) as raw:
        wait_for(lambda: raw.info("replication").get("master_link_status") == "up")
    output = refused(replica.url, team, "cluster", "create", "dev")
    assert "is a read-only replica: point TILEBOX_REDIS_URL at its primary" in output


def test_a_plain_url_of_a_cluster_node_is_taken_as_the_cluster(
    backend: str, servers: list[ServerProcess], tmp_path: Path
) -> None:
    nodes = []
    for name in ("a", "b"):
        where = tmp_path / name
        nodes.append(start(servers, backend, where, "--cluster-enabled", "yes",
                           "--cluster-config-file", str(where / "nodes.conf"),
                           "--cluster-port", str(free_port())))  # fmt: skip
    a, b = (redis.Redis(port=node.port) for node in nodes)
    with a, b:
        a.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 8191)
        b.execute_command("CLUSTER", "ADDSLOTSRANGE", 8192, 16383)
        bus = int(b.config_get("cluster-port")["cluster-port"])
        a.execute_command("CLUSTER", "MEET", "127.0.0.1", nodes[1].port, bus)
        wait_for(lambda: b"cluster_state:ok" in a.execute_command("CLUSTER", "INFO"))
        # a team whose keys hash to the other node's slots: node a would answer MOVED
        team = next(
            t for t in (f"t-{time.monotonic_ns()}-{i}" for i in range(100))
            if a.execute_command("CLUSTER", "KEYSLOT", f"tilebox:{{{t}}}:log") >= 8192
        )  # fmt: skip
    cli = Cli(nodes[0].url, team)
    cli("cluster", "create", "dev")  # sent to node b, which serves the team's slot
    assert "dev" in cli("cluster", "list").output
    with redis.Redis(port=nodes[1].port) as b:
        assert b.exists(f"tilebox:{{{team}}}:log:control")
