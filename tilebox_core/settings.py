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
    TILEBOX_ARCHIVE_URL      where the event logs' archive segments are stored: file:///path,
                             s3://bucket/path, gs://bucket/path or az://account/container/path
                             (credentials, region and endpoint from the usual AWS_*, GOOGLE_*,
                             AZURE_* variables); unset: the directory archive/ under TILEBOX_HOME

Tracing (OpenTelemetry's standard variables; runners export a trace per job when one of the
endpoints is set, and import nothing of OpenTelemetry when none is):

    OTEL_EXPORTER_OTLP_ENDPOINT          OTLP/HTTP base URL (traces go to <it>/v1/traces)
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT   the traces URL itself (wins over the base URL)
    OTEL_EXPORTER_OTLP_HEADERS           key=value,... sent with each export (and
    OTEL_EXPORTER_OTLP_TRACES_HEADERS    these, which win for a key given in both)
    OTEL_EXPORTER_OTLP_TIMEOUT           milliseconds an export may take (default 10000; also _TRACES_)
    OTEL_EXPORTER_OTLP_PROTOCOL          http/protobuf, the only one supported (also _TRACES_)
    OTEL_SERVICE_NAME                    the resource's service.name (default "tilebox-runner")
    OTEL_SDK_DISABLED                    true: no tracing, whatever else is set

Modelled on arq's ``RedisSettings``: one frozen value, so what a process runs with is visible in
one place and can be handed to a child process (``environment()``) unchanged.
"""

from __future__ import annotations

import os
import urllib.parse
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


class Otlp(msgspec.Struct, frozen=True, kw_only=True):
    """Where and how spans are exported (OTLP over HTTP with protobuf)."""

    endpoint: str  # the traces URL, e.g. http://collector:4318/v1/traces
    headers: dict[str, str] = {}
    timeout: float = 10.0  # seconds
    service_name: str = "tilebox-runner"

    @classmethod
    def from_env(cls, env: Environment) -> Otlp | None:
        if env.parse("OTEL_SDK_DISABLED", _true, False):
            return None
        endpoint = env.parse("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", _url, None)
        if endpoint is None:
            base = env.parse("OTEL_EXPORTER_OTLP_ENDPOINT", _url, None)
            if base is None:
                return None
            endpoint = base.rstrip("/") + "/v1/traces"
        for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
            env.parse(name, choice(("http/protobuf",)), "http/protobuf")
        timeout = env.parse(
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", milliseconds,
            env.parse("OTEL_EXPORTER_OTLP_TIMEOUT", milliseconds, 10.0),
        )  # fmt: skip
        none: dict[str, str] = {}
        headers = {
            **env.parse("OTEL_EXPORTER_OTLP_HEADERS", _headers, none),
            **env.parse("OTEL_EXPORTER_OTLP_TRACES_HEADERS", _headers, none),
        }
        service = env.get("OTEL_SERVICE_NAME") or "tilebox-runner"
        return cls(endpoint=endpoint, headers=headers, timeout=timeout, service_name=service)

    def environment(self) -> dict[str, str]:
        return {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": self.endpoint,
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": ",".join(
                f"{urllib.parse.quote(k)}={urllib.parse.quote(v)}" for k, v in self.headers.items()
            ),
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": str(round(self.timeout * 1000)),
            "OTEL_SERVICE_NAME": self.service_name,
        }


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
    otlp: Otlp | None = None  # None: no tracing (and nothing of OpenTelemetry imported)
    archive_url: str | None = None  # None: ``home / "archive"``

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
            otlp=Otlp.from_env(env),
            archive_url=env.parse("TILEBOX_ARCHIVE_URL", archive_url, None),
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
        if self.otlp is not None:
            env.update(self.otlp.environment())
        if self.archive_url is not None:
            env["TILEBOX_ARCHIVE_URL"] = self.archive_url
        return env

    @property
    def archive_location(self) -> str:
        """The archive's URL: ``archive_url``, else the directory under ``home``."""
        return self.archive_url or (self.home / "archive").resolve().as_uri()


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


def milliseconds(text: str) -> float:
    """Milliseconds (OpenTelemetry's unit for timeouts) as seconds."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError("not a number of milliseconds, e.g. 10000") from None
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a number of milliseconds above 0")
    return value / 1000


ARCHIVE_SCHEMES = ("file", "s3", "s3a", "gs", "az", "azure", "abfs", "abfss")


def archive_url(text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ARCHIVE_SCHEMES or (parts.scheme != "file" and not parts.netloc):
        raise ValueError(
            "not an object store URL: use file:///path, s3://bucket/path, gs://bucket/path or "
            "az://account/container/path"
        )
    if parts.scheme == "file" and not parts.path.startswith("/"):
        raise ValueError("a file:// URL needs an absolute path, e.g. file:///srv/tilebox-archive")
    return text


def _url(text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("not an http:// or https:// URL, e.g. http://localhost:4318")
    return text


def _headers(text: str) -> dict[str, str]:
    """W3C baggage-like ``key=value,...`` with URL-encoded values, as OpenTelemetry reads them."""
    headers = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"{pair!r} is not key=value; give key=value,key2=value2")
        headers[urllib.parse.unquote(key.strip()).lower()] = urllib.parse.unquote(value.strip())
    return headers


def _true(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError("must be true or false")
    return text.lower() == "true"


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
