"""Task-plane benchmark: no-op tasks end to end (fan-out and single-task jobs) and claim latency.

    python benchmarks/tasks_bench.py [--backend valkey|redis | --url URL] [--tasks N]
        [--latency-jobs N] [--prefetch N] [--submit bulk|one] [--concurrency N] [--runners 1,2] [--only fanout,single,latency]
        [--profile DIR] [--trace]

Starts a throwaway server of its own (the embedded Valkey binary by default, the system
``redis-server`` with ``--backend redis``; both with ``--appendonly yes --appendfsync everysec
--save ""``) on a free port with a private data directory, and removes it afterwards. ``--url`` uses
an existing server instead; then only the benchmark's own (randomly named) teams are written, and
their keys are deleted at the end.

Runners are separate processes (this script re-executed with ``--serve-runner``) running
``TaskRunner.run_forever`` over the task classes of ``noop_tasks.py``; each measurement starts its
runners, waits until every one of them is blocked in XREADGROUP, and only then starts the clock.

1. fan-out: one job whose root task submits N no-op subtasks (``context.submit_subtasks``); timed
   from the submit call until the job is completed, with 1 and with 2 runner processes.
2. single-task jobs: N jobs of one no-op task each, submitted by one client with one
   ``jobs().submit_many`` call (``--submit one``: one ``submit()`` per job, one after the other),
   while the runners execute them (the submit rate is printed too); timed from the first submit
   until the last task has finished.
3. claim latency on an idle runner: one runner blocked in XREADGROUP; single no-op jobs are
   submitted one at a time, each only after the previous one completed and the runner is blocked
   again. Latency = ``TaskClaimed.at - TaskSubmitted.at``: both events carry a wall-clock
   timestamp with microsecond resolution taken by processes on this machine (stream ids are server
   milliseconds, too coarse). ``TaskSubmitted.at`` is taken just before the client sends the submit
   script, ``TaskClaimed.at`` by the runner right after XREADGROUP returned the entry, so the figure
   covers the submit round trip, the server waking the blocked reader and the reply's decoding.

Each throughput line also gives the CPU time used per task by the server (INFO cpu) and by the
runner processes (their own process time while serving), which tells where the time goes and is
steadier than wall-clock figures on a shared machine. ``--only`` picks measurements, ``--profile``
writes a cProfile of every runner process.

Prints plain lines; targets on a 2-core machine: >= 10,000 no-op tasks/s end to end, claim p99
< 5 ms. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # for tests.servers

import noop_tasks  # noqa: E402  (the task classes the runner processes import too)
from noop_tasks import FanOut, Noop  # noqa: E402

from tests.servers import add_server_arguments, server_url  # noqa: E402
from tilebox_core import Client  # noqa: E402
from tilebox_core.domain.events import TaskClaimed, TaskCompleted, TaskSubmitted  # noqa: E402
from tilebox_core.execution.worker import freeze_heap  # noqa: E402
from tilebox_core.jobs import job_state  # noqa: E402
from tilebox_core.logs import configure_logging  # noqa: E402
from tilebox_core.redis.keys import TaskKeys  # noqa: E402
from tilebox_core.redis.taskstore import TASKS  # noqa: E402

CLUSTER = "default"
SERVE = "--serve-runner"


# --- runner processes -----------------------------------------------------------------------------


def serve_runner(argv: list[str]) -> None:
    """Entry point of a runner process: ``URL TEAM PREFETCH CONCURRENCY CACHE [PROFILE_DIR]``."""
    from tilebox_core.logs import configure_logging

    url, team, prefetch, concurrency, cache = argv[:5]
    profile_dir = argv[5] if len(argv) > 5 else ""
    configure_logging("warning")
    client = Client(url, team=team, retries=20)
    options = {"concurrency": int(concurrency), "cache_root": Path(cache)}
    if int(prefetch) > 0:
        options["prefetch"] = int(prefetch)
    runner = client.runner(CLUSTER, noop_tasks.TASKS, **options)
    freeze_heap()  # as a release's runtime process does
    print("ready", flush=True)
    started = time.process_time()
    if not profile_dir:
        runner.run_forever()
    else:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        try:
            runner.run_forever()
        finally:
            profiler.disable()
            profiler.dump_stats(os.path.join(profile_dir, f"runner-{team}-{os.getpid()}.prof"))
    print(f"cpu {time.process_time() - started}", flush=True)  # read by Runners.__exit__


class Runners:
    """``count`` runner processes for one team, started blocked in XREADGROUP, stopped on exit."""

    def __init__(self, url: str, team: str, count: int, args: argparse.Namespace) -> None:
        self.url, self.team, self.count, self.args = url, team, count, args
        self.cache = Path(tempfile.mkdtemp(prefix="tilebox-bench-cache-"))
        self.processes: list[subprocess.Popen[str]] = []
        self.cpu = 0.0  # CPU seconds the runner processes used while serving (known after exit)

    def __enter__(self) -> Runners:
        watcher = redis.Redis.from_url(self.url)
        try:
            before = blocked_readers(watcher)
            for _ in range(self.count):
                argv = [sys.executable, str(Path(__file__).resolve()), SERVE, self.url, self.team,
                        str(self.args.prefetch), str(self.args.concurrency), str(self.cache)]  # fmt: skip
                if self.args.profile:
                    argv.append(str(Path(self.args.profile).resolve()))
                env = dict(os.environ, TILEBOX_HOME=str(self.cache / "home"))
                process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
                self.processes.append(process)
                assert process.stdout is not None
                if process.stdout.readline().strip() != "ready":
                    raise RuntimeError("a runner process failed to start")
            # Every worker thread of every runner blocks in its own XREADGROUP.
            wanted = before + self.count * self.args.concurrency
            deadline = time.monotonic() + 30
            while blocked_readers(watcher) < wanted:
                if time.monotonic() > deadline:
                    raise RuntimeError("the runner processes did not start reading")
                time.sleep(0.01)
        except BaseException:
            self.__exit__()
            raise
        finally:
            watcher.close()
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # drains: in-flight tasks finish
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
            if process.stdout is not None:
                for line in process.stdout.read().splitlines():
                    if line.startswith("cpu "):
                        self.cpu += float(line.split()[1])
                process.stdout.close()
        self.processes.clear()
        shutil.rmtree(self.cache, ignore_errors=True)


def blocked_readers(client: redis.Redis) -> int:
    """Connections blocked in XREADGROUP right now."""
    return sum(
        1
        for c in client.client_list()
        if c.get("cmd") == "xreadgroup" and "b" in c.get("flags", "")
    )


# --- an OTLP receiver (--trace) -------------------------------------------------------------------


RECEIVE = "--serve-receiver"


def serve_receiver() -> None:
    """Entry point of the receiver process (``--trace``): takes OTLP/HTTP exports on a free
    loopback port (printed) and keeps their bodies; ``GET /spans`` decodes them and answers how
    many spans arrived since the last ``GET``. A process of its own, as a collector would be, so
    that receiving does not slow the submitting client's thread."""
    import http.server

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    bodies: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            count = 0
            for body in bodies:
                for resource in ExportTraceServiceRequest.FromString(body).resource_spans:
                    count += sum(len(scope.spans) for scope in resource.scope_spans)
            bodies.clear()
            reply = str(count).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_port, flush=True)
    server.serve_forever()


class Receiver:
    """The receiver process of ``--trace``, stopped by ``close()``."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), RECEIVE],
                                        stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert self.process.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.process.stdout.readline())}"

    def spans(self) -> int:
        """Spans received since the last call."""
        import urllib.request

        with urllib.request.urlopen(self.url + "/spans", timeout=60) as response:
            return int(response.read())

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextmanager
def receiving(trace: bool) -> Iterator[Receiver | None]:
    """With ``trace``: a receiver, and the runner processes started meanwhile export to it."""
    if not trace:
        yield None
        return
    receiver = Receiver()
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.url  # inherited by the runner processes
    try:
        yield receiver
    finally:
        del os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
        receiver.close()


def spans_note(args: argparse.Namespace) -> str:
    """ "; N spans exported" after a measurement with --trace (once the runners have exited)."""
    receiver = args.receiver
    return f"; {receiver.spans():,} spans exported" if receiver is not None else ""


# --- measurements ---------------------------------------------------------------------------------


def server_cpu(client: redis.Redis) -> float:
    """CPU seconds the server has used (INFO cpu), to tell its share from the runners'."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def cpu_note(server: float, runners: float, tasks: int) -> str:
    return f"CPU per task: server {server / tasks * 1e6:.0f} us, runners {runners / tasks * 1e6:.0f} us"


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}" if seconds > 0 else "inf"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("s") else "s")


@contextmanager
def team_client(url: str, run_id: str, label: str) -> Iterator[Client]:
    """A client of a fresh team, whose keys are deleted afterwards."""
    client = Client(url, team=f"bench-{run_id}-{label}", actor="user:bench")
    try:
        yield client
    finally:
        delete_team(client.redis, client.store.keys)
        client.close()


def delete_team(client: redis.Redis, keys: TaskKeys) -> None:
    batch = []
    for key in client.scan_iter(match=f"{keys.base}*", count=1000):
        batch.append(key)
        if len(batch) == 1000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)


def delete_all(client: Client) -> None:
    """Every key of ``client``'s team: its control plane's and each task-plane shard's."""
    for keys in (client.store.keys, *client.tasks.shards):
        delete_team(client.redis, keys)  # type: ignore[arg-type]


def wait_for_job(client: Client, job_id: str, timeout: float) -> tuple[dict[str, str], float]:
    """Poll the job's counters (one HMGET per 2 ms) until it is no longer queued or running;
    returns its fields and when (perf_counter) its first task was computed."""
    key = client.store.keys.job(job_id)
    names = ("open", "computed", "skipped", "failed", "cancelled", "started")
    first = 0.0
    deadline = time.monotonic() + timeout
    while True:
        values = client.redis.hmget(key, names)
        fields = {n: v.decode() for n, v in zip(names, values) if v is not None}
        if not first and int(fields.get("computed", 0)):
            first = time.perf_counter()
        if job_state(fields) not in ("queued", "running") or time.monotonic() > deadline:
            return fields, first
        time.sleep(0.002)


def bench_fanout(url: str, run_id: str, args: argparse.Namespace, runners: int) -> None:
    n = args.tasks
    with team_client(url, run_id, f"fanout{runners}") as client:
        with Runners(url, client.team, runners, args) as group:
            cpu = server_cpu(client.redis)
            start = time.perf_counter()
            job = client.jobs().submit("fan-out", FanOut(n))
            fields, first_done = wait_for_job(client, job.id, args.timeout)
            elapsed = time.perf_counter() - start
            cpu = server_cpu(client.redis) - cpu
        state, computed = job_state(fields), int(fields.get("computed", 0))
        # completed: every task computed (the job's "computed" count leaves out the last call's)
        note = "" if state == "completed" else f"; INCOMPLETE: {state}, {computed} computed"
        print(
            f"fan-out, {plural(runners, 'runner process')}: {rate(n + 1, elapsed)} tasks/s "
            f"(1 root + {n} no-op subtasks in {elapsed:.2f} s; the first task was computed after "
            f"{first_done - start:.2f} s; {cpu_note(cpu, group.cpu, n + 1)}{note}{spans_note(args)})",
            flush=True,
        )


def bench_single_jobs(url: str, run_id: str, args: argparse.Namespace, runners: int) -> None:
    n = args.tasks
    with team_client(url, run_id, f"single{runners}") as client:
        jobs = client.jobs()
        lane = client.tasks.lane(CLUSTER, *Noop.identifier())
        inputs = [Noop(i) for i in range(n)]
        with Runners(url, client.team, runners, args) as group:
            cpu = server_cpu(client.redis)
            start = time.perf_counter()
            if args.submit == "bulk":
                ids = [job.id for job in jobs.submit_many(("single", task) for task in inputs)]
            else:
                ids = [jobs.submit("single", task).id for task in inputs]
            submitted = time.perf_counter() - start
            # Lane entries are deleted by the finish script, atomically with the completion: once
            # every job is submitted, an empty lane means every task has finished.
            deadline = time.monotonic() + args.timeout
            while client.redis.xlen(lane) and time.monotonic() < deadline:
                time.sleep(0.002)
            elapsed = time.perf_counter() - start
            cpu = server_cpu(client.redis) - cpu
        pipe = client.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(client.store.keys.job(job_id), "open")
        done = sum(1 for v in pipe.execute() if v == b"0")
        note = "" if done == n else f"; INCOMPLETE: {done} of {n} jobs completed"
        how = "with submit_many" if args.submit == "bulk" else "one submit() call per job"
        print(
            f"single-task jobs, {plural(runners, 'runner process')}: {rate(n, elapsed)} tasks/s end to end "
            f"({n} jobs in {elapsed:.2f} s; submitted {how} at {rate(n, submitted)} jobs/s by one client "
            f"in {submitted:.2f} s; {cpu_note(cpu, group.cpu, n)}{note}{spans_note(args)})",
            flush=True,
        )


def bench_latency(url: str, run_id: str, args: argparse.Namespace) -> None:
    n, warmup = args.latency_jobs, 20
    with team_client(url, run_id, "latency") as client:
        jobs = client.jobs()
        log = client.store.keys.log(TASKS)
        watcher = redis.Redis.from_url(url)
        others = blocked_readers(watcher)  # with --url, other clients may be blocked too
        latencies: list[float] = []
        with Runners(url, client.team, 1, _with(args, concurrency=1)):
            position = "0-0"
            if client.redis.exists(log):
                position = client.redis.xinfo_stream(log)["last-generated-id"].decode()
            for i in range(warmup + n):
                job = jobs.submit("latency", Noop(i))
                submitted_at = claimed_at = None
                completed = False
                deadline = time.monotonic() + args.timeout
                while not completed and time.monotonic() < deadline:
                    # Block on the task log for this job's events: no polling of task state.
                    for stored in client.store.wait(TASKS, position, block_ms=1000, count=100):
                        position, event = stored.position, stored.event
                        if getattr(event, "job_id", None) != job.id:
                            continue
                        if isinstance(event, TaskSubmitted):
                            submitted_at = event.at
                        elif isinstance(event, TaskClaimed):
                            claimed_at = event.at
                        elif isinstance(event, TaskCompleted):
                            completed = True
                if submitted_at is None or claimed_at is None:
                    raise RuntimeError(f"job {job.id} was not claimed within {args.timeout} s")
                if i >= warmup:
                    latencies.append((claimed_at - submitted_at).total_seconds() * 1000)
                # Idle again: the runner's worker is back in XREADGROUP before the next submit.
                while blocked_readers(watcher) < others + 1:
                    time.sleep(0.0005)
        watcher.close()
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"submit->claim latency, idle runner: p50 {p50:.2f} ms, p99 {p99:.2f} ms "
        f"(max {latencies[-1]:.2f} ms; {n} jobs one at a time; TaskClaimed.at - TaskSubmitted.at)",
        flush=True,
    )


def _with(args: argparse.Namespace, **changes: object) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **changes})


def run(url: str, args: argparse.Namespace) -> None:
    probe = redis.Redis.from_url(url)
    info = probe.info("server")
    config = {
        k: v for name in ("appendonly", "appendfsync") for k, v in probe.config_get(name).items()
    }
    probe.close()
    from tilebox_core.execution.worker import TaskRunner

    default_prefetch = TaskRunner.__init__.__kwdefaults__["prefetch"]
    print(
        f"server: {info.get('server_name', 'redis')} {info.get('valkey_version') or info['redis_version']}"
        f" at {url}; appendonly={config.get('appendonly', '?')} appendfsync={config.get('appendfsync', '?')}"
    )
    print(
        f"runners: prefetch={args.prefetch or f'{default_prefetch} (default)'} "
        f"concurrency={args.concurrency}; {os.cpu_count()} CPUs",
        flush=True,
    )
    run_id = uuid.uuid4().hex[:8]
    counts = [int(c) for c in args.runners.split(",")]
    only = set(args.only.split(","))
    if "fanout" in only:
        for runners in counts:
            bench_fanout(url, run_id, args, runners)
    if "single" in only:
        for runners in counts:
            bench_single_jobs(url, run_id, args, runners)
    if "latency" in only and args.latency_jobs:
        bench_latency(url, run_id, args)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == SERVE:
        serve_runner(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == RECEIVE:
        serve_receiver()
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_arguments(parser)
    parser.add_argument(
        "--tasks",
        type=int,
        default=20_000,
        help="subtasks of the fan-out job, and single-task jobs",
    )
    parser.add_argument(
        "--latency-jobs", type=int, default=500, help="jobs timed one at a time (0: skip)"
    )
    parser.add_argument(
        "--runners", default="1,2", help="runner process counts to measure, e.g. 1,2"
    )
    parser.add_argument(
        "--prefetch", type=int, default=0, help="runner prefetch (0: the runner's default)"
    )
    parser.add_argument(
        "--submit",
        choices=["bulk", "one"],
        default="bulk",
        help="single-task jobs: one jobs().submit_many call, or one submit() per job",
    )
    parser.add_argument(
        "--concurrency", type=int, default=1, help="worker threads per runner process"
    )
    parser.add_argument(
        "--timeout", type=float, default=600, help="give up on a measurement after this many s"
    )
    parser.add_argument(
        "--only", default="fanout,single,latency", help="measurements to run, e.g. fanout,latency"
    )
    parser.add_argument(
        "--profile", metavar="DIR", help="cProfile the runner processes into DIR/*.prof"
    )
    parser.add_argument(
        "--trace", action="store_true",
        help="runners export a span per task by OTLP/HTTP (OTEL_EXPORTER_OTLP_ENDPOINT) to a "
        "receiver process of this script's, which counts the spans after each measurement",
    )  # fmt: skip
    args = parser.parse_args()
    if args.tasks < 1 or args.latency_jobs < 0 or args.prefetch < 0 or args.concurrency < 1:
        parser.error("counts must be positive")
    try:
        if not all(int(c) > 0 for c in args.runners.split(",")):
            raise ValueError
    except ValueError:
        parser.error("--runners takes positive counts separated by commas, e.g. 1,2")
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    configure_logging("warning")
    with server_url(args.backend, args.url) as url, receiving(args.trace) as receiver:
        args.receiver = receiver
        run(url, args)


if __name__ == "__main__":
    main()
