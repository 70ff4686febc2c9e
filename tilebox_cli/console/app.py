"""The console's web app: routes (every one GET), templates, and the client each thread reads with.

Handlers are plain functions: Starlette runs them on its thread pool, and each thread has its own
``Client`` (a client's cached projection is not shared between threads). What a page shows is
put together in ``views``; a handler parses the request, calls a view and renders a template.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tilebox_core import Client, Conflict, InvalidInput, NotFound, StoreUnavailable, TileboxError

from . import views
from .format import FILTERS

HERE = Path(__file__).parent
THREADS = 4  # requests served at once
_STATUS: dict[type[Exception], int] = {NotFound: 404, InvalidInput: 400, Conflict: 409}


class ClientPool:
    """One ``Client`` per server thread, all closed when the app stops."""

    def __init__(self, connect: Callable[[], Client]) -> None:
        self._connect = connect
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list[Client] = []

    def get(self) -> Client:
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._connect()
            with self._lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients:
                client.close()
            self._clients.clear()


class ServerTiming:
    """Adds ``Server-Timing: app;dur=<ms>`` to every response: what the benchmark reads, and
    what a browser's network panel shows."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - started) * 1000
                message["headers"] = [*message.get("headers", []),
                                      (b"server-timing", f"app;dur={ms:.1f}".encode())]  # fmt: skip
            await send(message)

        await self.app(scope, receive, timed)


def create_app(connect: Callable[[], Client], team: str) -> Starlette:
    """The console of ``team``; ``connect()`` opens a client of that team."""
    pool = ClientPool(connect)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a misspelt name is an error, not an empty cell
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    env.globals.update(
        team=team,
        job_states=views.JOB_STATES,
        task_states=views.TASK_STATES,
        colours=views.colours(),
    )
    templates = Jinja2Templates(env=env)

    def page(
        name: str, build: Callable[[Client, Request], dict[str, Any]]
    ) -> Callable[[Request], Response]:
        def endpoint(request: Request) -> Response:
            context = build(pool.get(), request)
            status = 400 if context.get("errors") else 200  # filters that did not parse
            return templates.TemplateResponse(request, name, context, status_code=status)

        return endpoint

    def diagram(request: Request) -> Response:
        svg = views.diagram_svg(pool.get(), request.path_params["job_id"])
        return Response(svg, media_type="image/svg+xml")

    def home(request: Request) -> Response:
        return RedirectResponse("/clusters", status_code=302)

    def error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            status, message = (
                exc.status_code,
                "no such page" if exc.status_code == 404 else str(exc.detail),
            )
        elif isinstance(exc, StoreUnavailable):
            status, message = 503, f"the store cannot be reached: {exc}"
        else:
            status = next((code for kind, code in _STATUS.items() if isinstance(exc, kind)), 500)
            message = str(exc)
        return templates.TemplateResponse(
            request, "error.html", {"status": status, "message": message}, status_code=status
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Handlers run on anyio's thread pool. Each thread's client replays the control log
        # once, so a few threads (an operator's tabs) rather than anyio's default of 40.
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        yield
        pool.close()

    routes = [
        Route("/", home),
        Route("/clusters", page("clusters.html", views.clusters)),
        Route("/clusters/{slug}", page("cluster.html", views.cluster)),
        Route("/workflows", page("workflows.html", views.workflows)),
        Route("/workflows/{slug}", page("workflow.html", views.workflow)),
        Route("/releases/{release_id}", page("release.html", views.release)),
        Route("/jobs", page("jobs.html", views.jobs)),
        Route("/jobs/{job_id}", page("job.html", views.job)),
        Route("/jobs/{job_id}/live", page("_job_live.html", views.job)),
        Route("/jobs/{job_id}/diagram.svg", diagram),
        Route("/jobs/{job_id}/tasks/{task_id}", page("task.html", views.task)),
        Route("/events", page("events.html", views.events)),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: error, TileboxError: error},
        lifespan=lifespan,
    )
    app.add_middleware(ServerTiming)
    return app
