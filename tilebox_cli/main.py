"""The ``tilebox`` command: a Click group whose commands are thin wrappers over tilebox_core."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from typing import Any

import click
import msgspec

from tilebox_core import Settings
from tilebox_core.domain.errors import TileboxError
from tilebox_core.logs import configure_logging

from .context import AppContext


class CommandError(click.ClickException):
    """A library error as one line, with the stable code of its class (``--json`` prints it)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class Interrupted(CommandError):
    exit_code = 130  # 128 + SIGINT, as shells report it

    def __init__(self) -> None:
        super().__init__("interrupted", "interrupted")


def error_code(exc: click.ClickException) -> str:
    if isinstance(exc, CommandError):
        return exc.code
    if isinstance(exc, click.UsageError):
        return "usage"
    if isinstance(exc, click.FileError):
        return "invalid_input"
    return "error"


def show_error(exc: click.ClickException, as_json: bool) -> None:
    """Click's own text ("Error: ..."), or ``{"error": {"code", "message"}}`` under --json."""
    if not as_json:
        exc.show()
        return
    error = {"code": error_code(exc), "message": exc.format_message()}
    click.echo(msgspec.json.encode({"error": error}).decode(), err=True)


class TileboxGroup(click.Group):
    """Turns library errors into one clear line and a non-zero exit (a traceback only with
    --debug); under --json, errors are a JSON document on stderr with the same exit codes."""

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
            raise CommandError(str(exc), exc.code) from exc
        except KeyboardInterrupt:
            raise Interrupted from None

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if not standalone_mode:
            return super().main(argv, prog_name, complete_var, standalone_mode, **extra)
        # Standalone, click would print errors itself; here they are printed as --json asks.
        # The flag is looked for in the arguments, as a usage error comes before any callback.
        as_json = "--json" in argv
        try:
            result = super().main(argv, prog_name, complete_var, False, **extra)
        except click.ClickException as exc:
            show_error(exc, as_json)
            sys.exit(exc.exit_code)
        except click.Abort:
            show_error(CommandError("aborted; nothing was changed", "aborted"), as_json)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)  # an int is click's exit code


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
@click.option("--no-color", is_flag=True, envvar="NO_COLOR",
              help="No colours on a terminal (also: NO_COLOR=1, no-color.org).")  # fmt: skip
@click.version_option(package_name="tilebox-releases")
@click.pass_context
def cli(
    ctx: click.Context, team: str | None, log_level: str | None, log_format: str, debug: bool,
    no_color: bool,
) -> None:  # fmt: skip
    """Workflow releases and cluster deployments on Redis Streams."""
    level = "debug" if debug else log_level
    configure_logging(level or "warning", log_format)
    ctx.meta["tilebox.color"] = not no_color
    app = AppContext(Settings.from_env().override(team=team), debug, level, log_format)
    ctx.obj = app
    ctx.call_on_close(app.close)


def _register() -> None:
    from . import archive, audit, cluster, console, history, job, runner, server, team, workflow

    for module in (cluster, workflow, job, runner, history, audit, archive, server, team, console):
        module.register(cli)


_register()


def main() -> None:
    cli(prog_name="tilebox")
