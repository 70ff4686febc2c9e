"""Task logs in Redis: a stream per job (``TaskKeys.job_logs``), an entry per line.

An entry's fields: ``t`` task id, ``a`` attempt, ``us`` when it was logged (microseconds since
the epoch), ``l`` level, ``m`` message, ``f`` its other fields as JSON (left out when it has
none), ``r`` runner id; a note of dropped lines has ``d`` (how many) instead of ``l``/``m``/``f``.
Lines are appended in batches: one pipeline for every job's lines of a batch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import msgspec

from tilebox_core.domain.tasklogs import TaskLogLine

from .eventstore import translate_errors
from .taskstore import TaskStore

_json = msgspec.json.Encoder()
_fields = msgspec.json.Decoder(dict[str, Any])


def encode_line(line: TaskLogLine) -> dict[str, str]:
    """The stream entry of ``line``."""
    at = line.at.timestamp()
    entry = {"t": line.task_id, "a": str(line.attempt), "us": str(round(at * 1_000_000)),
             "r": line.runner_id}  # fmt: skip
    if line.dropped:
        entry["d"] = str(line.dropped)
        return entry
    entry["l"], entry["m"] = line.level, line.message
    if line.fields:
        entry["f"] = _json.encode(line.fields).decode()
    return entry


def decode_line(fields: dict[bytes, bytes]) -> TaskLogLine:
    text = {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}
    at = dt.datetime.fromtimestamp(int(text.get("us", "0")) / 1_000_000, dt.UTC)
    return TaskLogLine(
        task_id=text.get("t", ""), attempt=int(text.get("a", "1")), at=at,
        level=text.get("l", ""), message=text.get("m", ""),
        fields=_fields.decode(text["f"]) if "f" in text else {},
        runner_id=text.get("r", ""), dropped=int(text.get("d", "0")),
    )  # fmt: skip


class TaskLogStore:
    def __init__(self, tasks: TaskStore) -> None:
        self._tasks = tasks
        self.redis = tasks.redis

    def key(self, job_id: str) -> str:
        return self._tasks.shard(job_id).job_logs(job_id)

    @translate_errors
    def append(self, lines: Sequence[tuple[str, TaskLogLine]]) -> None:
        """Append (job id, line) pairs, each to its job's stream, in one pipeline."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id, line in lines:
            pipe.xadd(self.key(job_id), encode_line(line))  # type: ignore[arg-type]
        pipe.execute()

    @translate_errors
    def read(
        self, job_id: str, after: str = "0-0", count: int = 10_000
    ) -> list[tuple[str, TaskLogLine]]:
        """Up to ``count`` lines of job ``job_id`` after entry ``after``, oldest first, with their
        entry ids (pass the last as ``after`` to go on)."""
        entries: Any = self.redis.xrange(self.key(job_id), min=f"({after}", max="+", count=count)
        return [(_s(entry), decode_line(fields)) for entry, fields in entries]

    @translate_errors
    def wait(self, job_id: str, after: str, block_ms: int) -> list[tuple[str, TaskLogLine]]:
        """The lines after ``after``, waiting up to ``block_ms`` for one if there is none."""
        reply: Any = self.redis.xread({self.key(job_id): after}, count=10_000, block=block_ms)
        if isinstance(reply, dict):  # RESP3
            reply = reply.items()
        entries = [e for _, stream in reply or () for e in stream]
        return [(_s(entry), decode_line(fields)) for entry, fields in entries]


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
