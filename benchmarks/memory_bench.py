"""Redis memory per finished no-op task: what the live window costs a team, row by row.

    python benchmarks/memory_bench.py [--backend valkey|redis | --url URL] [--tasks N]

For N single-task jobs (one ``jobs().submit_many`` call, then a direct runner's ``run_all``) and
one job fanning out N no-op subtasks, it prints the growth of the server's ``used_memory`` per
finished task, and where it goes: ``MEMORY USAGE`` of the team's keys grouped by kind (task
hashes, task log, job hashes and lists, the jobs index, lanes, the rest), divided by the task count.
Issue 14's target: at most 600 bytes per finished task for the task log entry and task state
together. Memory figures are exact and repeat between runs (the allocator rounds them the same
way), unlike times.
"""

from __future__ import annotations

import argparse
import re
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # for tests.servers

import noop_tasks  # noqa: E402
from noop_tasks import FanOut, Noop  # noqa: E402
from tasks_bench import delete_team  # noqa: E402

from tests.servers import add_server_arguments, server_url  # noqa: E402
from tilebox_core import Client  # noqa: E402
from tilebox_core.logs import configure_logging  # noqa: E402

# key kind by the name after the hash tag (see tilebox_core/redis/keys.py)
KINDS = [
    ("task hashes", re.compile(r"^task:")),
    ("task log", re.compile(r"^log:tasks$")),
    ("job task lists", re.compile(r"^job:[^:]+:tasks$")),
    ("job hashes", re.compile(r"^job:[^:]+$")),
    ("jobs index", re.compile(r"^jobs$")),
    ("lanes", re.compile(r"^lane:")),
]


def kind_of(key: str) -> str:
    rest = key.split("}:", 1)[-1]
    return next((name for name, pattern in KINDS if pattern.match(rest)), "other")


def measure(url: str, label: str, tasks: int, work: Callable[[Client], None]) -> None:
    team = f"mem-{uuid.uuid4().hex[:8]}"
    with Client(url, team=team) as client:
        redis = client.redis
        before = int(redis.info("memory")["used_memory"])
        work(client)
        after = int(redis.info("memory")["used_memory"])
        sizes: Counter[str] = Counter()
        counts: Counter[str] = Counter()
        for pattern in client.store.keys.acl_patterns(client.store.actor).team:
            for raw in redis.scan_iter(match=pattern, count=1000):
                key = raw.decode() if isinstance(raw, bytes) else raw
                kind = kind_of(key)
                sizes[kind] += int(redis.memory_usage(key, samples=0) or 0)
                counts[kind] += 1
        delete_team(redis, client.store.keys)
    rows = sizes["task hashes"] + sizes["task log"]
    print(
        f"{label}: used_memory +{(after - before) / tasks:,.0f} B per task; "
        f"task hash + task log {rows / tasks:,.0f} B per task (target <= 600)",
        flush=True,
    )
    for kind, size in sizes.most_common():
        print(f"    {kind:15} {size / tasks:8,.0f} B per task  ({counts[kind]:,} keys)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_arguments(parser)
    parser.add_argument("--tasks", type=int, default=20_000, help="jobs, and fan-out subtasks")
    args = parser.parse_args()
    if args.tasks < 1:
        parser.error("--tasks must be positive")
    configure_logging("warning")

    def single(client: Client) -> None:
        client.jobs().submit_many(("single", Noop(i)) for i in range(args.tasks))
        client.runner(tasks=noop_tasks.TASKS).run_all()

    def fan_out(client: Client) -> None:
        client.jobs().submit("fan-out", FanOut(args.tasks))
        client.runner(tasks=noop_tasks.TASKS).run_all()

    with server_url(args.backend, args.url, None) as url:
        print(f"server: {args.url or args.backend}; {args.tasks} tasks per measurement", flush=True)
        measure(url, "single-task jobs", args.tasks, single)
        measure(url, "fan-out subtasks", args.tasks + 1, fan_out)


if __name__ == "__main__":
    main()
