"""Task plane on one node and on a 3-master Valkey Cluster: server CPU per task, per master.

    python benchmarks/cluster_bench.py [--tasks N] [--jobs J] [--masters M] [--valgrind]

Starts a throwaway single Valkey (the embedded binary) and a throwaway cluster of ``--masters``
masters from the same binary (no replicas; both with ``--appendonly yes --appendfsync everysec``),
and on each runs, with a direct runner in this process (``run_all``):

1. fan-out: ``--jobs`` jobs whose root task submits N / J no-op subtasks each. A job lives in one
   shard (its tasks with it), so the spread over masters comes from the jobs: one job alone would
   load one master.
2. single-task jobs: N jobs of one no-op task, submitted with one ``jobs().submit_many`` call.

For each it prints the server CPU per task (INFO cpu, used_cpu_user + used_cpu_sys, deltas over
the measurement, summed over the masters), and on the cluster each master's share of the tasks
(by the shard of each task's job and the master serving that shard's slot) and its CPU per task
it served; then the throughput the masters would reach if each had a core of its own: the tasks
over the busiest master's CPU seconds, against one node's tasks over its CPU seconds.

On this 2-core machine the wall-clock rate cannot grow with the masters (they share the cores
with each other and with the runner); the per-master CPU is what says how the work scales. It is
inflated on the cluster by the machine itself: three busy servers and the runner on two cores
wait for each other and run on cold caches (a HSET inside a script takes about twice as long).
``--valgrind`` runs every server under callgrind and prints instructions per task as well, which
no such contention changes (about 50 times slower: use ``--tasks 3000``).
Targets: per-task server CPU on the cluster within 15% of the single node's; no master takes more
than 40% of a 3-master cluster's tasks. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # for tests.servers

import noop_tasks  # noqa: E402
import redis  # noqa: E402
from noop_tasks import FanOut, Noop  # noqa: E402
from task_cost import callgrind_instructions, callgrind_launcher  # noqa: E402

from tests.servers import ClusterProcess, start_backend  # noqa: E402
from tilebox_core import Client  # noqa: E402
from tilebox_core.logs import configure_logging  # noqa: E402
from tilebox_core.redis.keys import shard_of  # noqa: E402


def process_id(port: int) -> int:
    with redis.Redis(port=port) as node:
        return int(node.info("server")["process_id"])


def cpu_seconds(port: int) -> float:
    with redis.Redis(port=port) as node:
        info = node.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# (label, url, node ports, the cluster (None: the single node), each node's directory)
Found = list[tuple[str, str, list[int], "ClusterProcess | None", dict[int, Path]]]


@contextmanager
def servers(masters: int, valgrind: bool) -> Iterator[Found]:
    """The single node, then the cluster (see ``Found``)."""
    work = Path(tempfile.mkdtemp(prefix="tilebox-cluster-bench-"))
    launcher = callgrind_launcher if valgrind else None
    single = start_backend("valkey", work / "single", appendfsync="everysec",
                           launcher=launcher(work / "single") if launcher else None)  # fmt: skip
    cluster = ClusterProcess(work / "cluster", masters=masters, appendfsync="everysec",
                             launcher=launcher, node_timeout_ms=60_000 if valgrind else 1000)  # fmt: skip
    try:
        cluster.start()
        yield [("1 node", single.url, [single.port], None, {single.port: single.dir}),
               (f"{masters} masters", cluster.url, [n.port for n in cluster.nodes], cluster,
                {n.port: n.dir for n in cluster.nodes})]  # fmt: skip
    finally:
        single.stop()
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


def measure(
    label: str, url: str, ports: list[int], cluster: ClusterProcess | None, what: str,
    tasks: int, submit: Callable[[Client], list[str]], dirs: dict[int, Path] | None,
) -> tuple[float, float]:  # fmt: skip
    """Run ``submit``'s jobs to the end; (server CPU per task, tasks/s the masters would reach).
    ``submit`` returns, per task, the id of its job. ``dirs``: each callgrind node's directory."""
    team = f"bench-{uuid.uuid4().hex[:8]}"
    with Client(url, team=team, actor="user:bench") as client, contextlib.ExitStack() as stack:
        client.tasks.fix_shards()
        counters = {
            port: stack.enter_context(callgrind_instructions(process_id(port), dirs[port]))
            for port in (ports if dirs else [])
        }
        before = {port: cpu_seconds(port) for port in ports}
        started = time.perf_counter()
        jobs_of_tasks = submit(client)
        client.runner(tasks=noop_tasks.TASKS).run_all()
        wall = time.perf_counter() - started
        used = {port: cpu_seconds(port) - before[port] for port in ports}
        shards = client.tasks.shards
        stack.close()
    if counters:
        counted = {port: counter() or 0 for port, counter in counters.items()}
        print(f"{what}, {label}: server {sum(counted.values()) / tasks:,.0f} instructions per task"
              + ("" if cluster is None else " (all masters; per master: " + ", ".join(
                  f"{counted[p] / tasks:,.0f}" for p in ports) + ")"), flush=True)  # fmt: skip
    total = sum(used.values())
    per_task = total / tasks
    share: collections.Counter[int] = collections.Counter()
    if cluster is None:
        share[ports[0]] = len(jobs_of_tasks)
    else:
        owner = {s.index: cluster.master_of(s.slot).port for s in shards}
        for job_id in jobs_of_tasks:
            share[owner[shard_of(job_id, len(shards))]] += 1
    busiest = max(used.values())
    reach = tasks / busiest
    print(f"{what}, {label}: {tasks / wall:,.0f} tasks/s wall clock; server CPU {per_task * 1e6:.1f} "
          f"us per task (all masters); if each master had a core: {reach:,.0f} tasks/s", flush=True)  # fmt: skip
    if cluster is not None:
        for port in ports:
            served = share[port]
            each = used[port] / served * 1e6 if served else float("nan")
            print(f"    master :{port}: {served / len(jobs_of_tasks):5.1%} of the tasks, "
                  f"{each:.1f} us CPU per task it served", flush=True)  # fmt: skip
        print(f"    max share {max(share.values()) / len(jobs_of_tasks):.1%}; {len(shards)} shards",
              flush=True)  # fmt: skip
    return per_task, reach


def fan_out(tasks: int, jobs: int) -> Callable[[Client], list[str]]:
    each = tasks // jobs

    def submit(client: Client) -> list[str]:
        made = client.jobs().submit_many((f"fan-out-{j}", FanOut(each)) for j in range(jobs))
        return [job.id for job in made for _ in range(each + 1)]

    return submit


def single(tasks: int) -> Callable[[Client], list[str]]:
    def submit(client: Client) -> list[str]:
        return [job.id for job in client.jobs().submit_many(("one", Noop(i)) for i in range(tasks))]

    return submit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=30_000)
    parser.add_argument("--jobs", type=int, default=60, help="fan-out jobs (their tasks: N / J)")
    parser.add_argument("--masters", type=int, default=3)
    parser.add_argument("--valgrind", action="store_true", help="count instructions (callgrind)")
    args = parser.parse_args()
    configure_logging("error")
    with servers(args.masters, args.valgrind) as found:
        results: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
        for label, url, ports, cluster, node_dirs in found:
            masters = [p for p in ports if cluster is None or p in cluster.replicas_of]
            dirs = node_dirs if args.valgrind else None
            fan_tasks = args.tasks // args.jobs * args.jobs + args.jobs
            results["fan-out"].append(measure(label, url, masters, cluster, "fan-out", fan_tasks,
                                              fan_out(args.tasks, args.jobs), dirs))  # fmt: skip
            results["single-task jobs"].append(measure(label, url, masters, cluster,
                                                       "single-task jobs", args.tasks,
                                                       single(args.tasks), dirs))  # fmt: skip
        for what, ((one_cpu, one_reach), (many_cpu, many_reach)) in results.items():
            print(
                f"{what}: cluster/single server CPU per task {many_cpu / one_cpu:.2f}x; "
                f"reachable throughput {many_reach / one_reach:.2f}x one node's",
                flush=True,
            )


if __name__ == "__main__":
    main()
