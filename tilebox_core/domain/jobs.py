"""Jobs as readers see them, and the pure rules about them: views, states, input checks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import msgspec

from .errors import InvalidInput
from .events import ReleaseTask
from .identifiers import TaskIdentifier, can_run, make_identifier, parse_version
from .projection import ControlState
from .tasks import JobState, TaskError, TaskState, job_state_of


class TaskInfo(msgspec.Struct, frozen=True):
    id: str
    name: str
    version: str
    state: TaskState
    parent_id: str | None
    cluster: str
    runner_id: str | None
    release_id: str | None
    attempts: int
    compute_seconds: float
    # ids of the sibling tasks this one waits for; read only when asked (find with_dependencies)
    depends_on: list[str] = []
    display: str | None = None  # the display name the task set (current_task.display)
    error: TaskError | None = None  # why it failed for good (failed, failed_optional)


class Progress(msgspec.Struct, frozen=True):
    """A job's progress indicator, as in Tilebox: the work its tasks added (``total``) and marked
    ``done``; ``label`` None for the default indicator (``context.progress()``)."""

    label: str | None
    total: int
    done: int


class ExecutionStats(msgspec.Struct, frozen=True):
    """How a job ran, as Tilebox's ``job.execution_stats``: when its first task started and its
    last one stopped (the server's clock; None before), the compute time of its tasks, the time
    between those two, their ratio (how many tasks ran at once on average), and its tasks."""

    first_task_started_at: dt.datetime | None = None
    last_task_stopped_at: dt.datetime | None = None
    compute_time: dt.timedelta = dt.timedelta(0)
    elapsed_time: dt.timedelta = dt.timedelta(0)
    parallelism: float = 0.0
    total_tasks: int = 0
    tasks_by_state: dict[str, int] = {}  # TaskState -> count, states with none left out


def execution_stats(
    runs: Iterable[tuple[int, int]], total_tasks: int, tasks_by_state: dict[str, int]
) -> ExecutionStats:
    """A job's execution stats from its tasks' runs, (finished_ms, compute_ms) of each finished
    task (finished_ms in the server's clock, written by the finish script), and its counts: a
    task started its compute time before it finished."""
    first_ms: int | None = None
    last_ms: int | None = None
    compute_ms = 0
    for finished, ran_ms in runs:
        compute_ms += ran_ms
        if finished:
            started = finished - ran_ms
            first_ms = started if first_ms is None else min(first_ms, started)
            last_ms = finished if last_ms is None else max(last_ms, finished)
    first = _from_ms(first_ms) if first_ms is not None else None
    last = _from_ms(last_ms) if last_ms is not None else None
    elapsed = last - first if first is not None and last is not None else dt.timedelta(0)
    compute_time = dt.timedelta(milliseconds=compute_ms)
    return ExecutionStats(
        first_task_started_at=first, last_task_stopped_at=last, compute_time=compute_time,
        elapsed_time=elapsed, parallelism=round(compute_time / elapsed, 3) if elapsed else 0.0,
        total_tasks=total_tasks, tasks_by_state=tasks_by_state,
    )  # fmt: skip


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _from_ms(ms: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(milliseconds=ms)


class Job(msgspec.Struct, frozen=True):
    id: str
    name: str
    cluster: str
    state: JobState
    submitted_at: dt.datetime
    submitted_by: str
    total_tasks: int
    tasks_by_state: dict[str, int]
    compute_seconds: float
    progress: list[Progress]
    tasks: list[TaskInfo] = []
    execution_stats: ExecutionStats = msgspec.field(default_factory=ExecutionStats)
    # Set when the job was removed from Redis (its retention passed, or ``job delete``): the
    # view is then folded from its history (domain.retention), and ``reason`` expired | deleted.
    removed_at: dt.datetime | None = None
    removed_reason: str | None = None


def job_state(fields: dict[str, str]) -> JobState:
    """A job's state from the counters of its hash (see Keys.job)."""
    return job_state_of(
        cancelled=fields.get("cancelled") == "1",
        failed=int(fields.get("failed", 0)) > 0,
        complete=int(fields.get("open", 1)) == 0,
        # a finish that records its claim counts a result instead of setting "started"
        started=fields.get("started") == "1"
        or int(fields.get("computed", 0)) > 0
        or int(fields.get("skipped", 0)) > 0,
    )


def deployed_task(
    state: ControlState, cluster: str, name: str, version: str | None
) -> ReleaseTask | None:
    """The task of a release deployed on ``cluster`` that would run ``name``@``version``.

    Without a version: the newest deployed version of that name (what ``job submit`` defaults to).
    """
    provided = [
        task
        for deployment in state.deployments.get(cluster, {}).values()
        for task in state.releases[deployment.release_id].tasks
        if task.name == name
    ]
    if version is None:
        return max(provided, key=lambda t: parse_version(t.version), default=None)
    wanted = make_identifier(name, version)
    runnable = [t for t in provided if can_run(TaskIdentifier(t.name, t.version), wanted)]
    return min(runnable, key=lambda t: parse_version(t.version), default=None)


MAX_INPUT_BYTES = 1024 * 1024
"""Default limit of one task's input JSON: inputs travel in every lane entry and task hash; pass
large data by reference (a URL or an object key)."""


def validated_input(
    input_json: str, schema: dict[str, Any] | None, task: str, max_bytes: int = MAX_INPUT_BYTES
) -> str:
    """``input_json`` if it is a JSON object of at most ``max_bytes`` that is valid under
    ``schema`` (when known); else InvalidInput. Properties the schema does not declare are refused
    unless it allows extra ones (a task's fields are its whole input: an unknown one is a typo)."""
    try:
        size = len(input_json.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            f"task input for {task} is not valid UTF-8 text (at character {exc.start}); "
            "fix the encoding of the input"
        ) from None
    if size > max_bytes:
        raise InvalidInput(
            f"task input for {task} is {size:,} bytes, over the limit of {max_bytes:,} bytes; pass "
            "large data by reference (a URL or object key), or raise --max-input-bytes"
        )
    try:
        value = _decoded_input(input_json, task)
        errors = [] if not schema or not isinstance(value, dict) else _schema_errors(value, schema)
    except RecursionError:
        raise InvalidInput(
            f"task input for {task} is nested too deeply to decode; flatten the JSON document"
        ) from None
    if not isinstance(value, dict):
        raise InvalidInput(
            f'task input for {task} must be a JSON object, like {{"scene_id": "S2A"}}'
        )
    if errors:
        problems = "; ".join(errors[:5])
        raise InvalidInput(f"task input does not match the schema of {task}: {problems}")
    return input_json


def _decoded_input(input_json: str, task: str) -> Any:
    try:
        return msgspec.json.decode(input_json)
    except msgspec.DecodeError as exc:
        # msgspec calls a lone surrogate escape ("\ud800") "truncated"; Python's decoder accepts
        # it, which tells the two apart and finds the string to name.
        import json

        try:
            json.loads(input_json)
        except ValueError:
            raise InvalidInput(f"task input for {task} is not valid JSON: {exc}") from None
        raise InvalidInput(
            f"task input for {task} contains an unpaired UTF-16 surrogate escape (like \\ud800), "
            "which is not a character; remove it or escape both halves of the pair"
        ) from None


def _schema_errors(value: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(_closed(schema))
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
    return [f"{'.'.join(map(str, e.path)) or 'input'}: {_problem(e)}" for e in errors]


def _problem(error: Any) -> str:
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        declared = error.schema.get("properties", {})
        unknown = ", ".join(repr(k) for k in error.instance if k not in declared)
        return f"unknown field {unknown} (the task's fields: {', '.join(declared) or 'none'})"
    return str(error.message)


_OPEN_KEYWORDS = ("additionalProperties", "patternProperties", "unevaluatedProperties")


def _closed(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` on every object schema that declares its
    properties and says nothing about others (msgspec's schemas of Structs leave it out)."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: _closed(item) for key, item in schema.items()}
    if "properties" in closed and not any(key in closed for key in _OPEN_KEYWORDS):
        closed["additionalProperties"] = False
    return closed
