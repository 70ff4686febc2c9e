"""Runner liveness: who serves a cluster, with which releases, and when they last said so.

Each release runner writes its record (a hash) and a heartbeat score in a per-cluster sorted set;
a runner whose heartbeat is older than the timeout counts as dead and drops out of every view.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import msgspec
from redis import exceptions as rex

from tilebox_core.domain.runners import DEAD_AFTER_SECONDS, RunnerInfo

from .eventstore import EventStore, translate_errors

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(RunnerInfo).decode


class RunnerRegistry:
    def __init__(self, store: EventStore) -> None:
        self.redis = store.redis
        self.keys = store.keys
        self.identity = store.identity  # named in a refusal's message (translate_errors)

    @translate_errors
    def heartbeat(self, info: RunnerInfo) -> None:
        now = info.last_heartbeat.timestamp() * 1000
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.keys.runner(info.id), _encode(info), px=int(DEAD_AFTER_SECONDS * 3000))
        pipe.zadd(self.keys.runners(info.cluster), {info.id: now})
        pipe.execute()

    @translate_errors
    def remove(self, cluster: str, runner_id: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.runner(runner_id))
        pipe.zrem(self.keys.runners(cluster), runner_id)
        pipe.execute()

    @translate_errors
    def live(self, cluster: str, now: float | None = None) -> list[RunnerInfo]:
        """Runners of ``cluster`` with a recent heartbeat; stale entries are pruned on the way."""
        now_ms = (now if now is not None else time.time()) * 1000
        cutoff = now_ms - DEAD_AFTER_SECONDS * 1000
        key = self.keys.runners(cluster)
        with contextlib.suppress(rex.NoPermissionError):  # a reader (an auditor) cannot prune
            self.redis.zremrangebyscore(key, "-inf", f"({cutoff}")
        found: list[bytes] = self.redis.zrangebyscore(key, cutoff, "+inf")  # type: ignore[assignment]
        ids = [i.decode() for i in found]
        if not ids:
            return []
        records: list[Any] = self.redis.mget([self.keys.runner(i) for i in ids])
        return [_decode(r) for r in records if r]
