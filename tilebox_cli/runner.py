"""``tilebox runner start``: a release runner for one cluster."""

from __future__ import annotations

import click

from tilebox_core import Conflict
from tilebox_core.logs import configure_logging
from tilebox_core.sweep import SWEEP_SECONDS
from tilebox_runner.environment import MODES
from tilebox_runner.pruning import DEFAULT_CACHE_MAX_BYTES, parse_size
from tilebox_runner.supervisor import ReleaseRunner

from .context import AppContext, json_option, pass_app
from .output import emit_json


@click.group("runner")
def runner() -> None:
    """Release runners: execute the releases deployed on a cluster."""


@runner.command("start")
@click.option("--cluster", help="Cluster to serve (default: TILEBOX_CLUSTER, else 'default').")
@click.option("-n", "processes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runtime processes per deployed release.")  # fmt: skip
@click.option("--stop-when-idling", is_flag=True, help="Exit once no task is left to run.")
@click.option("--env", "environment", type=click.Choice(MODES), default="inherit", show_default=True,
              help="'uv': a cached virtual environment per release lock (uv.lock/pyproject.toml).")  # fmt: skip
@click.option("--lease", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds a claimed task stays leased without a heartbeat before others take it.")  # fmt: skip
@click.option("--drain-timeout", type=click.FloatRange(min=0.1), default=300.0, show_default=True,
              help="Seconds in-flight tasks may take to finish on SIGTERM (or when this runner "
                   "dies) before their processes are stopped; the tasks then run elsewhere.")  # fmt: skip
@click.option("--metrics-port", type=click.IntRange(min=0, max=65535), metavar="PORT",
              help="Serve Prometheus metrics on this port at /metrics (0: a free one, logged).")  # fmt: skip
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              help="Address the metrics are served on (0.0.0.0: every interface).")  # fmt: skip
@click.option("--cache-max-bytes", default=str(DEFAULT_CACHE_MAX_BYTES), metavar="SIZE",
              show_default="10GiB",
              help="Bound of the team's release caches and --env uv environments on this host "
                   "(e.g. 2GiB, 500MB): the least recently used are removed, never one in use.")  # fmt: skip
@click.option("--sweep-interval", type=click.FloatRange(min=0), default=SWEEP_SECONDS,
              show_default=True, metavar="SECONDS",
              help="How often the team's expired jobs are removed (by one runner of the team "
                   "at a time); 0: never by this runner.")  # fmt: skip
@click.option("--archive/--no-archive", default=True, show_default=True,
              help="Archive the team's event logs in the background (one runner of the team "
                   "at a time does; see tilebox archive).")  # fmt: skip
@json_option
@pass_app
def start(
    app: AppContext, cluster: str | None, processes: int, stop_when_idling: bool, environment: str,
    lease: float, drain_timeout: float, metrics_port: int | None, metrics_host: str,
    cache_max_bytes: str, sweep_interval: float, archive: bool,
) -> None:  # fmt: skip
    """Watch the cluster's deployments and run their tasks until SIGTERM (which drains)."""
    level = app.log_level or "info"
    log_format = "json" if app.json else app.log_format  # --json: machine-readable logs too
    configure_logging(level, log_format)
    release_runner = ReleaseRunner(
        app.client, cluster, processes, stop_when_idle=stop_when_idling, environment=environment,
        lease_seconds=lease, drain_seconds=drain_timeout, log_level=level, log_format=log_format,
        metrics_port=metrics_port, metrics_host=metrics_host,
        cache_max_bytes=parse_size(cache_max_bytes), sweep_seconds=sweep_interval, archive=archive,
    )  # fmt: skip
    app.client.clusters().find(release_runner.cluster)  # an unknown cluster fails before anything
    if app.json:
        emit_json({"runner_id": release_runner.id, "cluster": release_runner.cluster})
    else:
        click.echo(
            f"release runner {release_runner.id} serving cluster {release_runner.cluster}", err=True
        )
    release_runner.run()
    if release_runner.failure is not None:  # it stopped on its own: its cluster was deleted
        raise Conflict(release_runner.failure)


def register(cli: click.Group) -> None:
    cli.add_command(runner)
