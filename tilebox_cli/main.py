"""The ``tilebox`` command: a Click group whose commands are thin wrappers over tilebox_core."""

from __future__ import annotations

import sys
import traceback
from typing import Any

import click

from tilebox_core import Settings
from tilebox_core.domain.errors import TileboxError
from tilebox_core.logs import configure_logging

from .context import AppContext


class TileboxGroup(click.Group):
    """Turns library errors into one clear line and a non-zero exit (a traceback only with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TileboxError as exc:
            app = ctx.find_object(AppContext)
            if app is not None and app.debug:
                traceback.print_exc(file=sys.stderr)
            details = getattr(exc, "details", None)
            if details and app is not None and app.debug:
                click.echo(details, err=True)
            raise click.ClickException(str(exc)) from exc
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=TileboxGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--team", default=None, help="Team (default: TILEBOX_TEAM, else 'default').")
@click.option(
    "--log-level",
    envvar="TILEBOX_LOG_LEVEL",
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Default: warning; info for long-running commands (runner start).",
)
@click.option(
    "--log-format", envvar="TILEBOX_LOG_FORMAT", type=click.Choice(["console", "json"]),
    default="console",
)  # fmt: skip
@click.option("--debug", is_flag=True, help="Show tracebacks and child-process output on errors.")
@click.version_option(package_name="tilebox-releases")
@click.pass_context
def cli(
    ctx: click.Context, team: str | None, log_level: str | None, log_format: str, debug: bool
) -> None:
    """Workflow releases and cluster deployments on Redis Streams."""
    level = "debug" if debug else log_level
    configure_logging(level or "warning", log_format)
    app = AppContext(Settings.from_env().override(team=team), debug, level, log_format)
    ctx.obj = app
    ctx.call_on_close(app.close)


def _register() -> None:
    from . import cluster, history, job, runner, server, workflow

    for module in (cluster, workflow, job, runner, history, server):
        module.register(cli)


_register()


def main() -> None:
    cli(prog_name="tilebox")
