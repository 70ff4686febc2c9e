"""Redis/Valkey Cluster: a failover mid-job, bad cluster URLs, and the key layout of shards."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.servers import ClusterProcess, ServerProcess, available_backends, cluster_ports
from tests.waiting import wait_for
from tilebox_core import Client, ExecutionContext, Task
from tilebox_core.domain.events import TaskCompleted
from tilebox_core.redis.keys import Keys, key_slot, shard_of, shard_tag

TILEBOX = str(Path(sys.executable).with_name("tilebox"))


class Spread(Task):
    """A fan-out whose leaves take a little while, so that a failover happens mid-job."""

    count: int

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "test.Spread", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        context.submit_subtasks([Nap(i) for i in range(self.count)])


class Nap(Task):
    i: int

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "test.Nap", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        time.sleep(0.01)


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[ClusterProcess]:
    """3 masters, a replica each, AOF with fsync always (as every test server)."""
    cluster = ClusterProcess(tmp_path / "cluster", masters=3, replicas=1).start()
    yield cluster
    cluster.kill()


@pytest.mark.slow
def test_a_master_killed_mid_job_loses_no_task_and_completes_none_twice(
    replicated: ClusterProcess, team: str, tmp_path: Path
) -> None:
    with Client(replicated.url, team=team, actor="user:test", retries=40) as client:
        job = client.jobs().submit("spread", Spread(240))
        master = replicated.master_of(key_slot(client.tasks.shard(job.id).tag))

        def computed() -> int:
            return client.jobs().find(job.id, with_tasks=False).tasks_by_state.get("computed", 0)

        runner = client.runner(tasks=[Spread, Nap], lease_seconds=2, concurrency=2,
                               cache_root=tmp_path / "cache")  # fmt: skip
        with runner:
            wait_for(lambda: computed() >= 40, timeout=60)
            before = computed()
            master.kill()  # kill -9 the master of the job's shard, mid-job
            assert before < 241
            replica = replicated.promote_replica_of(master)
            done = client.jobs().wait(job.id, timeout=120)
        assert replica.port in replicated.replicas_of[master.port]
        assert done.state == "completed" and done.total_tasks == 241
        completions = collections.Counter(
            s.event.task_id for s in client.tasks.replay() if isinstance(s.event, TaskCompleted)
        )
        assert set(completions) == {t.id for t in client.jobs().find(job.id).tasks}
        assert set(completions.values()) == {1}  # every task completed exactly once


def test_a_job_lives_wholly_in_its_shard_spread_evenly_over_the_masters(
    server: ServerProcess | ClusterProcess, client: Client, tmp_path: Path
) -> None:
    from tests.tasks_fixture import Leaf, Root

    shards = client.tasks.shards
    job = client.jobs().submit("tree", Root(1))
    client.runner(tasks=[Root, Leaf, *_steps()], cache_root=tmp_path).run_all()
    shard = client.tasks.shard(job.id)
    with server.redis_client() as raw:
        keys = {k.decode() for k in raw.scan_iter(match=f"*{client.team}*")}
    task_keys = {k for k in keys if ":task:" in k or ":job:" in k}
    assert task_keys and all(k.startswith(shard.base) for k in task_keys)
    if isinstance(server, ClusterProcess):
        assert len(shards) == 12  # 4 per master
        owners = collections.Counter(server.master_of(s.slot).port for s in shards)
        assert sorted(owners.values()) == [4, 4, 4]
    else:
        assert shards == [client.store.keys]  # one shard: the single-node layout


pytestmark = pytest.mark.cluster


def _steps() -> list[type[Task]]:
    from tests.tasks_fixture import Step

    return [Step]


def test_shard_tags_are_fixed_by_team_index_and_count() -> None:
    assert shard_tag("acme", 0, 1) == "acme"  # S = 1: today's layout
    tags = [shard_tag("acme", i, 12) for i in range(12)]
    assert all(t.startswith(f"acme/{i}") for i, t in enumerate(tags))
    assert [key_slot(t) * 12 // 16384 for t in tags] == list(range(12))  # one per slot range
    assert shard_of("01a2-job", 12) == shard_of("01a2-job", 12) < 12
    assert Keys("tilebox", "acme").shard(3, 12).base == f"tilebox:{{{tags[3]}}}:"


def test_the_acl_patterns_cover_a_team_and_no_team_whose_name_it_begins(
    server: ServerProcess | ClusterProcess,
) -> None:
    if isinstance(server, ClusterProcess):
        pytest.skip("ACL users are per node: checked on a single server")
    a, ab = Keys("tilebox", "a"), Keys("tilebox", "ab")
    patterns = a.acl_patterns("team-a")
    rules = [f"~{p}" for p in patterns.team + patterns.actor]
    with server.redis_client() as admin:
        admin.execute_command("ACL", "SETUSER", "team-a", "on", ">pw", *rules, "+@all")
        try:
            with redis.Redis(port=server.port, username="team-a", password="pw") as user:
                for key in (a.deployments, a.shard(5, 12).task("t"), a.shard(0, 12).jobs,
                            a.actor("team-a"), a.shard(5, 12).actor("team-a")):  # fmt: skip
                    user.set(key, "1")
                for key in (ab.deployments, ab.shard(5, 12).task("t"), "tilebox:{a:x",
                            a.actor("team-b"), a.shard(5, 12).actor("team-b"),
                            a.actor("team-a") + "x", ab.actor("team-a")):  # fmt: skip
                    with pytest.raises(redis.exceptions.NoPermissionError):
                        user.set(key, "1")
        finally:
            admin.execute_command("ACL", "DELUSER", "team-a")


# --- bad cluster URLs: one line, a non-zero exit, nothing written -----------------------------


def tilebox(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TILEBOX_")}
    env.update(TILEBOX_REDIS_URL=url, TILEBOX_TEAM="bad-url", TILEBOX_ACTOR="user:t")
    return subprocess.run([TILEBOX, *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def single(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess("valkey", available_backends()["valkey"], tmp_path / "single").start()
    yield process
    process.kill()


def test_a_cluster_url_of_a_server_not_in_cluster_mode_is_refused(single: ServerProcess) -> None:
    result = tilebox(f"redis+cluster://127.0.0.1:{single.port}", "cluster", "create", "dev")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "is not in cluster mode" in line and f"redis://127.0.0.1:{single.port}" in line
    assert single.redis_client().dbsize() == 0


def test_a_cluster_with_unassigned_slots_is_refused(tmp_path: Path) -> None:
    [port] = cluster_ports(1)
    node = ServerProcess("lonely", available_backends()["valkey"], tmp_path / "n",
                         ["--cluster-enabled", "yes"])  # fmt: skip
    node.port = port
    node.start()  # in cluster mode, serving no slot: cluster_state:fail
    try:
        result = tilebox(f"redis+cluster://127.0.0.1:{port}", "cluster", "create", "dev")
        assert result.returncode == 1
        [line] = result.stderr.strip().splitlines()
        assert "cluster_state:fail" in line and "0 of 16384 slots" in line
        assert node.redis_client().dbsize() == 0
    finally:
        node.kill()


@pytest.mark.cluster(only=True)
def test_an_unreachable_seed_is_skipped_with_a_warning(server: ClusterProcess) -> None:
    [dead] = cluster_ports(1)
    url = server.url.replace("redis+cluster://", f"redis+cluster://127.0.0.1:{dead},")
    result = tilebox(url, "cluster", "list", "--json")
    assert result.returncode == 0, result.stderr
    [warning] = [line for line in result.stderr.splitlines() if "unreachable" in line]
    assert f"127.0.0.1:{dead}" in warning  # (the other line: team 'bad-url' has no events yet)
    only_dead = tilebox(f"redis+cluster://127.0.0.1:{dead}", "cluster", "list")
    assert only_dead.returncode == 1 and len(only_dead.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "url",
    ["redis+cluster://", "redis+cluster://host", "redis+cluster://h:1,", "redis+cluster://h:1/2"],
)
def test_malformed_cluster_urls_are_refused_before_connecting(url: str) -> None:
    result = tilebox(url, "cluster", "list")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "TILEBOX_REDIS_URL" in line and "redis+cluster://host:port" in line


def test_history_merges_and_follows_every_shard(client: Client, tmp_path: Path) -> None:
    from tests.tasks_fixture import Leaf

    jobs = client.jobs().submit_many((f"j{i}", Leaf(str(i))) for i in range(24))
    client.runner(tasks=[Leaf], cache_root=tmp_path).run_all()
    listed = list(client.events().list(types=["JobSubmitted", "TaskCompleted"]))
    assert {s.event.job_id for s in listed} == {j.id for j in jobs}  # type: ignore[union-attr]
    order = [(int(ms), int(seq)) for ms, seq in (s.position.split("-") for s in listed)]
    assert order == sorted(order)  # in time order across the shards
    follow = client.events().follow(types=["JobSubmitted"], limit=0, block_ms=2000)
    late = threading.Timer(0.3, lambda: client.jobs().submit("late", Leaf("x")))
    late.start()
    try:
        assert next(follow).event.name == "late"  # type: ignore[union-attr]
    finally:
        late.join()


@pytest.mark.cluster(only=True)
def test_a_read_blocked_on_every_shard_takes_a_task_from_any_and_unblocks_the_rest(
    server: ClusterProcess, client: Client
) -> None:
    from tests.tasks_fixture import Leaf

    lanes = client.tasks.serving_lanes("default", [("test.Leaf", 1, 0)])
    client.tasks.ensure_lanes(lanes)
    got: list[object] = []
    reader = threading.Thread(
        target=lambda: got.extend(client.tasks.read("reader", lanes, count=1, block_ms=30_000))
    )
    reader.start()

    def blocked() -> int:  # clients blocked in XREADGROUP, over the masters
        count = 0
        for port in server.replicas_of:
            with redis.Redis(port=port) as node:
                count += sum(
                    c["cmd"] == "xreadgroup" and "b" in c["flags"] for c in node.client_list()
                )
        return count

    wait_for(lambda: blocked() == len(client.tasks.shards))  # one per shard
    job = client.jobs().submit("wake", Leaf("w"))
    reader.join(20)
    assert not reader.is_alive()
    [delivery] = got
    assert delivery.task.job_id == job.id  # type: ignore[attr-defined]
    wait_for(lambda: blocked() == 0)  # the other shards' reads were unblocked, not left waiting
