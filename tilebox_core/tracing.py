"""Tracing of task executions (OpenTelemetry, OTLP): a job is one trace, each task execution a span.

Nothing is stored for it and nothing travels with a task but what already does: the trace id is
the job's id (a UUID: 128 bits, the last 62 random for a UUIDv7), the span id of a task's first
execution is made from the task's id, and the parent of a task's span is the span of its parent
task, whose id is made the same way from the parent's id (the second node of the task's chain).
So a subtask run by any runner, anywhere, joins its job's trace under its parent. Later
executions of a task (retries) get span ids of their own, made from their lane entries, children
of the first's. (A first execution
run again, after a takeover or a job retry reset its attempts, reuses its span id; the one taken
over rarely exported its span: its runner died.)

When ``Settings.otlp`` is set (the standard ``OTEL_EXPORTER_OTLP_*`` variables) runners trace
with ``tilebox_core.execution.tracing``; otherwise ``context.tracer`` is ``NOOP_TRACER``, which
has the tracer's calls that tasks use and does nothing, and nothing of OpenTelemetry is imported.
This module imports none of it either.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any


def trace_bytes(job_id: str) -> bytes:
    """The trace of job ``job_id``, as the 16 bytes OTLP carries: its UUID's (a hash of it for
    an id of other origins)."""
    if len(job_id) == 36:
        try:
            raw = bytes.fromhex(job_id.replace("-", ""))
        except ValueError:
            raw = b""
        if len(raw) == 16:
            return raw
    return hashlib.blake2b(job_id.encode(), digest_size=16).digest()


def span_bytes(task_id: str) -> bytes:
    """The span of task ``task_id``'s first execution, as the 8 bytes OTLP carries: the last 8
    of its UUID (random bits of a UUIDv7, hash bits of a UUIDv5 subtask id; never all zero, as
    the variant bits are set there), a hash for an id of other origins."""
    if len(task_id) == 36:
        try:
            raw = bytes.fromhex(task_id.replace("-", ""))
        except ValueError:
            raw = b""
        if len(raw) == 16:
            return raw[8:]
    return hashlib.blake2b(task_id.encode(), digest_size=8).digest()


def trace_id(job_id: str) -> int:
    """``trace_bytes`` as a number (OpenTelemetry's API takes ids as numbers)."""
    return int.from_bytes(trace_bytes(job_id))


def span_id(task_id: str) -> int:
    """``span_bytes`` as a number."""
    return int.from_bytes(span_bytes(task_id))


def parent_task_id(chain: str) -> str | None:
    """The id of a task's parent from its chain (JSON nodes, the task's first and its parent's
    second, each ``{"k": "<prefix>task:<id>", ...}``), without decoding the whole chain."""
    second = chain.find('"k":"', 7)  # the first node's begins at 1: '[{"k":"'
    if second < 0:
        return None
    end = chain.find('"', second + 5)
    return chain[chain.rfind(":", second + 5, end) + 1 : end] or None


# --- the no-op tracer -------------------------------------------------------------------------


class NoopSpan:
    """A span that records nothing (what ``NOOP_TRACER`` gives)."""

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        pass

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None,
                  timestamp: int | None = None) -> None:  # fmt: skip
        pass

    def record_exception(self, exception: BaseException, *args: Any, **kwargs: Any) -> None:
        pass

    def set_status(self, *args: Any, **kwargs: Any) -> None:
        pass

    def update_name(self, name: str) -> None:
        pass

    def is_recording(self) -> bool:
        return False

    def end(self, end_time: int | None = None) -> None:
        pass

    def __enter__(self) -> NoopSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


_NOOP_SPAN = NoopSpan()


class NoopTracer:
    """``start_as_current_span`` and ``start_span`` of an OpenTelemetry tracer, doing nothing:
    task code written for a real tracer runs unchanged when tracing is off."""

    @contextlib.contextmanager
    def start_as_current_span(self, name: str, *args: Any, **kwargs: Any) -> Iterator[NoopSpan]:
        yield _NOOP_SPAN

    def start_span(self, name: str, *args: Any, **kwargs: Any) -> NoopSpan:
        return _NOOP_SPAN


NOOP_TRACER = NoopTracer()


class Current(threading.local):
    """While a traced task executes on a thread: ``tracer`` makes its tracer (None: no tracing),
    ``task`` is the task (a ``ClaimedTask``); set by the runner's tracing hook."""

    tracer: Callable[[], Any] | None = None
    task: Any = None
    token: object = None  # OpenTelemetry's context token, once the task's span was made current


CURRENT = Current()


def current_tracer() -> Any:
    """The tracer of the task executing on this thread (``context.tracer``): a real one while a
    traced runner runs it (made on first use: the SDK is imported only if a task asks for it),
    else ``NOOP_TRACER``."""
    make = CURRENT.tracer
    return make() if make is not None else NOOP_TRACER


def retry_span_bytes(task_id: str, entry: str, attempts: int) -> bytes:
    """The span of a later execution of a task (``attempts`` failed before), from its lane
    entry (a requeued task gets a new one): an id of its own, made the same way anywhere."""
    return hashlib.blake2b(f"{task_id}/{entry}/{attempts}".encode(), digest_size=8).digest()
