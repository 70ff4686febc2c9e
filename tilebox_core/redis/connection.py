"""Opening a checked connection to Redis/Valkey: the configured URL or the embedded server."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from tilebox_core.domain.errors import InvalidInput, StoreUnavailable

from .errors import redacted, translated
from .server import EmbeddedServer

MIN_REDIS = (7, 0)


def check_url(url: str) -> str:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise InvalidInput(
            f"unsupported Redis URL {redacted(url)!r}: use redis://, rediss:// or unix://"
        )
    try:
        parsed = urlparse(url)
        parsed.port  # noqa: B018 - parsing it is the check: urllib raises for a bad port
    except ValueError as exc:
        raise InvalidInput(
            f"invalid Redis URL {redacted(url)!r}: {exc}; write e.g. redis://host:6379/0"
        ) from None
    return url


def resolve_url(url: str | None, home: Path) -> str:
    """``url`` (checked), else the embedded server with its data under ``home`` (started when
    needed)."""
    if url:
        return check_url(url)
    return EmbeddedServer(home).ensure()


def connect(
    url: str, *, timeout: float, retries: int, backoff_base: float, backoff_cap: float
) -> redis.Redis:
    """A client for ``url`` whose server was checked to be Redis >= 7.0.

    Commands are retried with exponential backoff (the driver's own ``Retry``) on connection
    errors, so a restarting server is ridden over; ``retries`` bounds how long. The numbers come
    from ``tilebox_core.settings.Settings``. The first answer is waited for ``timeout`` seconds
    once, not once per retry: a server that does not answer (``rediss://`` against a plain port
    never completes its handshake) is reported in seconds, not after every retry has timed out.
    """
    riding = Retry(ExponentialBackoff(cap=backoff_cap, base=backoff_base), retries)
    try:
        tcp = {} if url.startswith("unix://") else {"socket_keepalive": True}
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            **tcp,
            retry=Retry(
                ExponentialBackoff(cap=backoff_cap, base=backoff_base),
                retries,
                supported_errors=(redis.ConnectionError,),
            ),
            retry_on_error=[redis.ConnectionError],
        )
        info = client.info("server")
    except (redis.RedisError, OSError) as exc:
        raise translated(exc, url, connecting=True) from exc
    check_version(info, url)
    client.set_retry(riding)
    return client


def check_version(info: dict[str, Any], url: str) -> None:
    text = str(info.get("redis_version", "0.0"))
    version = tuple(int(part) for part in re.findall(r"\d+", text)[:2])
    if version < MIN_REDIS:
        raise StoreUnavailable(
            f"Redis at {redacted(url)} is version {text}; tilebox needs Redis >= 7.0 or Valkey >= 7.2"
        )
