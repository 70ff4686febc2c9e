"""The runtime process: imports one release's runner object and executes its tasks.

A release runner (``tilebox runner start``) starts one or more of these per deployed release, with
the release's extracted artifact as working directory and first on ``sys.path``. Configuration comes
from the environment so that ``command = [...]`` releases can start the same way by calling
``serve(runner)`` from their own entry point:

    TILEBOX_REDIS_URL, TILEBOX_TEAM, TILEBOX_PREFIX  where the state lives
    TILEBOX_CLUSTER, TILEBOX_RELEASE_ID               what to serve, recorded in every TaskClaimed
    TILEBOX_RUNNER_ID, TILEBOX_CONCURRENCY            identity and threads of this process
    TILEBOX_LEASE_SECONDS                             lease of a claimed task (default 30)
    TILEBOX_UNTIL_IDLE=1                              exit once nothing is left (--stop-when-idling)
    TILEBOX_SUPERVISOR_PID                            drain and exit when that process is gone

Exit codes: 0 after a drain or when idle, 3 when the runner object cannot be loaded.
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
from tilebox_core.execution.registry import Runner
from tilebox_core.execution.worker import DEFAULT_LEASE, TaskRunner, freeze_heap, new_runner_id
from tilebox_core.logs import configure_logging

from .discover import emit_discovery, load_runner

LOAD_FAILED = 3

log = structlog.get_logger(__name__)


def serve(runner: Runner) -> None:
    """Run ``runner`` as a release's runtime process (or answer a build's discovery request)."""
    if os.environ.get("TILEBOX_DISCOVER"):
        emit_discovery(runner)
        return
    env = os.environ
    client = Client(team=env.get("TILEBOX_TEAM"), retries=20,
                    actor=f"runner:{env.get('TILEBOX_RUNNER_ID', 'runtime')}")  # fmt: skip
    task_runner = TaskRunner(
        client,
        env.get("TILEBOX_CLUSTER"),
        runner,
        concurrency=int(env.get("TILEBOX_CONCURRENCY", "1")),
        lease_seconds=float(env.get("TILEBOX_LEASE_SECONDS", DEFAULT_LEASE)),
        runner_id=env.get("TILEBOX_RUNNER_ID") or new_runner_id(),
        release_id=env.get("TILEBOX_RELEASE_ID") or None,
    )
    supervisor = env.get("TILEBOX_SUPERVISOR_PID")
    if supervisor:
        _stop_when_orphaned(int(supervisor), task_runner.stop)
    freeze_heap()
    with client:
        if env.get("TILEBOX_UNTIL_IDLE") == "1":
            task_runner.run_all()
        else:
            task_runner.run_forever()


def _stop_when_orphaned(supervisor_pid: int, stop: Callable[[], None]) -> None:
    """Drain and exit if the supervisor dies (even by kill -9): a runtime must not outlive the
    release runner that decides which releases run. Polling the parent works on every POSIX system,
    unlike Linux's PR_SET_PDEATHSIG."""

    def watch() -> None:
        while os.getppid() == supervisor_pid:
            time.sleep(0.5)
        log.warning("release runner is gone; draining", supervisor_pid=supervisor_pid)
        stop()

    threading.Thread(target=watch, name="tilebox-orphan-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """``python -m tilebox_runner.runtime module:object`` from the extracted artifact."""
    args = sys.argv[1:] if argv is None else argv
    configure_logging(os.environ.get("TILEBOX_LOG_LEVEL", "info"),
                      os.environ.get("TILEBOX_LOG_FORMAT", "console"))  # fmt: skip
    artifact_dir = os.getcwd()
    if sys.path[0] != artifact_dir:
        sys.path.insert(0, artifact_dir)
    try:
        runner = load_runner(args[0], artifact_dir)
    except Exception as exc:
        print(f"cannot load the release's runner {args[0]!r}: {exc}", file=sys.stderr)
        return LOAD_FAILED
    try:
        serve(runner)
    except TileboxError as exc:
        print(f"runtime stopped: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
