"""``ReleaseRunner``: what ``tilebox runner start`` runs.

It watches one cluster's deployments with a blocking read on the control log, loads each deployed
release (download, verify, extract into a cache keyed by digest) and starts runtime processes
(``tilebox_runner.runtime``) that import the release's runner object and claim only the tasks it
provides. A deploy, redeploy or undeploy switches without a restart: new runtimes start, replaced
ones get SIGTERM and finish their in-flight tasks. A release that fails to load or crashes is
reported and restarted with backoff; the other releases keep running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from tilebox_core import retries
from tilebox_core.archiver import Archiver
from tilebox_core.client import Client
from tilebox_core.domain.archive import INTERVAL_SECONDS
from tilebox_core.domain.control import require_cluster
from tilebox_core.domain.errors import StoreUnavailable, TileboxError
from tilebox_core.domain.ids import utcnow
from tilebox_core.domain.projection import Cluster, ControlState, Release
from tilebox_core.domain.runners import HEARTBEAT_SECONDS, ReleaseStatus, RunnerInfo
from tilebox_core.execution.worker import DEFAULT_LEASE, install_signal_handlers, new_runner_id
from tilebox_core.sweep import SWEEP_SECONDS, Sweeper

from .environment import MODES, python_for
from .metrics import MetricsServer, ReleaseMetrics, metrics_directory, served_identifiers
from .pruning import DEFAULT_CACHE_MAX_BYTES, prune, touch
from .release_cache import ReleaseCache
from .runtime import LOAD_FAILED
from .settings import DRAIN_SECONDS, METRICS_DIR, RuntimeSettings

log = structlog.get_logger(__name__)

# Backoff (seconds: first wait up to ``base``, doubling to ``cap``) of a release that failed, before
# it is started again, and of the watch loop while Redis is unavailable (it retries for as long as
# the outage lasts: its runtimes ride it out themselves, and are restarted if they give up).
RESTART_BASE, RESTART_CAP = 2.0, 60.0
UNAVAILABLE_BASE, UNAVAILABLE_CAP = 0.05, 5.0


@dataclass
class Runtime:
    """The runtime processes of one deployed release."""

    release: Release
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    status: str = "loading"
    error: str = ""
    restarts: int = 0
    retry_at: float = 0.0
    idle: bool = False  # exited after finding nothing to do (--stop-when-idling)
    paths: tuple[Path, ...] = ()  # its release directory and environment (kept from pruning)

    def report(self) -> ReleaseStatus:
        return ReleaseStatus(self.release.id, self.release.workflow, self.status, self.error,
                             self.restarts)  # fmt: skip


class ReleaseRunner:
    def __init__(
        self,
        client: Client,
        cluster: str | None = None,
        processes: int = 1,
        *,
        home: Path | None = None,
        stop_when_idle: bool = False,
        runner_id: str | None = None,
        block_ms: int = 500,
        environment: str = "inherit",
        lease_seconds: float | None = None,
        drain_seconds: float = DRAIN_SECONDS,
        log_level: str = "info",
        log_format: str = "console",
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES,
        sweep_seconds: float = SWEEP_SECONDS,
        archive: bool = True,
        archive_interval: float = INTERVAL_SECONDS,
    ) -> None:
        if environment not in MODES:
            raise TileboxError(f"unknown runner environment {environment!r}; use one of {MODES}")
        if processes < 1:
            raise TileboxError("the number of runtime processes per release (-n) must be >= 1")
        self.client = client
        self.cluster = cluster or client.settings.cluster
        self.processes = processes
        self.home = home or client.settings.home
        # per team: another team's code never runs from this team's cache (see release_cache)
        self.cache = ReleaseCache(self.home / "releases", client.prefix, client.team)
        self.envs = self.home / "envs" / client.prefix / client.team
        self.id = runner_id or new_runner_id()
        self.logs = self.home / "logs" / self.id
        self.stop_when_idle = stop_when_idle
        self.block_ms = block_ms
        self.environment = environment
        self.lease_seconds = DEFAULT_LEASE if lease_seconds is None else lease_seconds
        self.drain_seconds = drain_seconds
        self.log_level, self.log_format = log_level, log_format
        self.metrics_port, self.metrics_host = metrics_port, metrics_host
        self.metrics: ReleaseMetrics | None = None  # while the metrics are served
        # The team's archiver, in the background: only the runner holding its lease works
        # (``tilebox_core.archiver``); off with ``tilebox runner start --no-archive``.
        self.archive, self.archive_interval = archive, archive_interval
        self._archiver: threading.Thread | None = None
        self.registry = client.runners
        self.runtimes: dict[str, Runtime] = {}
        self.draining: list[subprocess.Popen[bytes]] = []
        self._draining_paths: dict[int, tuple[Path, ...]] = {}  # pid -> what it runs from
        self.cache_max_bytes = cache_max_bytes
        # the sweep of the team's expired jobs, by one runner of the team at a time
        self.sweeper = Sweeper(client, self.id, sweep_seconds)
        self.started_at = utcnow()
        self._stopping = threading.Event()
        self._next_heartbeat = 0.0
        self._serving: Cluster | None = None  # the cluster as it was when this runner started
        self.failure: str | None = None  # why the runner stopped on its own, if it did
        self.log = log.bind(runner_id=self.id, cluster=self.cluster)

    def stop(self) -> None:
        self._stopping.set()

    # --- main loop --------------------------------------------------------------------------------

    def run(self) -> None:
        require_cluster(self.client.state(), self.cluster)
        server = self._serve_metrics() if self.metrics_port is not None else None
        restore = install_signal_handlers(self.stop)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.log.info("release runner started", processes=self.processes)
        if self.archive:
            self._archiver = threading.Thread(
                target=self._archive_logs, name="tilebox-archiver", daemon=True
            )
            self._archiver.start()
        failures = 0  # consecutive rounds that found Redis unavailable
        try:
            while not self._stopping.is_set():
                before = [r.report() for r in self.runtimes.values()]
                self._supervise()
                try:
                    self._reconcile()
                    # Publish a change at once, so `cluster get` and `job get` see it without delay.
                    self._heartbeat(force=before != [r.report() for r in self.runtimes.values()])
                    self.sweeper.tick()
                    if self.stop_when_idle and self._all_idle():
                        self.log.info("nothing left to run; stopping")
                        break
                    self.client.watch(self.block_ms)
                except StoreUnavailable as exc:
                    # A restarting server: the runtimes keep running (and retry on their own);
                    # the deployments are read again once it answers.
                    failures += 1
                    if self.metrics is not None:
                        self.metrics.store_error()
                    wait = retries.delay(failures, base=UNAVAILABLE_BASE, cap=UNAVAILABLE_CAP)
                    self.log.warning("store unavailable, retrying", error=str(exc),
                                     retry_in=round(wait, 2))  # fmt: skip
                    self._stopping.wait(wait)
                else:
                    failures = 0
        finally:
            self._shutdown()
            restore()
            if server is not None:
                server.close()
                self.metrics = None

    def _archive_logs(self) -> None:
        """The archiver's loop, on a session of its own (its own connection), until the runner
        stops; it gives its lease up then, so another runner takes over at once. Its first pass
        waits an interval: a runner starts serving tasks first (and one that stops when idle
        soon never archives)."""
        if self._stopping.wait(self.archive_interval):
            return
        try:
            with Client(settings=self.client.settings) as session:
                Archiver(session, holder=self.id, sweep=False).run(
                    self._stopping, self.archive_interval
                )
        except TileboxError as exc:  # e.g. the archive's URL is wrong: the runner runs on
            self.log.error("archiver stopped", error=str(exc))

    def _serve_metrics(self) -> MetricsServer:
        """Serve Prometheus metrics on the metrics port; the runtimes count into the directory."""
        assert self.metrics_port is not None
        store = self.client.tasks
        self.metrics = ReleaseMetrics(
            metrics_directory(self.home / "metrics" / self.id),
            releases=lambda: [(r.release, r.status) for r in list(self.runtimes.values())],
            lanes=lambda releases: store.serving_lanes(self.cluster, served_identifiers(releases)),
            depths=store.lane_depths,
        )
        server = MetricsServer(self.metrics, self.metrics_host, self.metrics_port)
        self.log.info("serving metrics", url=f"http://{self.metrics_host}:{server.port}/metrics")
        return server

    def _reconcile(self) -> None:
        state = self.client.state()
        if not self._still_serving(state):
            return
        wanted = {
            d.release_id: state.releases[d.release_id]
            for d in state.deployments.get(self.cluster, {}).values()
        }
        for release_id in list(self.runtimes):
            if release_id not in wanted:
                self._retire(self.runtimes.pop(release_id))
        for release_id, release in wanted.items():
            if release_id not in self.runtimes:
                self.runtimes[release_id] = Runtime(release)
                self.log.info("release deployed", release_id=release_id, workflow=release.workflow)
        for runtime in self.runtimes.values():
            if not runtime.processes and not runtime.idle and time.monotonic() >= runtime.retry_at:
                self._start(runtime)

    def _still_serving(self, state: ControlState) -> bool:
        """Whether the cluster this runner started on still exists. Deleted (or deleted and
        created again under its slug: another cluster), the runner stops, and ``failure`` says
        why, so that ``tilebox runner start`` exits non-zero instead of serving a stranger."""
        cluster = state.clusters.get(self.cluster)
        if self._serving is None:
            self._serving = cluster
        if cluster is not None and self._serving is not None and cluster.id == self._serving.id:
            return True
        again = " and created again (a new cluster)" if cluster is not None else ""
        self.failure = (
            f"cluster {self.cluster!r} was deleted{again} while this runner served it; "
            "the runner stopped: start one for a cluster that exists"
        )
        self.log.error("cluster deleted; stopping", recreated=cluster is not None)
        self.stop()
        return False

    def _start(self, runtime: Runtime) -> None:
        release = runtime.release
        try:
            directory = self.cache.prepare(self.client.store, release)
            python = python_for(directory, self.envs, self.environment)
        except StoreUnavailable:
            raise  # not the release's fault: loaded once Redis answers again
        except TileboxError as exc:
            self._failed(runtime, f"cannot load release: {exc}")
            return
        env = Path(python).parent.parent
        runtime.paths = (directory, env) if env.parent == self.envs else (directory,)
        touch(runtime.paths)
        self.prune()
        runtime.processes = [
            self._spawn(release, directory, python, i) for i in range(self.processes)
        ]
        runtime.status, runtime.error = "running", runtime.error if runtime.restarts else ""
        self.log.info("release started", release_id=release.id, processes=len(runtime.processes))

    def _spawn(
        self, release: Release, directory: Path, python: str, index: int
    ) -> subprocess.Popen[bytes]:
        settings = RuntimeSettings(
            core=self.client.settings.override(cluster=self.cluster, home=self.home),
            runner_id=f"{self.id}/{release.id[-8:]}/{index}",
            release_id=release.id,
            lease_seconds=self.lease_seconds,
            until_idle=self.stop_when_idle,
            supervisor_pid=os.getpid(),
            drain_seconds=self.drain_seconds,
            log_level=self.log_level,
            log_format=self.log_format,
            metrics_dir=self.metrics.directory if self.metrics is not None else None,
        )
        # No bytecode written into the release's directory: it is compared with the artifact
        # before it is reused, and a __pycache__ there would count as a change.
        env = dict(os.environ)
        env.pop(METRICS_DIR, None)  # counted only when this runner serves metrics
        env.update(settings.environment(), PYTHONDONTWRITEBYTECODE="1")
        if release.runner is not None:
            argv = [python, "-m", "tilebox_runner.runtime", release.runner]
        else:
            assert release.command is not None
            argv = [python if w in ("python", "python3") and i == 0 else w
                    for i, w in enumerate(release.command)]  # fmt: skip
            env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(directory), env.get("PYTHONPATH")])
            )
        logfile = open(self._logfile(release, index), "ab")  # noqa: SIM115 - owned by the child
        try:
            return subprocess.Popen(argv, cwd=directory, env=env, stdout=logfile,
                                    stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        finally:
            logfile.close()

    def _supervise(self) -> None:
        for runtime in self.runtimes.values():
            if not runtime.processes or any(p.poll() is None for p in runtime.processes):
                continue
            codes = [p.returncode for p in runtime.processes]
            runtime.processes = []
            if all(code == 0 for code in codes):
                runtime.idle = self.stop_when_idle
                runtime.status = "idle" if runtime.idle else runtime.status
                continue
            reason = "failed to import its runner" if LOAD_FAILED in codes else f"exited {codes}"
            self._failed(runtime, f"runtime {reason}: {self._last_error(runtime.release)}")
        self.draining = [p for p in self.draining if p.poll() is None]
        alive = {p.pid for p in self.draining}
        self._draining_paths = {k: v for k, v in self._draining_paths.items() if k in alive}

    def _failed(self, runtime: Runtime, error: str) -> None:
        runtime.status, runtime.error = "failed", error
        runtime.restarts += 1
        delay = retries.delay(runtime.restarts, base=RESTART_BASE, cap=RESTART_CAP)
        runtime.retry_at = time.monotonic() + delay
        if self.stop_when_idle and "cannot load release" in error:
            runtime.idle = True  # nothing will change without a redeploy
        self.log.error("release failed", release_id=runtime.release.id, error=error,
                       retry_in=round(delay, 2))  # fmt: skip

    def _retire(self, runtime: Runtime, why: str = "release undeployed") -> None:
        """Stop claiming for a release (no longer deployed, or the runner stops); in-flight tasks
        finish."""
        self.log.info("draining release", release_id=runtime.release.id, reason=why)
        for process in runtime.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                self.draining.append(process)
                self._draining_paths[process.pid] = runtime.paths

    def in_use(self) -> set[Path]:
        """The release directories and environments of this runner's releases and drains."""
        used = {p for r in self.runtimes.values() for p in r.paths}
        return used | {p for paths in self._draining_paths.values() for p in paths}

    def prune(self) -> list[Path]:
        """Prune the team's release caches and environments to ``cache_max_bytes``, least
        recently used first, keeping what runs."""
        return prune([self.cache.root, self.envs], self.cache_max_bytes, self.in_use())

    def _all_idle(self) -> bool:
        return all(r.idle for r in self.runtimes.values()) and not self.draining

    def _heartbeat(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_heartbeat:
            return
        self._next_heartbeat = now + HEARTBEAT_SECONDS
        touch(self.in_use())  # used now: kept from any runner's pruning (see pruning.py)
        info = RunnerInfo(
            id=self.id, host=socket.gethostname(), pid=os.getpid(), cluster=self.cluster,
            started_at=self.started_at, last_heartbeat=utcnow(),
            releases=[r.report() for r in self.runtimes.values()],
        )  # fmt: skip
        try:
            self.registry.heartbeat(info)
        except TileboxError as exc:
            self.log.warning("heartbeat failed", error=str(exc))

    def _shutdown(self) -> None:
        """SIGTERM every runtime and wait for the drains (bounded), then deregister."""
        for runtime in self.runtimes.values():
            self._retire(runtime, "runner stopping")
        deadline = time.monotonic() + self.drain_seconds
        for process in self.draining:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with contextlib.suppress(TileboxError):
            self.registry.remove(self.cluster, self.id)
        self._stopping.set()  # the archiver's loop too
        if self._archiver is not None:
            self._archiver.join(30)
        self.log.info("release runner stopped")

    # --- logs -------------------------------------------------------------------------------------

    def _logfile(self, release: Release, index: int) -> Path:
        return self.logs / f"{release.id}-{index}.log"

    def _last_error(self, release: Release) -> str:
        lines: list[str] = []
        for index in range(self.processes):
            try:
                text = self._logfile(release, index).read_text(errors="replace")
            except OSError:
                continue
            lines += [line for line in text.splitlines() if line.strip()]
        return lines[-1][-500:] if lines else "no output"
