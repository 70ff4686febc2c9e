"""Archive benchmark (issue 14): archival throughput, replay across archive + live, and audit
verify across archive + live.

    python benchmarks/archive_bench.py [--backend valkey|redis | --url URL] [--events N]
        [--live N] [--tasks N] [--archive-url URL]

Fills a team's control log with ``--events`` control events (one event per entry, as the control
log holds them: the most work per event; store_bench's workload), and with ``--tasks`` no-op
tasks its task log (entries that batch several events, as the task scripts write them); archives
both (retention 0: everything) into a local directory (or ``--archive-url``), times that, appends
``--live`` more control events, and then times a replay of the whole history into the control
projection (cold: a new session, every segment read from the store) and ``audit verify`` of it.
The server is a throwaway one unless ``--url`` is given (then only the benchmark's own team is
written, and deleted at the end).

Targets: replay across archive + live >= 400,000 events/s, audit verify >= 500,000 events/s.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.servers, store_bench

from benchmarks.store_bench import BENCH_ACTOR, Workload, rate, settle
from benchmarks.tasks_bench import delete_all
from tests.servers import add_server_arguments, server_url
from tilebox_core import Client, Task
from tilebox_core.archiver import Archiver
from tilebox_core.domain.projection import fold
from tilebox_core.logs import configure_logging
from tilebox_core.redis.eventstore import CONTROL
from tilebox_core.settings import Settings


class Noop(Task):
    n: int

    def execute(self, context: object) -> None:
        pass


def fill(client: Client, events: int, tasks: int) -> None:
    start = time.perf_counter()
    workload = Workload(client.team)
    for batch in workload.batches(events, 1000):
        client.store.append(CONTROL, batch)
    filled = time.perf_counter() - start
    print(f"fill: {events:,} control events in {filled:.2f} s")
    if tasks:
        start = time.perf_counter()
        client.jobs().submit_many([(f"n{i}", Noop(i)) for i in range(tasks)])
        client.runner(tasks=[Noop]).run_all()
        for shard in client.tasks.shards:  # as retention does for expired jobs
            client.redis.delete(shard.jobs)
        print(f"fill: {tasks:,} no-op tasks run in {time.perf_counter() - start:.2f} s")


def bench_archive(client: Client) -> int:
    archiver = Archiver(client, retention_ms=0)
    start, cpu = time.perf_counter(), time.process_time()
    passes = archiver.run_once()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    archiver.release()
    events = sum(p.events for p in passes)
    entries = sum(p.entries for p in passes)
    size = sum(p.bytes for p in passes)
    segments = sum(p.segments for p in passes)
    print(
        f"archival: {rate(events, elapsed)} events/s ({events:,} events in {entries:,} entries, "
        f"{segments} segments, {size / 1e6:.1f} MB compressed, in {elapsed:.2f} s, "
        f"{cpu:.2f} s client CPU; put, recorded and trimmed)"
    )
    return events


def bench_replay(settings: Settings) -> None:
    with Client(settings=settings) as cold:  # a new session: nothing of the archive cached
        start, cpu = time.perf_counter(), time.process_time()
        count = 0

        def counted() -> object:
            nonlocal count
            for stored in cold.store.replay(CONTROL):
                count += 1
                yield stored

        state = fold(counted())
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        start = time.perf_counter()
        tasks = sum(1 for _ in cold.tasks.replay())
        tasks_elapsed = time.perf_counter() - start
    print(
        f"replay across archive + live (control log into its projection): "
        f"{rate(count, elapsed)} events/s ({count:,} events in {elapsed:.2f} s, {cpu:.2f} s "
        f"client CPU; {len(state.releases)} releases)"
    )
    if tasks:
        print(
            f"replay across archive + live (task log): {rate(tasks, tasks_elapsed)} events/s "
            f"({tasks:,} events in {tasks_elapsed:.2f} s)"
        )


def bench_verify(settings: Settings) -> None:
    with Client(settings=settings) as cold:
        start, cpu = time.perf_counter(), time.process_time()
        audit = cold.events().verify()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    segments = sum(s.segments for s in audit.streams)
    print(
        f"audit verify across archive + live: {rate(audit.events, elapsed)} events/s "
        f"({audit.entries:,} entries, {audit.events:,} events, {segments} segments in "
        f"{elapsed:.2f} s, {cpu:.2f} s client CPU; {'ok' if audit.ok else audit.broken})"
    )


def run(url: str, args: argparse.Namespace, home: Path) -> None:
    team = f"bench-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        url=url, team=team, actor=BENCH_ACTOR, home=home, archive_url=args.archive_url
    )
    with Client(settings=settings) as client:
        print(f"archive: {client.archive.location}")
        try:
            fill(client, args.events, args.tasks)
            settle(client.redis)  # type: ignore[arg-type]
            bench_archive(client)
            workload = Workload(team)
            workload.setup()
            for batch in _batches(workload, args.live):
                client.store.append(CONTROL, batch)
            print(f"live: {args.live:,} more control events appended after the archive")
            bench_replay(settings)
            bench_verify(settings)
        finally:
            delete_all(client)


def _batches(workload: Workload, total: int) -> list[list[object]]:
    events = [workload.next() for _ in range(total)]
    return [events[i : i + 1000] for i in range(0, total, 1000)]  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_arguments(parser)
    parser.add_argument("--events", type=int, default=1_000_000, help="control events archived")
    parser.add_argument("--live", type=int, default=100_000, help="control events left live")
    parser.add_argument("--tasks", type=int, default=20_000, help="no-op tasks archived")
    parser.add_argument("--archive-url", help="object store URL (default: a temporary directory)")
    args = parser.parse_args()
    if min(args.events, args.live) < 1 or args.tasks < 0:
        parser.error("counts must be positive")
    configure_logging("warning")
    with (
        tempfile.TemporaryDirectory(prefix="archive-bench-") as home,
        server_url(args.backend, args.url) as url,
    ):
        run(url, args, Path(home))


if __name__ == "__main__":
    main()
