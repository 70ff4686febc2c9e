"""The runtime process: imports one release's runner object and executes its tasks.

A release runner (``tilebox runner start``) starts one or more of these per deployed release, with
the release's extracted artifact as working directory and first on ``sys.path``. Configuration comes
from the environment so that ``command = [...]`` releases can start the same way by calling
``serve(runner)`` from their own entry point (read once, by ``RuntimeSettings.from_env`` in
``tilebox_runner.settings``; a bad value stops the process with one line):

    TILEBOX_REDIS_URL, TILEBOX_TEAM, TILEBOX_PREFIX  where the state lives
    TILEBOX_HOME, TILEBOX_CONNECT_TIMEOUT             (see tilebox_core.settings)
    TILEBOX_CLUSTER, TILEBOX_RELEASE_ID               what to serve, recorded in every TaskClaimed
    TILEBOX_RUNNER_ID, TILEBOX_CONCURRENCY            identity and threads of this process
    TILEBOX_LEASE_SECONDS                             lease of a claimed task (default 30)
    TILEBOX_UNTIL_IDLE=1                              exit once nothing is left (--stop-when-idling)
    TILEBOX_SUPERVISOR_PID                            drain and exit when that process is gone
    TILEBOX_DRAIN_SECONDS                             ... within this long (default 300), then exit
    TILEBOX_LOG_LEVEL, TILEBOX_LOG_FORMAT             debug|info|warning|error, console|json
    TILEBOX_DISCOVER=1                                a build's runtime check: print the tasks, exit
    PROMETHEUS_MULTIPROC_DIR                          count Prometheus metrics into this directory

Exit codes: 0 after a drain or when idle, 3 when the runner object cannot be loaded, 4 when the
release runner is gone and the drain did not finish in time.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

import structlog

from tilebox_core.client import Client
from tilebox_core.domain.errors import TileboxError
from tilebox_core.execution.hooks import RunnerHooks
from tilebox_core.execution.registry import Runner
from tilebox_core.execution.worker import TaskRunner, freeze_heap, new_runner_id
from tilebox_core.logs import configure_logging

from .discover import emit_discovery, load_runner
from .settings import RuntimeSettings

LOAD_FAILED = 3
ORPHAN_TIMEOUT = 4  # orphaned, and its in-flight tasks did not finish in time

log = structlog.get_logger(__name__)


def serve(runner: Runner, settings: RuntimeSettings | None = None) -> None:
    """Run ``runner`` as a release's runtime process (or answer a build's discovery request);
    ``settings`` default to those of this process's environment."""
    settings = settings if settings is not None else RuntimeSettings.from_env()
    if settings.discover:
        emit_discovery(runner)
        return
    runner_id = settings.runner_id or new_runner_id()
    client = Client(settings=settings.core, retries=20, actor=f"runner:{runner_id}")
    task_runner = TaskRunner(
        client,
        settings.core.cluster,
        runner,
        concurrency=settings.concurrency,
        lease_seconds=settings.lease_seconds,
        runner_id=runner_id,
        release_id=settings.release_id,
        hooks=runtime_hooks(settings),
    )
    if settings.supervisor_pid is not None:
        _stop_when_orphaned(settings.supervisor_pid, task_runner.stop, settings.drain_seconds)
    freeze_heap()
    with client:
        if settings.until_idle:
            task_runner.run_all()
        else:
            task_runner.run_forever()


def runtime_hooks(settings: RuntimeSettings) -> RunnerHooks | None:
    """What observes this runtime's tasks: metrics when the release runner serves them."""
    if settings.metrics_dir is None:
        return None
    try:
        from tilebox_core.execution.metrics import TaskMetrics
    except ImportError as exc:  # a release environment without prometheus-client
        log.warning("metrics are not counted: prometheus-client cannot be imported here "
                    "(add it to the release's dependencies)", error=str(exc))  # fmt: skip
        return None
    return TaskMetrics()


def _stop_when_orphaned(
    supervisor_pid: int, stop: Callable[[], None], drain_seconds: float
) -> None:
    """Drain and exit if the supervisor dies (even by kill -9): a runtime must not outlive the
    release runner that decides which releases run. A task that does not finish within
    ``drain_seconds`` is abandoned (the process exits; the task's lease expires and another runner
    runs it), as the supervisor would have killed it. Polling the parent works on every POSIX
    system, unlike Linux's PR_SET_PDEATHSIG."""

    def watch() -> None:
        while os.getppid() == supervisor_pid:
            time.sleep(0.5)
        log.warning("release runner is gone; draining", supervisor_pid=supervisor_pid,
                    within_seconds=drain_seconds)  # fmt: skip
        stop()
        time.sleep(drain_seconds)
        log.error("drain did not finish in time; exiting", within_seconds=drain_seconds)
        os._exit(ORPHAN_TIMEOUT)  # no clean shutdown to wait for: its tasks are leased elsewhere

    threading.Thread(target=watch, name="tilebox-orphan-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """``python -m tilebox_runner.runtime module:object`` from the extracted artifact."""
    args = sys.argv[1:] if argv is None else argv
    try:
        settings = RuntimeSettings.from_env()
    except TileboxError as exc:
        print(f"runtime stopped: {exc}", file=sys.stderr)
        return 1
    configure_logging(settings.log_level, settings.log_format)
    artifact_dir = os.getcwd()
    if sys.path[0] != artifact_dir:
        sys.path.insert(0, artifact_dir)
    try:
        runner = load_runner(args[0], artifact_dir)
    except Exception as exc:
        print(f"cannot load the release's runner {args[0]!r}: {exc}", file=sys.stderr)
        return LOAD_FAILED
    try:
        serve(runner, settings)
    except TileboxError as exc:
        print(f"runtime stopped: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
