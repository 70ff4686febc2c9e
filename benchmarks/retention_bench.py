"""Retention benchmark (issue 14): a bounded live window under a long run of no-op tasks.

    python benchmarks/retention_bench.py [--backend valkey|redis | --url URL] [--tasks N]
        [--step N] [--archive-url URL] [--skip-off]

A team with retention 0 runs ``--tasks`` no-op tasks (default 1,000,000) in rounds of ``--step``
(default 100,000): each round half single-task jobs (one ``jobs().submit_many`` call) and half one
job fanning out to no-op subtasks, run by a direct runner in this process (``run_all``), then one
archiver pass (``Archiver.run_once``: the sweep removes the ended jobs, the task logs are archived
into a local directory, or ``--archive-url``, and trimmed). After each round it prints the
server's ``used_memory``. Then:

- archival throughput: events archived per second of the archiver's passes (put, recorded and
  trimmed; the sweep's time counted in);
- replay across archive + live: a new client (nothing cached) reads the whole task history;
- ``audit verify`` across archive + live;
- end-to-end tasks/s with archival on against off (the same rounds on a team whose jobs keep
  the default retention: nothing removed or archived), two ways. As deployed: the archiver in a
  process of its own (``tilebox archive run --interval 1``, as a release runner's supervisor or
  an operator runs it) while this process runs the rounds on a third team; its time counts until
  the archiver has caught up (it is stopped after the last round, and what it had not done yet is
  done by one more pass here). Strictly: each round's run and archiver pass one after the other
  in this process (the first team's rounds), as if the archiver had no core of its own.

Targets: memory flat after warm-up and under 64 MiB; verify >= 500,000 events/s; replay >=
400,000 events/s; archival on at most 10% slower end to end. Figures are printed, never asserted;
they vary with the machine's load (the 2-core machine this was written on is shared).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # for tests.servers

from noop_tasks import FanOut, Noop  # noqa: E402
from tasks_bench import delete_all  # noqa: E402

from tests.servers import add_server_arguments, server_url  # noqa: E402
from tilebox_core import Client  # noqa: E402
from tilebox_core.archiver import Archiver  # noqa: E402
from tilebox_core.logs import configure_logging  # noqa: E402
from tilebox_core.settings import Settings  # noqa: E402

ACTOR = "user:bench"


def mib(client: Client) -> float:
    return int(client.redis.info("memory")["used_memory"]) / 2**20  # type: ignore[index]


def run_round(client: Client, tasks: int, start: int, retention: dt.timedelta | None) -> None:
    """``tasks`` no-op tasks: half single-task jobs, half one fan-out job; run to the end."""
    singles = tasks // 2
    jobs = client.jobs()
    jobs.submit_many(
        [(f"n{start + i}", Noop(start + i)) for i in range(singles)], retention=retention
    )
    jobs.submit("fan", FanOut(tasks - singles - 1), retention=retention)  # + its root: tasks
    client.runner(tasks=[Noop, FanOut]).run_all()


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}" if seconds > 0 else "-"


def bench_on(client: Client, args: argparse.Namespace) -> tuple[float, int, float]:
    """The rounds with archival: (their wall time, events archived, archiver seconds)."""
    archiver = Archiver(client, retention_ms=0)
    total = archived = 0
    run_seconds = archive_seconds = 0.0
    print(f"archival on: {args.tasks:,} tasks in rounds of {args.step:,} (retention 0)")
    print(f"  start: used_memory {mib(client):.1f} MiB")
    while total < args.tasks:
        step = min(args.step, args.tasks - total)
        began = time.perf_counter()
        run_round(client, step, total, dt.timedelta(0))
        ran = time.perf_counter()
        passes = archiver.run_once()
        done = time.perf_counter()
        run_seconds += ran - began
        archive_seconds += done - ran
        total += step
        events = sum(p.events for p in passes)
        archived += events
        print(
            f"  {total:>9,} tasks: used_memory {mib(client):6.1f} MiB; round {rate(step, done - began)}"
            f" tasks/s (run {ran - began:.1f} s, archive {done - ran:.1f} s, {events:,} events)"
        )
    archiver.release()
    return run_seconds + archive_seconds, archived, archive_seconds


def bench_deployed(url: str, args: argparse.Namespace, home: Path) -> float:
    """The rounds on a new team while ``tilebox archive run`` archives in a process of its own;
    the seconds until it had caught up (the rounds, its last pass, and a pass here for what it
    had not done yet)."""
    team = f"bench-{uuid.uuid4().hex[:8]}"
    settings = Settings(url=url, team=team, actor=ACTOR, home=home, archive_url=args.archive_url)
    env = {**os.environ, "TILEBOX_REDIS_URL": url, "TILEBOX_TEAM": team, "TILEBOX_ACTOR": ACTOR,
           "TILEBOX_HOME": str(home)}  # fmt: skip
    if args.archive_url:
        env["TILEBOX_ARCHIVE_URL"] = args.archive_url
    command = [sys.executable, "-c", "from tilebox_cli.main import main; main()",
               "archive", "run", "--interval", "1"]  # fmt: skip
    with Client(settings=settings) as client:
        try:
            client.clusters()
            client.jobs().set_retention(dt.timedelta(0))
            archiver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
            print("archival on, as deployed ('tilebox archive run' in its own process):")
            began = time.perf_counter()
            total = 0
            while total < args.tasks:
                step = min(args.step, args.tasks - total)
                run_round(client, step, total, dt.timedelta(0))
                total += step
                print(f"  {total:>9,} tasks: used_memory {mib(client):6.1f} MiB")
            ran = time.perf_counter()
            archiver.terminate()  # (SIGTERM: it ends the pass it is in, then exits)
            archiver.wait(300)
            left = Archiver(client, retention_ms=0)
            passes = left.run_once()
            left.release()
            done = time.perf_counter()
            print(
                f"  rounds {ran - began:.1f} s, then {done - ran:.1f} s until the archiver had "
                f"caught up ({sum(p.events for p in passes):,} events left for the last pass); "
                f"used_memory {mib(client):.1f} MiB"
            )
            return done - began
        finally:
            delete_all(client)


def bench_off(client: Client, args: argparse.Namespace) -> float:
    total, seconds = 0, 0.0
    while total < args.tasks:
        step = min(args.step, args.tasks - total)
        began = time.perf_counter()
        run_round(client, step, total, None)
        seconds += time.perf_counter() - began
        total += step
    print(f"archival off: {args.tasks:,} tasks, used_memory {mib(client):.1f} MiB at the end")
    return seconds


def bench_history(settings: Settings) -> None:
    with Client(settings=settings) as cold:  # nothing of the archive cached
        start = time.perf_counter()
        events = sum(1 for _ in cold.tasks.replay())
        replayed = time.perf_counter() - start
        start = time.perf_counter()
        audit = cold.events().verify()
        verified = time.perf_counter() - start
    print(
        f"replay across archive + live (task log): {rate(events, replayed)} events/s "
        f"({events:,} events in {replayed:.1f} s)"
    )
    segments = sum(s.segments for s in audit.streams)
    print(
        f"audit verify across archive + live: {rate(audit.events, verified)} events/s "
        f"({audit.events:,} events, {segments} segments in {verified:.1f} s; "
        f"{'ok' if audit.ok else audit.broken})"
    )


def run(url: str, args: argparse.Namespace, home: Path) -> None:
    on_team, off_team = (f"bench-{uuid.uuid4().hex[:8]}" for _ in range(2))
    settings = Settings(url=url, team=on_team, actor=ACTOR, home=home, archive_url=args.archive_url)
    with Client(settings=settings) as client, Client(url, team=off_team, actor=ACTOR) as off:
        try:
            client.clusters()  # (the default cluster is created on first use)
            client.jobs().set_retention(dt.timedelta(0))
            on_seconds, archived, archive_seconds = bench_on(client, args)
            print(
                f"archival: {rate(archived, archive_seconds)} events/s ({archived:,} events in "
                f"{archive_seconds:.1f} s of archiver passes, the sweep included)"
            )
            bench_history(settings)
            if args.skip_off:
                return
            deployed_seconds = bench_deployed(url, args, home / "deployed")
            off_seconds = bench_off(off, args)
            off_rate = args.tasks / off_seconds
            for how, seconds in (("as deployed", deployed_seconds), ("strictly", on_seconds)):
                on_rate = args.tasks / seconds
                print(
                    f"end to end, {how}: archival on {on_rate:,.0f} tasks/s, off "
                    f"{off_rate:,.0f} tasks/s ({(off_rate - on_rate) / off_rate:+.1%} slower "
                    f"with archival)"
                )
        finally:
            delete_all(client)
            delete_all(off)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_arguments(parser)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--step", type=int, default=100_000, help="tasks per round")
    parser.add_argument("--archive-url", help="object store URL (default: a temporary directory)")
    parser.add_argument("--skip-off", action="store_true", help="no archival-off comparison")
    args = parser.parse_args()
    if args.tasks < 2 or args.step < 2:
        parser.error("--tasks and --step must be at least 2")
    configure_logging("warning")
    with (
        tempfile.TemporaryDirectory(prefix="retention-bench-") as home,
        server_url(args.backend, args.url) as url,
    ):
        run(url, args, Path(home))


if __name__ == "__main__":
    main()
