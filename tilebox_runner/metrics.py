"""The release runner's Prometheus endpoint (``tilebox runner start --metrics-port P``).

Tasks run in the runtime processes, so their counters are written there: in prometheus-client's
multiprocess mode, each process into memory-mapped files of its own in one directory that the
release runner owns (``PROMETHEUS_MULTIPROC_DIR`` in the runtimes' environment; emptied when the
runner starts, removed when it stops). A scrape sums the files of every runtime, those that have
exited included, so a counter never goes back when a runtime crashes or is replaced. This was
chosen over having the release runner collect counts from its runtimes (over a pipe, on each
scrape): a runtime killed with -9 keeps what it counted (its file outlives it), a busy runtime is
not asked anything, and no protocol of our own is needed.

What is not counted by a runtime is sampled by the release runner itself on each scrape: the
releases it has loaded, and the depth of every lane they read, asked of the server (XLEN, XINFO
GROUPS: pending entries; those waiting are the rest), so a dashboard sees the queue the server
holds.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from tilebox_core.domain.errors import TileboxError
from tilebox_core.domain.identifiers import parse_version
from tilebox_core.domain.projection import Release
from tilebox_core.redis.keys import parse_lane
from tilebox_core.redis.taskstore import LaneDepth

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

log = structlog.get_logger(__name__)

STORE_ERRORS = "tilebox_store_errors"
LANE_LABELS = ("cluster", "task", "version", "shard")


class ReleaseMetrics:
    """What a release runner reports, sampled on each scrape: ``releases()`` gives the loaded
    releases and their status, ``depths(lanes)`` the server's count of each lane."""

    def __init__(
        self,
        directory: Path,
        releases: Callable[[], list[tuple[Release, str]]],
        lanes: Callable[[list[Release]], list[str]],
        depths: Callable[[list[str]], list[LaneDepth]],
    ) -> None:
        self.directory = directory
        self._releases = releases
        self._lanes = lanes
        self._depths = depths
        self._lock = threading.Lock()
        self.store_errors = 0  # of the release runner's own calls (its runtimes count theirs)
        self._runtimes = MultiProcessCollector(None, path=str(directory))

    def store_error(self) -> None:
        with self._lock:
            self.store_errors += 1

    def collect(self) -> Iterator[Metric]:
        counted = False
        for family in self._runtimes.collect():
            if family.name == STORE_ERRORS:  # the runtimes' and the release runner's, as one
                family.samples = [s._replace(value=s.value + self.store_errors)
                                  for s in family.samples]  # fmt: skip
                counted = True
            yield family
        if not counted:
            yield CounterMetricFamily(STORE_ERRORS, _STORE_ERRORS_HELP, value=self.store_errors)
        loaded = self._releases()
        releases = GaugeMetricFamily(
            "tilebox_releases_loaded",
            "Releases deployed on the runner's cluster that it has loaded, by status "
            "(1 for each; loading, running, failed, idle).",
            labels=("release_id", "workflow", "status"),
        )
        for release, status in loaded:
            releases.add_metric([release.id, release.workflow, status], 1)
        yield releases
        yield from self._lane_families([release for release, _ in loaded])

    def _lane_families(self, releases: list[Release]) -> Iterable[Metric]:
        length = GaugeMetricFamily(
            "tilebox_lane_length", "Entries in a lane stream (XLEN).", labels=LANE_LABELS
        )
        pending = GaugeMetricFamily(
            "tilebox_lane_pending",
            "Lane entries delivered to a runner and not acknowledged yet (XPENDING).",
            labels=LANE_LABELS,
        )
        waiting = GaugeMetricFamily(
            "tilebox_lane_waiting",
            "Lane entries not delivered to any runner yet (XLEN less XPENDING: the task "
            "scripts delete each entry they acknowledge).",
            labels=LANE_LABELS,
        )
        lanes = self._lanes(releases)
        try:
            depths = self._depths(lanes) if lanes else []
        except TileboxError as exc:  # the scrape still gets the rest
            log.warning("cannot read lane depths", error=str(exc))
            self.store_error()
            depths = []
        for depth in depths:
            name = parse_lane(depth.lane)
            labels = [name.cluster, name.task, name.version, name.tag]
            length.add_metric(labels, depth.length)
            pending.add_metric(labels, depth.pending)
            waiting.add_metric(labels, depth.waiting)
        return [length, pending, waiting]


_STORE_ERRORS_HELP = "Store calls that failed for want of a server (and were retried)."


class MetricsServer:
    """The HTTP endpoint serving ``metrics`` on ``host:port`` in a thread, until ``close()``."""

    def __init__(self, metrics: ReleaseMetrics, host: str, port: int) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(metrics)
        try:
            self._server: WSGIServer
            self._server, self._thread = start_http_server(port, host, registry)
        except OSError as exc:
            raise TileboxError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror}; pick a free port "
                "with --metrics-port"
            ) from None
        self.port = self._server.server_port
        self.metrics = metrics

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        shutil.rmtree(self.metrics.directory, ignore_errors=True)


def metrics_directory(path: Path) -> Path:
    """``path`` emptied and created: the runtimes' metric files of an earlier run would be summed
    into this one's (prometheus-client: wipe the directory before the processes start)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def served_identifiers(releases: Iterable[Release]) -> list[tuple[str, int, int]]:
    """(name, major, minor) of every lane the runtimes of ``releases`` read: a release providing
    vX.Y serves vX.0 ... vX.Y (as ``serving_lanes``)."""
    served: dict[tuple[str, int, int], None] = {}
    for release in releases:
        for task in release.tasks:
            major, minor = parse_version(task.version)
            served.update(dict.fromkeys((task.name, major, m) for m in range(minor + 1)))
    return list(served)
