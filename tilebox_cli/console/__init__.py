"""``tilebox console``: a read-only web console over the library's public API.

The web stack (Starlette, Jinja2, uvicorn) is the ``console`` extra and is imported only by
this command, so the rest of the CLI, and runners, work without it.
"""

from __future__ import annotations

import click

from ..context import AppContext, pass_app

DEFAULT_PORT = 8787


@click.command("console")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 serves every interface (no login: mind who can reach it).")  # fmt: skip
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port to listen on; 0 picks a free one.")  # fmt: skip
@pass_app
def console(app: AppContext, host: str, port: int) -> None:
    """Serve the web console: clusters, deployments, workflows, jobs and events (read-only)."""
    try:
        from .server import serve
    except ImportError as exc:
        raise click.ClickException(
            f"tilebox console needs the console extra ({exc.name} is not installed): "
            "pip install 'tilebox-releases[console]'"
        ) from None
    serve(app, host, port)


def register(cli: click.Group) -> None:
    cli.add_command(console)
