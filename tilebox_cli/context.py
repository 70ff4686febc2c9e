"""The one context object every command receives: the settings (read from the environment once,
then the global options), the global options, and a lazily opened Client."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from tilebox_core import Client, Settings

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

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(settings=self.settings)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


pass_app = click.make_pass_decorator(AppContext)


def json_option(func: F) -> F:
    """``--json``: machine-readable output on stdout, no progress or prose."""

    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
    @functools.wraps(func)
    def wrapper(*args: Any, as_json: bool, **kwargs: Any) -> Any:
        click.get_current_context().find_object(AppContext).json = as_json  # type: ignore[union-attr]
        return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def split_csv(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]
