"""Serving the console: the listening socket (bound here, so a bad address is one clear line
before anything starts) and uvicorn running the app on it."""

from __future__ import annotations

import socket

import click
import uvicorn

from tilebox_core import Client

from ..context import AppContext
from .app import create_app


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host``:``port``; a ClickException naming the fix if it cannot."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise click.ClickException(
            f"--host {host!r} is not an address this machine can listen on ({exc}); "
            "use 127.0.0.1, 0.0.0.0 or one of its own addresses"
        ) from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        hint = "pick another --port" if exc.errno in (98, 48, 13) else "check --host and --port"
        raise click.ClickException(f"cannot listen on {host}:{port}: {reason}; {hint}") from None
    sock.set_inheritable(True)
    return sock


def serve(app: AppContext, host: str, port: int) -> None:
    """Serve the console of ``app``'s team until interrupted."""
    client = app.client
    client.clusters().all()  # an unreachable store is one clear line now, not an error page later
    sock = listen(host, port)
    bound_port = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host

    def connect() -> Client:
        return Client(client.url, team=client.team, prefix=client.prefix, actor=client.actor)

    application = create_app(connect, team=client.team)
    click.echo(
        f"tilebox console on http://{shown_host}:{bound_port}/ (team {client.team}, read-only); "
        "Ctrl-C stops it"
    )
    # log_config=None: logging stays the entry point's (structlog); uvicorn only reports errors.
    config = uvicorn.Config(
        application, log_config=None, access_log=False, lifespan="on",
        timeout_graceful_shutdown=3,
    )  # fmt: skip
    with sock:
        uvicorn.Server(config).run(sockets=[sock])
