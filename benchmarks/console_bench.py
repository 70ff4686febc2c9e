"""Console benchmark: server time to render the job page of a 10,000-task job, and the jobs list.

    python benchmarks/console_bench.py [--backend valkey|redis | --url URL] [--batches N]
        [--batch-size N] [--jobs N] [--rounds N]

Starts a throwaway server (as the other benchmarks do), creates one finished job of
1 + B + B*S tasks (default B = 99 batches of S = 100 no-op subtasks, 10,000 tasks; each batch
waits for the one before, so the diagram has dependency arrows) and N single-task jobs (default
1,000, run too) on the default cluster, then serves the console app in this process (uvicorn on a
free loopback port, the same app ``tilebox console`` serves) and requests each page ``--rounds``
times. Per page it prints the server time the console's ``Server-Timing`` header reports (median
and best), the time until the whole response had arrived, the CPU time this process (the console,
and the client reading its reply) and the Redis server used meanwhile (steadier than the clock on
a busy machine), and the page's size. Target: the job
page of the 10,000-task job in under 1 s server time. Figures are printed, never asserted; on a
shared 2-core machine they swing by ±20% between runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import NamedTuple

import uvicorn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # for tests.servers

from noop_tasks import FanOut, Noop  # noqa: E402
from tasks_bench import delete_team  # noqa: E402

from tests.servers import add_server_arguments, server_url  # noqa: E402
from tilebox_cli.console.app import create_app  # noqa: E402
from tilebox_cli.console.server import listen  # noqa: E402
from tilebox_core import Client, ExecutionContext, Task  # noqa: E402


class Root(Task):
    batches: int
    size: int

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "bench.Root", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        previous = None
        for _ in range(self.batches):
            previous = context.submit_subtask(
                FanOut(self.size), depends_on=[previous] if previous else []
            )


class Measured(NamedTuple):
    server_ms: float  # the console's Server-Timing: request in, response out
    total_ms: float  # until the whole body arrived here
    cpu_ms: float  # CPU time of this process (the console and this client) meanwhile
    redis_cpu_ms: float  # CPU time of the Redis server meanwhile
    size: int


def redis_cpu(client: Client) -> float:
    info = client.redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def fetch(client: Client, url: str) -> Measured:
    redis_before, cpu_before = redis_cpu(client), time.process_time()
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        body = response.read()
        timing = response.headers["server-timing"]
    elapsed = (time.perf_counter() - started) * 1000
    cpu = (time.process_time() - cpu_before) * 1000
    redis = (redis_cpu(client) - redis_before) * 1000
    return Measured(float(timing.split("dur=", 1)[1]), elapsed, cpu, redis, len(body))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_arguments(parser)
    parser.add_argument("--batches", type=int, default=99)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=1000, help="single-task jobs for the list")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with server_url(args.backend, args.url) as url:
        team = "bench-console-" + uuid.uuid4().hex[:8]
        with Client(url, team=team, actor="user:bench") as client:
            started = time.perf_counter()
            client.jobs().submit_many((f"single-{i}", Noop(i)) for i in range(args.jobs))
            big = client.jobs().submit("big", Root(args.batches, args.batch_size))  # the newest
            client.runner(tasks=[Root, FanOut, Noop], cache_root=HERE / ".cache").run_all()
            job = client.jobs().find(big.id, with_tasks=False)
            print(f"set up: a job of {job.total_tasks:,} tasks ({job.state}) and {args.jobs:,} "
                  f"single-task jobs in {time.perf_counter() - started:.1f} s")  # fmt: skip
            serve(client, team, big.id, args.rounds)
            if args.url:  # leave nothing behind on a server we were given
                delete_team(client.redis, client.store.keys)


def serve(client: Client, team: str, job_id: str, rounds: int) -> None:
    sock = listen("127.0.0.1", 0)
    app = create_app(lambda: Client(client.url, team=team, prefix=client.prefix), team=team)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    pages = [
        ("job page (10,000-task job)", f"/jobs/{job_id}"),
        ("job page, live part", f"/jobs/{job_id}/live"),
        ("job diagram (SVG)", f"/jobs/{job_id}/diagram.svg"),
        ("jobs list, page 1", "/jobs"),
        ("jobs list, page 5", "/jobs?page=5"),
        ("jobs list, state=completed", "/jobs?state=completed"),
        ("cluster page", "/clusters/default"),
        ("event log, page 1", "/events"),
    ]
    try:
        print(f"{'page':<28} {'server median':>13} {'best':>8} {'full response':>13} "
              f"{'console CPU':>11} {'redis CPU':>9} {'size':>8}")  # fmt: skip
        for label, path in pages:
            fetch(client, base + path)  # warm: each server thread opens its client once
            runs = [fetch(client, base + path) for _ in range(rounds)]
            server_ms = [r.server_ms for r in runs]
            print(
                f"{label:<28} {statistics.median(server_ms):>10.0f} ms {min(server_ms):>5.0f} ms "
                f"{statistics.median(r.total_ms for r in runs):>10.0f} ms "
                f"{statistics.median(r.cpu_ms for r in runs):>8.0f} ms "
                f"{statistics.median(r.redis_cpu_ms for r in runs):>6.0f} ms "
                f"{runs[0].size / 1024:>5.0f} KiB"
            )
        print("target: job page of a 10,000-task job < 1000 ms server time")
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


if __name__ == "__main__":
    main()
