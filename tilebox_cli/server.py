"""``tilebox server``: the embedded Valkey server used when TILEBOX_REDIS_URL is unset."""

from __future__ import annotations

import click

from tilebox_core import EmbeddedServer, ServerStatus

from .context import AppContext, json_option, pass_app
from .output import emit_json


@click.group("server")
def server() -> None:
    """Start, stop or inspect the embedded server (data under TILEBOX_HOME)."""


def _show(app: AppContext, status: ServerStatus, verb: str) -> None:
    if app.json:
        emit_json(status)
        return
    running = status.running
    click.echo(
        f"{verb}: {'running' if running else 'not running'} at {status.url} "
        f"(pid {status.pid or '-'}, data in {status.data_dir})"
    )


@server.command("start")
@json_option
@pass_app
def start(app: AppContext) -> None:
    """Start the embedded server (no-op if it runs)."""
    _show(app, EmbeddedServer(app.settings.home).start(), "server")


@server.command("stop")
@json_option
@pass_app
def stop(app: AppContext) -> None:
    """Stop the embedded server; its data stays on disk."""
    stopped = EmbeddedServer(app.settings.home).stop()
    if app.json:
        emit_json({"stopped": stopped})
    else:
        click.echo("server stopped" if stopped else "server was not running")


@server.command("status")
@json_option
@pass_app
def status(app: AppContext) -> None:
    """Show whether the embedded server runs, where, and its data directory."""
    current = EmbeddedServer(app.settings.home).status()
    _show(app, current, "server")
    if not current.running:
        raise SystemExit(3)


def register(cli: click.Group) -> None:
    cli.add_command(server)
