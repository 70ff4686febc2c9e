"""The observers a runner starts with: those it is given, and tracing when the settings ask."""

from __future__ import annotations

import structlog

from tilebox_core.settings import Settings

from .hooks import RunnerHooks, combined
from .tasklogs import LogHooks, TaskLogs

log = structlog.get_logger(__name__)


def runner_hooks(
    settings: Settings, runner_id: str, release_id: str | None, given: RunnerHooks | None,
    logs: TaskLogs | None = None,
) -> RunnerHooks:  # fmt: skip
    """The observers of a runner: ``given`` ones, the writer of its task ``logs``, and tracing
    when ``settings`` export spans (only then is OpenTelemetry imported)."""
    tracing: RunnerHooks | None = None
    if settings.otlp is not None:
        try:
            from .tracing import TraceHooks
        except ImportError as exc:
            log.warning("traces are not exported: the OpenTelemetry SDK cannot be imported "
                        "(pip install 'tilebox-releases[tracing]')", error=str(exc))  # fmt: skip
        else:
            tracing = TraceHooks(settings, runner_id, release_id)
    writer = LogHooks(logs) if logs is not None else None
    if tracing is None and given is None and writer is None:
        return RunnerHooks()
    return combined(tracing, given, writer)
