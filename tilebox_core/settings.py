"""``Settings``: where a team's state lives and who acts on it, read from the environment once.

Entry points build them (the CLI's context, a runtime process, ``Client()`` given none) and pass
them down; no other module reads the environment. The variables:

    TILEBOX_REDIS_URL        redis://, rediss:// or unix:// URL, or redis+cluster://host:port[,...]
                             of a Redis Cluster; unset: the embedded server
    TILEBOX_TEAM             team (default "default")
    TILEBOX_PREFIX           prefix of every key (default "tilebox")
    TILEBOX_ACTOR            who the events are recorded as with ACLs off (default
                             "user:<login>@<host>"); with ACLs on, the authenticated ACL user
    TILEBOX_CLUSTER          cluster of jobs and runners that name none (default "default")
    TILEBOX_HOME             embedded server data, release cache, runner logs
                             (default $XDG_DATA_HOME/tilebox, i.e. ~/.local/share/tilebox)
    TILEBOX_CONNECT_TIMEOUT  seconds to wait for a connection to Redis (default 5)

Modelled on arq's ``RedisSettings``: one frozen value, so what a process runs with is visible in
one place and can be handed to a child process (``environment()``) unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from tilebox_core.domain.errors import InvalidInput
from tilebox_core.domain.identifiers import validate_slug
from tilebox_core.redis.connection import check_url
from tilebox_core.redis.errors import redacted
from tilebox_core.redis.keys import DEFAULT_PREFIX, check_prefix

T = TypeVar("T")

DEFAULT_TEAM = "default"
DEFAULT_CLUSTER = "default"
DATA_HOME = Path("~/.local/share")  # XDG's default for $XDG_DATA_HOME


def _default_home() -> Path:
    return (DATA_HOME / "tilebox").expanduser()


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    url: str | None = None  # None: the embedded server under ``home``
    team: str = DEFAULT_TEAM
    prefix: str = DEFAULT_PREFIX
    actor: str | None = None  # None: "user:<login>@<host>"
    cluster: str = DEFAULT_CLUSTER
    home: Path = msgspec.field(default_factory=_default_home)
    connect_timeout: float = 5.0
    # Commands retried on a lost connection (the driver's own Retry), with exponential backoff
    # from ``reconnect_base`` seconds up to ``reconnect_cap``: a restarting server is ridden over.
    # Runners ask for more retries than one-shot commands.
    reconnect_retries: int = 3
    reconnect_base: float = 0.05
    reconnect_cap: float = 2.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings ``environ`` (default: this process's environment) describes; a bad value is
        one ``InvalidInput`` line naming the variable and the fix. Empty variables count as unset."""
        env = Environment(os.environ if environ is None else environ)
        xdg = env.get("XDG_DATA_HOME")
        home = env.get("TILEBOX_HOME")
        return cls(
            url=env.parse("TILEBOX_REDIS_URL", check_url, None, show=redacted),
            team=env.parse("TILEBOX_TEAM", lambda v: validate_slug(v, "team name"), DEFAULT_TEAM),
            prefix=env.parse("TILEBOX_PREFIX", check_prefix, DEFAULT_PREFIX),
            actor=env.get("TILEBOX_ACTOR"),
            cluster=env.parse(
                "TILEBOX_CLUSTER", lambda v: validate_slug(v, "cluster slug"), DEFAULT_CLUSTER
            ),
            home=Path(home).expanduser()
            if home
            else (Path(xdg or DATA_HOME) / "tilebox").expanduser(),
            connect_timeout=env.parse("TILEBOX_CONNECT_TIMEOUT", seconds, 5.0),
        )

    def override(self, **values: Any) -> Settings:
        """A copy with each of ``values`` that is not None (an explicit argument wins over the
        environment; an argument left out does not)."""
        given = {name: value for name, value in values.items() if value is not None}
        return msgspec.structs.replace(self, **given) if given else self

    def environment(self) -> dict[str, str]:
        """The variables that make ``from_env`` in a child process give these settings."""
        env = {
            "TILEBOX_TEAM": self.team,
            "TILEBOX_PREFIX": self.prefix,
            "TILEBOX_CLUSTER": self.cluster,
            "TILEBOX_HOME": str(self.home),
            "TILEBOX_CONNECT_TIMEOUT": repr(self.connect_timeout),
        }
        if self.url is not None:
            env["TILEBOX_REDIS_URL"] = self.url
        if self.actor is not None:
            env["TILEBOX_ACTOR"] = self.actor
        return env


class Environment:
    """Reads variables of one environment mapping, turning a bad value into one clear line."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def get(self, name: str) -> str | None:
        return self._environ.get(name) or None

    def parse(
        self, name: str, parse: Callable[[str], T], default: T, show: Callable[[str], str] = str
    ) -> T:
        """``parse(value)`` of variable ``name``, ``default`` when unset; ``show`` makes the value
        fit for a message (a URL's password is never shown)."""
        raw = self.get(name)
        if raw is None:
            return default
        try:
            return parse(raw)
        except (InvalidInput, ValueError) as exc:
            raise InvalidInput(f"{name}={show(raw)!r}: {exc}; fix or unset {name}") from None


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("not a number of seconds, e.g. 5 or 0.5") from None
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a number of seconds above 0")
    return value


def whole(minimum: int) -> Callable[[str], int]:
    """A parser of whole numbers >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"not a whole number, e.g. {max(minimum, 1)}") from None
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        return value

    return parse


def flag(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError("must be 1 (on) or 0 (off)")
    return text == "1"


def choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    """A parser of one of ``choices``."""

    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    return parse
