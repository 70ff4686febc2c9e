"""Event-store benchmark: version-checked appends, batched appends, a 1,000,000-event replay and
the audit verification of that log.

    python benchmarks/store_bench.py [--backend valkey|redis | --url URL] [--events N]

Starts a throwaway server of its own (the embedded Valkey binary by default, the system
``redis-server`` with ``--backend redis``; both with ``--appendonly yes --appendfsync everysec
--save ""``) on a free port with a private data directory, and removes it afterwards. ``--url`` uses
an existing server instead; then only the benchmark's own (randomly named) teams are written, and
their keys are deleted at the end.

Prints plain lines such as ``single appends (version-checked): 7,812/s (20000 in 2.56 s)``.
Targets: single appends >= 5,000/s, batched appends >= 40,000 events/s, replay into the deployment
projection >= 300,000 events/s, audit verify (the hash chain recomputed) >= 500,000 events/s.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import itertools
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.servers

from tests.servers import add_server_arguments, server_url
from tilebox_core.domain.control import deployment_ops
from tilebox_core.domain.events import (
    ClusterCreated,
    DeploymentRemoved,
    DeploymentSet,
    Event,
    ReleasePublished,
    ReleaseTask,
    WorkflowCreated,
)
from tilebox_core.domain.ids import new_id
from tilebox_core.domain.projection import fold
from tilebox_core.logs import configure_logging
from tilebox_core.redis.errors import redacted
from tilebox_core.redis.eventstore import CONTROL, EventStore
from tilebox_core.redis.keys import DEFAULT_PREFIX, Keys
from tilebox_core.session import Session
from tilebox_core.settings import Settings

CLUSTERS = 50
WORKFLOWS = 20
ACTORS = [f"user:{name}@build-{i}" for i, name in enumerate(["ana", "ben", "chen", "dora"])] + [
    "runner:ci-7f3a"
]
SCHEMA = {
    "type": "object",
    "properties": {"scene_id": {"type": "string"}, "bands": {"type": "array"}},
    "required": ["scene_id"],
}


# --- realistic events -----------------------------------------------------------------------------


class Workload:
    """Builds control-plane events for one team: clusters, workflows, releases and deployments."""

    def __init__(self, team: str) -> None:
        self.team = team
        self.at = dt.datetime(2025, 1, 6, 8, 0, tzinfo=dt.UTC)
        self.tick = dt.timedelta(milliseconds=37)
        self.actors = itertools.cycle(ACTORS)
        self.clusters = [f"eu-{i:02d}" if i % 2 else f"us-{i:02d}" for i in range(CLUSTERS)]
        self.workflows = [f"sentinel-{i:02d}-ingest" for i in range(WORKFLOWS)]
        self.releases: dict[str, list[str]] = {w: [] for w in self.workflows}
        self.deployed: dict[tuple[str, str], str] = {}
        self.counter = 0

    def stamp(self) -> dict[str, object]:
        self.at += self.tick
        return {"id": new_id(), "at": self.at, "actor": next(self.actors), "team": self.team}

    def setup(self) -> list[Event]:
        """Every cluster and workflow, and a first release of each workflow."""
        events: list[Event] = [
            ClusterCreated(**self.stamp(), slug=c, name=c.replace("-", " ").title())
            for c in self.clusters
        ]
        events += [
            WorkflowCreated(**self.stamp(), slug=w, name=w.replace("-", " ").title())
            for w in self.workflows
        ]
        events += [self.release(w) for w in self.workflows]
        return events

    def release(self, workflow: str) -> ReleasePublished:
        stamp = self.stamp()
        content = f"{workflow}/{stamp['id']}".encode()
        self.releases[workflow].append(str(stamp["id"]))
        return ReleasePublished(
            **stamp,
            release_id=str(stamp["id"]),
            workflow=workflow,
            digest="sha256:" + hashlib.sha256(content).hexdigest(),
            size=180_000 + len(self.releases[workflow]) * 97,
            tasks=[
                ReleaseTask("sentinel.Fetch", "v1.3", SCHEMA),
                ReleaseTask("sentinel.Calibrate", "v2.0", {"type": "object"}),
                ReleaseTask("sentinel.Publish", "v1.0"),
            ],
            runner=f"{workflow.replace('-', '_')}.runner:runner",
            fingerprint="sha256:" + hashlib.sha256(content + b"/fp").hexdigest(),
        )

    def deployment(self) -> DeploymentSet:
        """Deploy (mostly the latest) release of a workflow to a cluster."""
        n = self.counter
        cluster = self.clusters[n % CLUSTERS]
        workflow = self.workflows[(n // CLUSTERS) % WORKFLOWS]
        releases = self.releases[workflow]
        latest = n % 4 != 0
        release_id = releases[-1] if latest else releases[(n // 7) % len(releases)]
        previous = self.deployed.get((cluster, workflow))
        self.deployed[(cluster, workflow)] = release_id
        return DeploymentSet(
            **self.stamp(), workflow=workflow, cluster=cluster, release_id=release_id,
            requested="latest" if latest else release_id, previous_release_id=previous,
            target=f"{cluster}:prod" if n % 3 == 0 else None,
        )  # fmt: skip

    def next(self) -> Event:
        """~97.5% DeploymentSet, ~1.5% ReleasePublished, ~1% DeploymentRemoved."""
        self.counter += 1
        n = self.counter
        if n % 67 == 0:
            return self.release(self.workflows[(n // 67) % WORKFLOWS])
        if n % 101 == 0 and self.deployed:
            (cluster, workflow), release_id = next(iter(self.deployed.items()))
            del self.deployed[(cluster, workflow)]
            return DeploymentRemoved(
                **self.stamp(), workflow=workflow, cluster=cluster, release_id=release_id
            )
        return self.deployment()

    def batches(self, total: int, size: int) -> Iterator[list[Event]]:
        """``total`` events (starting with the setup events) in batches of ``size``."""
        pending = self.setup()[:total]
        made = len(pending)
        while pending or made < total:
            while len(pending) < size and made < total:
                pending.append(self.next())
                made += 1
            yield pending[:size]
            pending = pending[size:]


# --- measurements ---------------------------------------------------------------------------------


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}" if seconds > 0 else "inf"


def bench_single(store: EventStore, workload: Workload, count: int) -> None:
    setup = workload.setup()
    last = store.append(CONTROL, setup, expected="0-0").positions[-1]
    events = [workload.next() for _ in range(count)]  # built up front: time only the appends
    ops = [deployment_ops([e]) for e in events]
    start = time.perf_counter()
    for event, projection in zip(events, ops):
        last = store.append(CONTROL, [event], expected=last, projection=projection).positions[-1]
    elapsed = time.perf_counter() - start
    print(
        f"single appends (version-checked): {rate(count, elapsed)}/s ({count} in {elapsed:.2f} s)"
    )


def bench_batched(store: EventStore, workload: Workload, batches: int, size: int) -> None:
    last = store.last_position(CONTROL)
    prepared = []
    for _ in range(batches):
        events = [workload.next() for _ in range(size)]
        prepared.append((events, deployment_ops(events)))
    start = time.perf_counter()
    for events, projection in prepared:
        last = store.append(CONTROL, events, expected=last, projection=projection).positions[-1]
    elapsed = time.perf_counter() - start
    total = batches * size
    print(
        f"batched appends (version-checked, {size}/batch): {rate(total, elapsed)} events/s "
        f"({batches} batches, {total} events in {elapsed:.2f} s)"
    )


def bench_replay(store: EventStore, workload: Workload, total: int, batch: int) -> None:
    start = time.perf_counter()
    appending = 0.0
    for events in workload.batches(total, batch):
        t = time.perf_counter()
        store.append(CONTROL, events)  # no version check: fill as fast as possible
        appending += time.perf_counter() - t
    filled = time.perf_counter() - start
    length = int(store.redis.xlen(store.keys.log(CONTROL)))
    print(
        f"fill: {length:,} events in {filled:.2f} s ({rate(length, appending)} events/s appended "
        f"in batches of {batch}; {appending:.2f} s appending, the rest building events)"
    )
    settle(store.redis)
    start, cpu = time.perf_counter(), time.process_time()
    state = fold(store.replay(CONTROL))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    deployments = sum(len(by_workflow) for by_workflow in state.deployments.values())
    print(
        f"replay into the deployment projection: {rate(length, elapsed)} events/s "
        f"({length:,} events in {elapsed:.2f} s, {cpu:.2f} s client CPU; "
        f"{len(state.clusters)} clusters, "
        f"{len(state.workflows)} workflows, {len(state.releases)} releases, "
        f"{deployments} deployments)"
    )


def bench_verify(store: EventStore) -> None:
    """``audit verify`` of the replay log: the hash chain of every entry recomputed (one event
    per entry here, as the control log holds them: the most hashing per event)."""
    stream = store.keys.log(CONTROL)
    start, cpu = time.perf_counter(), time.process_time()
    _, result = store.verify_stream(stream)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(
        f"audit verify (hash chain): {rate(result.events, elapsed)} events/s "
        f"({result.entries:,} entries, {result.events:,} events in {elapsed:.2f} s, "
        f"{cpu:.2f} s client CPU; {'ok' if result.ok else f'BROKEN: {result.broken}'})"
    )


def settle(client: redis.Redis, timeout: float = 120.0) -> None:
    """Wait out an AOF rewrite the fill triggered, so the replay doesn't share the CPU with it."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        info = client.info("persistence")
        if not (info.get("aof_rewrite_in_progress") or info.get("aof_rewrite_scheduled")):
            break
        time.sleep(0.1)
    waited = time.perf_counter() - start
    if waited >= 0.1:
        print(f"(waited {waited:.1f} s for the server's background AOF rewrite to finish)")


def setting(client: redis.Redis, name: str) -> str:
    try:
        return str(client.config_get(name).get(name, "?"))
    except redis.RedisError:  # CONFIG may be disabled or denied on a managed server
        return "?"


def delete_team(client: redis.Redis, keys: Keys) -> None:
    for key in client.scan_iter(match=f"{keys.base}*", count=1000):
        client.unlink(key)


def run(url: str, args: argparse.Namespace) -> None:
    client = Session(settings=Settings(url=url)).redis
    info = client.info("server")
    version = info.get("valkey_version") or info["redis_version"]
    print(
        f"server: {info.get('server_name', 'redis')} {version} at {redacted(url)}; "
        f"appendonly={setting(client, 'appendonly')} appendfsync={setting(client, 'appendfsync')}"
    )
    run_id = uuid.uuid4().hex[:8]
    teams = [Keys(DEFAULT_PREFIX, f"bench-{run_id}-{name}") for name in ("appends", "replay")]
    try:
        store = EventStore(client, teams[0])
        workload = Workload(teams[0].team)
        bench_single(store, workload, args.single)
        bench_batched(store, workload, args.batches, args.batch_size)
        replay_store = EventStore(client, teams[1])
        bench_replay(replay_store, Workload(teams[1].team), args.events, args.fill_batch)
        bench_verify(replay_store)
    finally:
        for keys in teams:
            delete_team(client, keys)
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_arguments(parser)
    parser.add_argument("--events", type=int, default=1_000_000, help="events to replay")
    parser.add_argument("--single", type=int, default=20_000, help="single appends to time")
    parser.add_argument("--batches", type=int, default=1_000, help="batches to append")
    parser.add_argument("--batch-size", type=int, default=100, help="events per batch")
    parser.add_argument(
        "--fill-batch", type=int, default=1_000, help="events per batch when filling the replay log"
    )
    args = parser.parse_args()
    if min(args.events, args.single, args.batches, args.batch_size, args.fill_batch) < 1:
        parser.error("counts must be positive")
    configure_logging("warning")
    with server_url(args.backend, args.url) as url:
        run(url, args)


if __name__ == "__main__":
    main()
