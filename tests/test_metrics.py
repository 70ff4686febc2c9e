"""Prometheus metrics of a real ``tilebox runner start --metrics-port``, scraped over HTTP."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import ServerProcess, free_port
from tests.test_release_runner import Story
from tests.waiting import wait_for
from tilebox_core import Client
from tilebox_core.execution.metrics import TaskMetrics
from tilebox_core.redis.keys import parse_lane
from tilebox_core.redis.taskstore import GROUP

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def of_task(samples: Samples, name: str, task: str) -> float:
    return value(samples, name, task=f"scenes.{task}", version="v1.0")


@pytest.fixture
def story(private_server: ServerProcess, team: str, tmp_path: Path) -> Iterator[Story]:
    s = Story(private_server, team, tmp_path)
    yield s
    s.close()


def lane_truth(client: Client, lane: str) -> tuple[int, int]:
    """(XLEN, XPENDING count) of ``lane``, asked by the test itself."""
    pending = client.redis.xpending(lane, GROUP)["pending"]
    return int(client.redis.xlen(lane)), int(pending)


def test_a_release_runner_serves_task_counters_lane_depths_and_releases(story: Story) -> None:
    running, gate = story.tmp / "running", story.tmp / "gate"
    release = story.publish("metrics", "v1.0", f"""
import pathlib
pathlib.Path({str(running)!r}).touch()
while not pathlib.Path({str(gate)!r}).exists():
    time.sleep(0.02)
if self.scene == "bad":
    raise RuntimeError("bad scene")
""")  # fmt: skip
    story.deploy(release)
    jobs = story.client.jobs()
    # A task whose lease expires under a runner that vanished: read by a consumer that never
    # claims it (and never acknowledges it), before the release runner starts.
    [fetch_lane] = story.client.tasks.serving_lanes("default", [("scenes.Fetch", 1, 0)])
    story.client.tasks.ensure_lanes([fetch_lane])
    ghost = jobs.submit_by_name("ghost", "scenes.Fetch", "v1.0", '{"scene": "g"}')
    assert len(story.client.tasks.read("ghost-runner", [fetch_lane], 1, 0)) == 1
    port = free_port()
    story.start_runner("default", "--metrics-port", str(port), "--lease", "1")

    first = jobs.submit_by_name("a", "scenes.Fetch", "v1.0", '{"scene": "a"}')
    wait_for(running.exists)  # Process runs (and waits at the gate): the runtime is busy
    later = [jobs.submit_by_name(n, "scenes.Fetch", "v1.0", f'{{"scene": "{n}"}}')
             for n in ("b", "c")]  # fmt: skip

    def lane_depth_is_the_servers() -> bool:
        samples = scrape(port)
        length, pending = lane_truth(story.client, fetch_lane)
        labels = {"cluster": "default", "task": "scenes.Fetch", "version": "v1.0",
                  "shard": parse_lane(fetch_lane).tag}  # fmt: skip
        return (
            value(samples, "tilebox_lane_length", **labels) == length
            and value(samples, "tilebox_lane_pending", **labels) == pending
            and value(samples, "tilebox_lane_waiting", **labels) == length - pending
        )

    # While the runtime is held up, what the lanes hold does not change: the scrape says what
    # the server says (two Fetch entries and the ghost's, which is pending).
    wait_for(lane_depth_is_the_servers)
    length, pending = lane_truth(story.client, fetch_lane)
    # (3: the ghost's entry too, unless the runner took the ghost over once its 1 s lease expired
    # and ran it before the runtime was held up: a loaded machine can take that long)
    assert 2 <= length <= 3 and pending >= 1
    samples = scrape(port)
    assert value(samples, "tilebox_releases_loaded", release_id=release, workflow="scenes",
                 status="running") == 1  # fmt: skip
    assert of_task(samples, "tilebox_tasks_claimed_total", "Process") == 1

    gate.touch()
    for job in (ghost, first, *later):
        wait_for(lambda job=job: story.state(job.id) == "completed")
    bad = jobs.submit_by_name("bad", "scenes.Fetch", "v1.0", '{"scene": "bad"}')
    wait_for(lambda: story.state(bad.id) == "failed")

    def counted() -> bool:  # the counters are written before the results are recorded
        samples = scrape(port)
        return of_task(samples, "tilebox_tasks_failed_total", "Process") == 1

    wait_for(counted)
    samples = scrape(port)
    assert of_task(samples, "tilebox_tasks_claimed_total", "Fetch") == 5
    assert of_task(samples, "tilebox_tasks_completed_total", "Fetch") == 5
    assert of_task(samples, "tilebox_tasks_claimed_total", "Process") == 5
    assert of_task(samples, "tilebox_tasks_completed_total", "Process") == 4
    assert of_task(samples, "tilebox_tasks_claimed_total", "Publish") == 4
    assert of_task(samples, "tilebox_tasks_failed_total", "Fetch") == 0
    assert of_task(samples, "tilebox_task_duration_seconds_count", "Process") == 5
    # Each Process waited at the gate or ran after it: none took less than nothing.
    assert of_task(samples, "tilebox_task_duration_seconds_sum", "Process") > 0
    assert value(samples, "tilebox_lease_takeovers_total") == 1  # the ghost's Fetch
    assert value(samples, "tilebox_store_errors_total") == 0
    length, pending = lane_truth(story.client, fetch_lane)
    assert (length, pending) == (0, 0)


def test_metrics_of_a_direct_runner_go_to_the_registry_it_is_given(client: Client) -> None:
    from tests.tasks_fixture import Leaf, Root, Step

    registry = CollectorRegistry()
    client.jobs().submit("tree", Root(1))
    client.runner(tasks=[Root, Step, Leaf], hooks=TaskMetrics(registry)).run_all()
    assert registry.get_sample_value(
        "tilebox_tasks_completed_total", {"task": "test.Step", "version": "v1.0"}
    ) == 3  # fmt: skip
    assert registry.get_sample_value(
        "tilebox_tasks_claimed_total", {"task": "test.Leaf", "version": "v1.0"}
    ) == 2  # fmt: skip


def test_a_metrics_port_in_use_is_one_line(story: Story) -> None:
    import socket
    import subprocess

    from tests.test_release_runner import TILEBOX

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([TILEBOX, "runner", "start", "--metrics-port", str(port)],
                                env=story.env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert f"cannot serve metrics on 127.0.0.1:{port}" in lines[-1]
    assert "Traceback" not in result.stderr


@pytest.mark.cluster
def test_lane_depths_are_what_the_server_holds(client: Client) -> None:
    from tests.tasks_fixture import Leaf

    identifiers = [("test.Leaf", 1, 0), ("test.Never", 1, 0)]
    lanes = client.tasks.serving_lanes("default", identifiers)
    leaf_lanes = [lane for lane in lanes if lane.endswith(":test.Leaf")]
    client.tasks.ensure_lanes(leaf_lanes)
    jobs = client.jobs().submit_many((f"j{i}", Leaf(str(i))) for i in range(30))
    # one per lane (a lane per shard): on a cluster's 12 shards, at least 18 stay undelivered
    delivered = [d for lane in leaf_lanes for d in client.tasks.read("ghost", [lane], 1, -1)]
    undelivered = {j.id for j in jobs} - {d.task.job_id for d in delivered}
    # a cancelled job's entry is deleted before it was delivered: the lag is unknown to the
    # server then, and the length less the pending entries is what waits
    client.jobs().cancel(sorted(undelivered)[0])
    depths = client.tasks.lane_depths(lanes)
    assert [d.lane for d in depths] == lanes
    assert sum(d.length for d in depths) == 29
    assert sum(d.pending for d in depths) == len(delivered)
    assert sum(d.waiting for d in depths) == 29 - len(delivered)
    never = [d for d in depths if d.lane.endswith(":test.Never")]
    assert never and all((d.length, d.pending, d.waiting) == (0, 0, 0) for d in never)


def test_store_errors_of_a_runner_are_counted(private_server: ServerProcess, team: str) -> None:
    from tests.tasks_fixture import Leaf

    registry = CollectorRegistry()
    with Client(private_server.url, team=team, retries=20) as client:
        runner = client.runner(tasks=[Leaf], hooks=TaskMetrics(registry), block_ms=100)
        with runner:
            private_server.kill()
            wait_for(lambda: (registry.get_sample_value("tilebox_store_errors_total") or 0) > 0)
            private_server.start()
            job = client.jobs().submit("after", Leaf("x"))
            client.jobs().wait(job.id, timeout=60)
        assert client.jobs().find(job.id).state == "completed"
