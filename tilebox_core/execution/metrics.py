"""``TaskMetrics``: Prometheus counters of what a runner executes (prometheus-client).

In a release's runtime process they are written in prometheus-client's multiprocess mode (the
release runner sets ``PROMETHEUS_MULTIPROC_DIR`` in the runtime's environment, see
``tilebox_runner.metrics``): every process writes its own memory-mapped file, and the release
runner's scrape sums them. Elsewhere (a direct runner in a user's process) they are ordinary
metrics of prometheus-client's default registry, for the user's own exporter.
"""

from __future__ import annotations

import threading
import time
from typing import ClassVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from tilebox_core.domain.tasks import ClaimedTask, Finish, Outcome

from .hooks import Execute, RunnerHooks

# Seconds: from no-op tasks to hour-long ones (Prometheus' defaults stop at 10 s).
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
                    900.0, 3600.0)  # fmt: skip
LABELS = ("task", "version")  # a task identifier: name and vMAJOR.MINOR (of the lane served)
FAILED = frozenset({Outcome.RETRY, Outcome.FAILED, Outcome.FAILED_OPTIONAL})
_Family = tuple[Counter, Counter, Counter, Histogram, Counter, Counter]


class TaskMetrics(RunnerHooks):
    """Tasks claimed, completed and failed by identifier, their durations, lease takeovers and
    store errors of one process's runners. Metrics are registered once per registry (a process
    may run several runners: they share them)."""

    wraps_execution = True
    _by_registry: ClassVar[dict[int, _Family]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        with self._lock:
            metrics = self._by_registry.get(id(registry))
            if metrics is None:
                metrics = self._by_registry[id(registry)] = _metrics(registry)
        (self.claimed, self.completed, self.failed, self.duration, self.takeovers,
         self.store_errors) = metrics  # fmt: skip
        # label children by identifier: labels() costs about a microsecond, a no-op task ~50
        self._children: dict[tuple[str, str], tuple[Counter, Counter, Counter, Histogram]] = {}

    def _of(self, task: ClaimedTask) -> tuple[Counter, Counter, Counter, Histogram]:
        key = (task.name, task.version)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.claimed.labels(*key), self.completed.labels(*key),
                self.failed.labels(*key), self.duration.labels(*key),
            )  # fmt: skip
        return children

    def execute(self, task: ClaimedTask, run: Execute) -> Finish:
        claimed, completed, failed, duration = self._of(task)
        claimed.inc()
        started = time.perf_counter()
        finish = run(task)
        duration.observe(time.perf_counter() - started)
        if finish.outcome is Outcome.COMPLETED:
            completed.inc()
        elif finish.outcome in FAILED:
            failed.inc()
        return finish

    def took_over(self, count: int) -> None:
        self.takeovers.inc(count)

    def store_error(self) -> None:
        self.store_errors.inc()


def _metrics(registry: CollectorRegistry) -> _Family:
    return (
        Counter("tilebox_tasks_claimed", "Tasks this runner started to execute.", LABELS,
                registry=registry),
        Counter("tilebox_tasks_completed", "Task executions that completed.", LABELS,
                registry=registry),
        Counter("tilebox_tasks_failed", "Task executions that failed (retried or not).", LABELS,
                registry=registry),
        Histogram("tilebox_task_duration_seconds", "Seconds one task execution took.", LABELS,
                  buckets=DURATION_BUCKETS, registry=registry),
        Counter("tilebox_lease_takeovers", "Tasks taken over after another runner's lease "
                "expired.", registry=registry),
        Counter("tilebox_store_errors", "Store calls that failed for want of a server (and "
                "were retried).", registry=registry),
    )  # fmt: skip
