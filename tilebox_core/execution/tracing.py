"""``TraceHooks``: a span per task execution, exported by OTLP/HTTP (protobuf).

Imported only when tracing is on (``Settings.otlp``). How the ids are made, so that a job is one
trace wherever its tasks run, is told in ``tilebox_core.tracing``.

The spans of task executions are recorded and encoded here, not by the OpenTelemetry SDK: the SDK
costs about 20 us to make a span and 30 more to encode it (measured), twice what a no-op task
costs a runner in all, where this costs about 3 us. They are plain OTLP: the protobuf messages
of ``opentelemetry/proto/trace/v1/trace.proto``, written field by field (their layout is fixed;
``tests/test_tracing.py`` decodes them with opentelemetry-proto). A span holds a task's ids,
identifier, runner, release, attempt and outcome, and an error status when it failed.

The spans a task makes itself (``context.tracer``) are the SDK's: it is imported the first time a
task asks for its tracer, and exports them to the same endpoint, children of the task's span.
"""

from __future__ import annotations

import collections
import functools
import http.client
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import structlog

from tilebox_core.domain.events import TaskFailed
from tilebox_core.domain.tasks import ClaimedTask, Finish, Outcome
from tilebox_core.settings import Otlp, Settings
from tilebox_core.tracing import (
    CURRENT,
    parent_task_id,
    retry_span_bytes,
    span_bytes,
    trace_bytes,
)

from .hooks import Execute, RunnerHooks

log = structlog.get_logger(__name__)

# Enough for the spans of ~5 s of no-op tasks at 10,000/s, which the exporter thread sends in
# batches meanwhile; past it spans are dropped (and counted in a warning), never a task held up.
MAX_QUEUED_SPANS = 65_536
EXPORT_BATCH = 2048
EXPORT_SECONDS = 1.0
FAILED = frozenset({Outcome.RETRY, Outcome.FAILED, Outcome.FAILED_OPTIONAL})
SCOPE = "tilebox"


# One task execution as recorded while the runner runs it: the task, its start and end (ns since
# the epoch), outcome, and error (None unless it failed); a tuple, as one is made per task.
SpanRecord = tuple[ClaimedTask, int, int, Outcome, str | None]


# --- protobuf, by hand ---------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _string_attribute(key: str, value: str) -> bytes:
    """KeyValue{key, AnyValue{string_value}}, as a ``Span.attributes`` / ``Resource.attributes``
    entry (field 9 of a span; the caller's field number is added by ``_attribute``)."""
    return _field(1, key.encode()) + _field(2, _field(1, value.encode()))


def _int_attribute(key: str, value: int) -> bytes:
    return _field(1, key.encode()) + _field(2, b"\x18" + _varint(value & 0xFFFF_FFFF_FFFF_FFFF))


_TIMES = struct.Struct("<BQBQ")  # start and end: fixed64 fields 7 and 8


@functools.cache
def _prefix(key: str, length: int) -> bytes:
    """A ``Span.attributes`` entry of ``key`` whose string value is ``length`` bytes long, up to
    the value itself (ids are all of one length: the prefix is made once)."""
    value = b"\x0a" + _varint(length)  # AnyValue.string_value, its length
    key_field = _field(1, key.encode())
    inner = len(key_field) + 1 + len(_varint(len(value) + length)) + len(value) + length
    return _varint(9 << 3 | 2) + _varint(inner) + key_field + b"\x12" + _varint(
        len(value) + length
    ) + value  # fmt: skip


class SpanEncoder:
    """Encodes ``SpanRecord``s of one runner as OTLP ``Span`` messages (each as a
    ``ScopeSpans.spans`` field). What spans share is encoded once: an identifier's name and
    attributes with the runner's, each outcome, each attempt, the prefixes of the id attributes,
    the job of the last span (a fan-out's spans are of one job)."""

    def __init__(self, runner_id: str, release_id: str | None) -> None:
        common = _field(9, _string_attribute("tilebox.runner.id", runner_id))
        if release_id is not None:
            common += _field(9, _string_attribute("tilebox.release.id", release_id))
        self._common = common
        # (name, version) -> its name and kind fields, and its identifier and runner attributes
        self._named: dict[tuple[str, str], tuple[bytes, bytes]] = {}
        self._outcomes: dict[str, bytes] = {}
        self._attempts: dict[int, bytes] = {}
        self._templates: dict[tuple[str, str, Outcome, bool], bytes | None] = {}
        self._trace: tuple[str, bytes] = ("", b"")  # the last job's trace, and parent's span
        self._parent: tuple[str, bytes] = ("", b"")

    def _ids(self, task: ClaimedTask) -> tuple[bytes, bytes, bytes]:
        """``span_ids(task)``, the last job's trace and parent's span kept (a fan-out's)."""
        if task.attempts:
            return span_ids(task)
        job_id, trace = self._trace
        if job_id != task.job_id:
            trace = trace_bytes(task.job_id)
            self._trace = (task.job_id, trace)
        parent_id = parent_task_id(task.chain)
        if parent_id is None:
            return trace, span_bytes(task.task_id), b""
        known, parent = self._parent
        if known != parent_id:
            parent = span_bytes(parent_id)
            self._parent = (parent_id, parent)
        return trace, span_bytes(task.task_id), parent

    def encode(self, record: SpanRecord) -> bytes:
        task, start_ns, end_ns, outcome, error = record
        job_id, task_id = task.job_id, task.task_id
        if error is None and not task.attempts and len(job_id) == len(task_id) == 36:
            # The common shape (every span of a no-op fan-out, say): a first execution without
            # an error, ids of 36 characters, from a template of its identifier, outcome and
            # parent's presence (every length is fixed), its ids and times filled in. Written
            # out in one function: this runs once a task.
            chain = task.chain
            second = chain.find('"k":"', 7)  # the parent's node (see parent_task_id)
            parent_id = None
            if second >= 0:
                end = chain.find('"', second + 5)
                parent_id = chain[chain.rfind(":", second + 5, end) + 1 : end]
            key = (task.name, task.version, outcome, parent_id is not None)
            template = self._templates.get(key, b"")
            if template == b"":
                template = self._templates[key] = self._template(task, outcome, key[3])
            if template is not None:
                known, trace = self._trace
                if known != job_id:
                    trace = trace_bytes(job_id)
                    self._trace = (job_id, trace)
                times = _TIMES.pack(0x39, start_ns, 0x41, end_ns)
                span = span_bytes(task_id)
                if parent_id is None:
                    return template % (trace, span, times, job_id.encode(), task_id.encode())
                known, parent = self._parent
                if known != parent_id:
                    parent = span_bytes(parent_id)
                    self._parent = (parent_id, parent)
                return template % (trace, span, parent, times, job_id.encode(), task_id.encode())
        return self._encode_any(record)

    def _template(self, task: ClaimedTask, outcome: Outcome, parent: bool) -> bytes | None:
        """What ``_encode_any`` makes of such a span, as a bytes % template (None if a hole's
        stand-in bytes happen to occur elsewhere in it: such spans are encoded the long way)."""
        holes = [b"\x00" * 16, b"\x01" * 8, *([b"\x02" * 8] if parent else []), b"\x03" * 18,
                 b"\x04" * 36, b"\x05" * 36]  # fmt: skip
        probe = msgspec.structs.replace(task, job_id="\x04" * 36, task_id="\x05" * 36)
        sample = self._encode_parts(probe, holes[0], holes[1], holes[2] if parent else b"",
                                    holes[-3], outcome, None)  # fmt: skip
        template = sample.replace(b"%", b"%%")
        for hole in holes:
            if template.count(hole) != 1:
                return None
            template = template.replace(hole, b"%s")
        return template

    def _encode_any(self, record: SpanRecord) -> bytes:
        task, start_ns, end_ns, outcome_of, error = record
        trace, span, parent = self._ids(task)
        return self._encode_parts(task, trace, span, parent,
                                  _TIMES.pack(0x39, start_ns, 0x41, end_ns), outcome_of, error)  # fmt: skip

    def _encode_parts(
        self, task: ClaimedTask, trace: bytes, span: bytes, parent: bytes, times: bytes,
        outcome_of: Outcome, error: str | None,
    ) -> bytes:  # fmt: skip
        named = self._named.get((task.name, task.version))
        if named is None:
            identifier = _string_attribute("tilebox.task.identifier", f"{task.name}@{task.version}")
            named = self._named[(task.name, task.version)] = (
                _field(5, task.name.encode()) + b"\x30\x01",  # name; kind INTERNAL
                _field(9, identifier) + self._common,
            )
        outcome = self._outcomes.get(outcome_of.value)
        if outcome is None:
            outcome = self._outcomes[outcome_of.value] = _field(
                9, _string_attribute("tilebox.task.outcome", outcome_of.value)
            )
        attempt = self._attempts.get(task.attempts)
        if attempt is None:
            attempt = self._attempts[task.attempts] = _field(
                9, _int_attribute("tilebox.task.attempt", task.attempts + 1)
            )
        job = task.job_id.encode()
        task_id = task.task_id.encode()
        body = b"".join((
            b"\x0a\x10", trace, b"\x12\x08", span, b"\x22\x08" + parent if parent else b"",
            named[0], times, named[1], outcome,
            _prefix("tilebox.job.id", len(job)), job, _prefix("tilebox.task.id", len(task_id)),
            task_id, attempt,
            b"" if error is None  # Status{message, code ERROR}
            else _field(15, _field(2, error.encode()) + b"\x18\x02"),
        ))  # fmt: skip
        return b"\x12" + _varint(len(body)) + body


def export_request(resource: Mapping[str, str], spans: list[bytes]) -> bytes:
    """ExportTraceServiceRequest{resource_spans: [{resource, scope_spans: [{scope, spans}]}]}
    of ``spans``, each encoded as a ScopeSpans.spans field; the spans copied once."""
    attributes = b"".join(_field(1, _string_attribute(k, v)) for k, v in resource.items())
    scope = _field(1, _field(1, SCOPE.encode()))
    scope_length = len(scope) + sum(map(len, spans))
    scope_head = b"\x12" + _varint(scope_length)  # ResourceSpans.scope_spans
    encoded = _field(1, attributes)  # ResourceSpans.resource
    inner = len(encoded) + len(scope_head) + scope_length
    return b"".join([b"\x0a", _varint(inner), encoded, scope_head, scope, *spans])


# --- the exporter ---------------------------------------------------------------------------------


class SpanShipper:
    """Sends the spans of one process to one OTLP/HTTP endpoint, in batches, from a thread of its
    own: every EXPORT_SECONDS, sooner once EXPORT_BATCH are queued, and when flushed."""

    def __init__(self, otlp: Otlp, resource: Mapping[str, str]) -> None:
        self.otlp = otlp
        self.resource = dict(resource)
        self._queue: collections.deque[tuple[SpanEncoder, SpanRecord]] = collections.deque()
        self._wake = threading.Event()
        self._sending = threading.Lock()
        self._connection: http.client.HTTPConnection | None = None
        self.dropped = 0
        self.failed = 0  # spans whose export failed
        url = urllib.parse.urlsplit(otlp.endpoint)
        self._https = url.scheme == "https"
        self._host = url.netloc
        self._path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self._headers = {**otlp.headers, "Content-Type": "application/x-protobuf"}
        # The sending thread runs while runs trace: started by the first span, stopped when a run
        # ends (another run's next span starts it again), so no thread outlives the runners.
        self._thread: threading.Thread | None = None
        self._running = False
        self._starting = threading.Lock()

    def add(self, encoder: SpanEncoder, record: SpanRecord) -> None:
        if not self._running:
            self._start()
        queue = self._queue
        if len(queue) >= MAX_QUEUED_SPANS:
            self.dropped += 1
            return
        queue.append((encoder, record))
        if len(queue) == EXPORT_BATCH:
            self._wake.set()

    def flush(self) -> None:
        """Send every span queued now (in the caller's thread), and stop the sending thread."""
        with self._starting:
            thread, self._thread, self._running = self._thread, None, False
        if thread is not None:
            self._wake.set()
            thread.join()
        self._send_queued()

    def _start(self) -> None:
        with self._starting:
            if self._running:
                return
            self._running = True
            self._thread = threading.Thread(target=self._loop, name="tilebox-spans", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while self._running:
            self._wake.wait(EXPORT_SECONDS)
            self._wake.clear()
            try:
                self._send_queued()
            except Exception as exc:  # never let the thread die: later spans are sent
                log.warning("span export failed", error=f"{type(exc).__name__}: {exc}")

    def _send_queued(self) -> None:
        with self._sending:
            queue = self._queue
            while queue:
                batch = [queue.popleft() for _ in range(min(EXPORT_BATCH, len(queue)))]
                body = export_request(self.resource, [e.encode(r) for e, r in batch])
                if not self._post(body):
                    self.failed += len(batch)
            if self.dropped:
                log.warning("spans dropped: the exporter could not keep up",
                            spans=self.dropped)  # fmt: skip
                self.dropped = 0

    def _post(self, body: bytes) -> bool:
        """POST one export request; once more on a new connection if the kept one was closed."""
        for attempt in (1, 2):
            try:
                connection = self._connection or self._connect()
                connection.request("POST", self._path, body, self._headers)
                response = connection.getresponse()
                response.read()
                if response.status < 300:
                    return True
                log.warning("span export refused", status=response.status,
                            endpoint=self.otlp.endpoint)  # fmt: skip
                return False
            except (OSError, http.client.HTTPException) as exc:
                self._close()
                if attempt == 2:
                    log.warning("span export failed", error=str(exc), endpoint=self.otlp.endpoint)
        return False

    def _connect(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        self._connection = kind(self._host, timeout=self.otlp.timeout)
        return self._connection

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


_shippers: dict[tuple[str, tuple[tuple[str, str], ...]], SpanShipper] = {}
_lock = threading.Lock()


def shipper(otlp: Otlp, resource: Mapping[str, str]) -> SpanShipper:
    """The process's exporter to ``otlp``: the runners of a process share its thread."""
    key = (repr(otlp), tuple(sorted(resource.items())))
    with _lock:
        found = _shippers.get(key)
        if found is None:
            found = _shippers[key] = SpanShipper(otlp, resource)
            log.info("exporting traces", endpoint=otlp.endpoint)
        return found


# --- the hooks ------------------------------------------------------------------------------------


def span_ids(task: ClaimedTask) -> tuple[bytes, bytes, bytes]:
    """(trace, span, parent span) of an execution of ``task``: the job's trace; the task's first
    execution, its own span under its parent task's (none for a root task); a later one, a span
    of its own under the first's."""
    trace = trace_bytes(task.job_id)
    if task.attempts:
        return (
            trace,
            retry_span_bytes(task.task_id, task.entry, task.attempts),
            span_bytes(task.task_id),
        )
    parent = parent_task_id(task.chain)
    return trace, span_bytes(task.task_id), span_bytes(parent) if parent is not None else b""


class TraceHooks(RunnerHooks):
    """A span per task execution; the task's own spans (``context.tracer``) are its children.
    While a task runs this records its times only: its ids are made and its span encoded when
    the exporter sends it."""

    wraps_execution = True

    def __init__(self, settings: Settings, runner_id: str, release_id: str | None) -> None:
        assert settings.otlp is not None
        self.otlp = settings.otlp
        self.resource = {"service.name": settings.otlp.service_name, "tilebox.team": settings.team}
        self.shipper = shipper(self.otlp, self.resource)
        self.encoder = SpanEncoder(runner_id, release_id)
        self._make_tracer: Callable[[], Any] = self._tracer

    def execute(self, task: ClaimedTask, run: Execute) -> Finish:
        current = CURRENT
        current.tracer, current.task = self._make_tracer, task
        start = time.time_ns()
        try:
            finish = run(task)
        finally:
            end = time.time_ns()
            current.tracer = current.task = None
            if current.token is not None:
                _detach(current.token)
                current.token = None
        outcome = finish.outcome
        error = None if outcome is Outcome.COMPLETED else _error(finish)
        self.shipper.add(self.encoder, (task, start, end, outcome, error))
        return finish

    def _tracer(self) -> Any:
        """The SDK's tracer, the executing task's span made current for it (once per task)."""
        current = CURRENT
        if current.token is None:
            trace, span, _ = span_ids(current.task)
            current.token = _attach(trace, span)
        return user_tracer(self.otlp, self.resource)

    def run_ended(self) -> None:
        try:
            self.shipper.flush()
            flush_user_spans()
        except Exception as exc:  # called while a run ends: it must end however this goes
            log.warning("span export failed", error=f"{type(exc).__name__}: {exc}")


def _error(finish: Finish) -> str | None:
    """The error of a failed execution (its span's status is ERROR then), else None."""
    if finish.outcome not in FAILED:
        return None
    return next((e.error for e in finish.events if isinstance(e, TaskFailed)), "")[:1000]


# --- the spans tasks make themselves: the OpenTelemetry SDK, imported on first use --------------

_user_tracers: dict[str, tuple[Any, Any]] = {}  # configuration -> (tracer, its provider)


def user_tracer(otlp: Otlp, resource: Mapping[str, str]) -> Any:
    key = repr((otlp, sorted(resource.items())))
    with _lock:
        found = _user_tracers.get(key)
        if found is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            provider = TracerProvider(resource=Resource.create(dict(resource)))
            exporter = OTLPSpanExporter(endpoint=otlp.endpoint, headers=dict(otlp.headers),
                                        timeout=otlp.timeout)  # fmt: skip
            provider.add_span_processor(BatchSpanProcessor(exporter))
            found = _user_tracers[key] = (provider.get_tracer("tilebox.task"), provider)
        return found[0]


def flush_user_spans() -> None:
    for _, provider in list(_user_tracers.values()):
        provider.force_flush()


def _attach(trace: bytes, span: bytes) -> object:
    from opentelemetry import context
    from opentelemetry import trace as api

    parent = api.NonRecordingSpan(api.SpanContext(
        int.from_bytes(trace), int.from_bytes(span), is_remote=False,
        trace_flags=api.TraceFlags(api.TraceFlags.SAMPLED),
    ))  # fmt: skip
    return context.attach(api.set_span_in_context(parent))


def _detach(token: object) -> None:
    from opentelemetry import context

    context.detach(token)  # type: ignore[arg-type]
