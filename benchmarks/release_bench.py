"""Release runner benchmark: deploy-to-first-claim latency and the supervisor's memory.

    python benchmarks/release_bench.py [--backend valkey|redis] [--url URL] [--rounds N]

Starts a throwaway server, scaffolds and publishes workflow releases, starts one
`tilebox runner start` process, then prints:

- deploy -> first claim: a job is queued for a task nothing serves; the clock starts when the
  deploy call returns and stops at the `at` of the job's TaskClaimed event (written by the runtime
  process on the same machine). The artifact is already in the runner's cache (it was loaded once
  before), so this measures the watch, the runtime process start and the claim.
- redeploy -> first claim: the same with another release of the workflow replacing the deployed one.
- resident memory (VmRSS) of the supervisor process alone, and with its runtime processes, with 1
  and with 10 releases loaded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.servers import add_server_arguments, server_url
from tilebox_core import Client
from tilebox_core.build.config import load_config
from tilebox_core.build.release import build_release
from tilebox_core.build.scaffold import init_project
from tilebox_core.domain.events import TaskClaimed
from tilebox_core.logs import configure_logging
from tilebox_core.redis.taskstore import TASKS

TILEBOX = str(Path(sys.executable).parent / "tilebox")


def publish(client: Client, root: Path, name: str, variant: str = "") -> str:
    project = root / f"{name}{variant}"
    init_project(project, name)
    if variant:  # a compatible update: every task one minor version up
        module = next(project.glob("*/runner.py"))
        module.write_text(module.read_text().replace('"v1.0"', '"v1.1"'))
    built = build_release(load_config(project / "tilebox.workflow.toml"))
    if name not in {w.slug for w in client.workflows().all()}:
        client.workflows().create(name)
    return (
        client.workflows()
        .publish_release(
            built.workflow, built.artifact_path.read_bytes(), built.tasks, runner=built.runner
        )
        .release.id
    )


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def wait_for(condition, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.005)


def first_claim(client: Client, job_id: str) -> dt.datetime | None:
    for stored in client.store.replay(TASKS):
        event = stored.event
        if isinstance(event, TaskClaimed) and event.job_id == job_id:
            return event.at
    return None


def claim_latency(client: Client, deploy, task: str, version: str = "v1.0") -> float:  # type: ignore[no-untyped-def]
    job = client.jobs().submit_by_name("bench", task, version, '{"name": "bench"}')
    deploy()
    deployed_at = dt.datetime.now(dt.UTC)
    wait_for(lambda: first_claim(client, job.id) is not None)
    claimed = first_claim(client, job.id)
    assert claimed is not None
    return (claimed - deployed_at).total_seconds() * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_server_arguments(parser)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    configure_logging("warning")
    with server_url(args.backend, args.url) as url:
        run(url, args.rounds)


def run(url: str, rounds: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="tilebox-release-bench-"))
    team = f"bench-{os.getpid()}"
    runner = None
    try:
        client = Client(url, team=team)
        releases = [publish(client, work, f"wf-{i}") for i in range(10)]
        other = publish(client, work, "wf-0", variant="b")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TILEBOX_")}
        env.update(TILEBOX_REDIS_URL=url, TILEBOX_TEAM=team, TILEBOX_HOME=str(work / "home"),
                   TILEBOX_LOG_LEVEL="warning")  # fmt: skip
        runner = subprocess.Popen([TILEBOX, "runner", "start"], env=env)
        wait_for(lambda: client.clusters().runners("default"))
        workflows = client.workflows()

        # Warm the artifact cache of both releases once.
        for release, version in ((releases[0], "v1.0"), (other, "v1.1")):
            claim_latency(
                client, lambda r=release: workflows.deploy_release(r), "wf-0.Greet", version
            )
        latencies, switches = [], []
        for _ in range(rounds):
            workflows.undeploy_release("wf-0")
            wait_for(lambda: not children(runner.pid))  # the replaced runtime has drained
            latencies.append(claim_latency(
                client, lambda: workflows.deploy_release(releases[0]), "wf-0.Greet"))  # fmt: skip
            # Redeploy: a v1.1 task waits; only the replacing release (v1.1) can run it.
            switches.append(claim_latency(
                client, lambda: workflows.deploy_release(other), "wf-0.Greet", "v1.1"))  # fmt: skip
            workflows.deploy_release(releases[0])
        print(
            f"deploy -> first claim (cached artifact, {rounds} rounds): "
            f"p50 {statistics.median(latencies):.0f} ms, max {max(latencies):.0f} ms"
        )
        print(
            f"redeploy -> first claim on the new release: "
            f"p50 {statistics.median(switches):.0f} ms, max {max(switches):.0f} ms"
        )

        for count in (1, 10):
            for i, release in enumerate(releases):
                if i < count:
                    workflows.deploy_release(release)
                elif client.state().deployed_release("default", f"wf-{i}"):
                    workflows.undeploy_release(f"wf-{i}")
            wait_for(lambda count=count: sum(s.status == "running" for r in client.clusters().runners("default")
                                 for s in r.releases) == count, 120)  # fmt: skip
            time.sleep(1.0)  # let the runtime processes finish importing before reading RSS
            own = rss_kib(runner.pid)
            total = own + sum(rss_kib(c) for c in children(runner.pid))
            print(
                f"resident memory with {count:2d} release(s) loaded: supervisor "
                f"{own / 1024:.1f} MiB, with runtime processes {total / 1024:.1f} MiB"
            )
        client.close()
    finally:
        if runner is not None:
            runner.send_signal(signal.SIGTERM)
            runner.wait(60)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
