"""``RuntimeSettings``: what one runtime process serves and how, as the release runner passes it in
the child's environment (the contract is documented in ``tilebox_runner.runtime``).

The supervisor writes them with ``environment()`` and the runtime reads them once with
``from_env()``, so the variable names and their formats are written in this one place.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec

from tilebox_core.execution.worker import DEFAULT_LEASE
from tilebox_core.settings import Environment, Settings, choice, flag, seconds, whole

LOG_LEVELS = ("debug", "info", "warning", "error")
DRAIN_SECONDS = 300.0
"""How long a draining runtime may finish its in-flight tasks before it exits regardless (their
leases then expire and other runners run them again)."""
LOG_FORMATS = ("console", "json")
# prometheus-client's own variable: it must be set in a process before the library is imported.
METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"


class RuntimeSettings(msgspec.Struct, frozen=True, kw_only=True):
    core: Settings  # where the state lives; ``core.cluster`` is the cluster served
    runner_id: str | None = None  # None: one made from host and pid
    release_id: str | None = None  # recorded in every TaskClaimed
    concurrency: int = 1
    lease_seconds: float = DEFAULT_LEASE
    until_idle: bool = False  # exit once nothing is left (--stop-when-idling)
    supervisor_pid: int | None = None  # drain and exit when that process is gone
    drain_seconds: float = DRAIN_SECONDS  # an orphaned runtime's drain, at most
    log_level: str = "info"
    log_format: str = "console"
    discover: bool = False  # a build's runtime check: print the tasks and exit
    # Where this runtime writes its Prometheus metrics (prometheus-client's multiprocess mode,
    # which reads the same variable when it is imported); None: it counts nothing.
    metrics_dir: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RuntimeSettings:
        environ = os.environ if environ is None else environ
        env = Environment(environ)
        return cls(
            core=Settings.from_env(environ),
            runner_id=env.get("TILEBOX_RUNNER_ID"),
            release_id=env.get("TILEBOX_RELEASE_ID"),
            concurrency=env.parse("TILEBOX_CONCURRENCY", whole(1), 1),
            lease_seconds=env.parse("TILEBOX_LEASE_SECONDS", seconds, DEFAULT_LEASE),
            until_idle=env.parse("TILEBOX_UNTIL_IDLE", flag, False),
            supervisor_pid=env.parse("TILEBOX_SUPERVISOR_PID", whole(1), None),
            drain_seconds=env.parse("TILEBOX_DRAIN_SECONDS", seconds, DRAIN_SECONDS),
            log_level=env.parse("TILEBOX_LOG_LEVEL", choice(LOG_LEVELS), "info"),
            log_format=env.parse("TILEBOX_LOG_FORMAT", choice(LOG_FORMATS), "console"),
            discover=env.parse("TILEBOX_DISCOVER", flag, False),
            metrics_dir=env.parse(METRICS_DIR, Path, None),
        )

    def environment(self) -> dict[str, str]:
        """The variables that make ``from_env`` in the runtime process give these settings."""
        env = {
            **self.core.environment(),
            "TILEBOX_CONCURRENCY": str(self.concurrency),
            "TILEBOX_LEASE_SECONDS": repr(self.lease_seconds),
            "TILEBOX_UNTIL_IDLE": "1" if self.until_idle else "0",
            "TILEBOX_DRAIN_SECONDS": repr(self.drain_seconds),
            "TILEBOX_LOG_LEVEL": self.log_level,
            "TILEBOX_LOG_FORMAT": self.log_format,
            "TILEBOX_DISCOVER": "1" if self.discover else "0",
        }
        for name, value in (("TILEBOX_RUNNER_ID", self.runner_id),
                            ("TILEBOX_RELEASE_ID", self.release_id),
                            ("TILEBOX_SUPERVISOR_PID", self.supervisor_pid),
                            (METRICS_DIR, self.metrics_dir)):  # fmt: skip
            if value is not None:
                env[name] = str(value)
        return env
