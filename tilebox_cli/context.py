"""The one context object every command receives: the settings (read from the environment once,
then the global options), the global options, and a lazily opened Client."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from tilebox_core import Client, Settings
from tilebox_core.settings import DEFAULT_TEAM

F = TypeVar("F", bound=Callable[..., Any])


class AppContext:
    def __init__(
        self,
        settings: Settings,
        debug: bool,
        log_level: str | None = None,
        log_format: str = "console",
    ) -> None:
        self.settings = settings
        self.debug = debug
        self.log_level = log_level  # None: the command's own default
        self.log_format = log_format
        self.json = False
        self._client: Client | None = None
        self._admin: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(settings=self.settings)
        return self._client

    @property
    def admin_client(self) -> Client:
        """A client connected as an administrator: as TILEBOX_REDIS_URL says, else as the
        embedded server's admin."""
        if self._admin is None:
            self._admin = Client(settings=self.settings, admin=True)
        return self._admin

    def close(self) -> None:
        for client in (self._client, self._admin):
            if client is not None:
                client.close()

    def reading(self) -> None:
        """Before a command that only reads: a team chosen by name that nothing was ever written
        to is more likely a typo than an empty team, so say so (stderr; writes create a team)."""
        team = self.settings.team
        if team != DEFAULT_TEAM and self.client.events().is_empty():
            click.echo(
                f"warning: team {team!r} has no events yet (a typo?); showing an empty team. "
                "Commands that write create it",
                err=True,
            )

    def asks(self, yes: bool) -> bool:
        """Whether a destructive command asks first: on a terminal, unless ``--yes``. Off a
        terminal (scripts, pipes, CI) it never asks and proceeds."""
        return not yes and sys.stdin.isatty()

    def confirm(self, question: str) -> None:
        """Ask ``question``; declining aborts with nothing changed."""
        click.confirm(question, abort=True, err=True)


pass_app = click.make_pass_decorator(AppContext)


def json_option(func: F) -> F:
    """``--json``: machine-readable output on stdout, no progress or prose."""

    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
    @functools.wraps(func)
    def wrapper(*args: Any, as_json: bool, **kwargs: Any) -> Any:
        click.get_current_context().find_object(AppContext).json = as_json  # type: ignore[union-attr]
        return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def yes_option(func: F) -> F:
    """``--yes``: do not ask for confirmation on a terminal (off a terminal nothing is asked)."""
    return click.option("--yes", "-y", "yes", is_flag=True, help="Do not ask for confirmation.")(
        func
    )


def split_csv(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def path_argument(func: F) -> F:
    """``[PATH]``: the workflow project directory (default: found upward from the working
    directory), the one convention of every ``workflow`` command that reads a project."""
    return click.argument(
        "path", required=False, type=click.Path(path_type=Path, exists=True), default=None
    )(func)


def deprecated_path_option(func: F) -> F:
    """``--path DIR``: the old spelling of ``[PATH]`` on deploy/undeploy, kept hidden."""

    @click.option("--path", "path_option", hidden=True,
                  type=click.Path(path_type=Path, exists=True))  # fmt: skip
    @functools.wraps(func)
    def wrapper(*args: Any, path: Path | None, path_option: Path | None, **kwargs: Any) -> Any:
        if path_option is not None:
            if path is not None:
                raise click.UsageError("give the project directory once: as PATH, not also --path")
            click.echo("warning: --path is deprecated; pass the directory as PATH", err=True)
        return func(*args, path=path or path_option, **kwargs)

    return wrapper  # type: ignore[return-value]
