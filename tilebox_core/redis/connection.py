"""Opening a checked connection to Redis/Valkey: the configured URL or the embedded server."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from tilebox_core.domain.errors import StoreUnavailable

from .errors import URL_ENV, redacted, translated
from .server import EmbeddedServer

MIN_REDIS = (7, 0)


def resolve_url(url: str | None = None, home: Path | None = None) -> str:
    """``url``, else ``TILEBOX_REDIS_URL``, else the embedded server (started when needed)."""
    url = url or os.environ.get(URL_ENV)
    if url:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise StoreUnavailable(
                f"unsupported Redis URL {redacted(url)!r} in {URL_ENV}: "
                "use redis://, rediss:// or unix://"
            )
        return url
    return EmbeddedServer(home).ensure()


def connect(url: str | None = None, *, home: Path | None = None, retries: int = 3) -> redis.Redis:
    """A client for ``url`` (see ``resolve_url``) whose server was checked to be Redis >= 7.0.

    Commands are retried with exponential backoff on connection errors, so a restarting server is
    ridden over; ``retries`` bounds how long (runners pass a larger number than one-shot commands).
    """
    url = resolve_url(url, home)
    try:
        tcp = {} if url.startswith("unix://") else {"socket_keepalive": True}
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=5,
            **tcp,
            retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
        info = client.info("server")
    except (redis.RedisError, OSError) as exc:
        raise translated(exc, url, connecting=True) from exc
    check_version(info, url)
    return client


def check_version(info: dict[str, Any], url: str) -> None:
    text = str(info.get("redis_version", "0.0"))
    version = tuple(int(part) for part in re.findall(r"\d+", text)[:2])
    if version < MIN_REDIS:
        raise StoreUnavailable(
            f"Redis at {redacted(url)} is version {text}; tilebox needs Redis >= 7.0 or Valkey >= 7.2"
        )
