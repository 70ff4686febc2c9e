"""Jobs as readers see them, and the pure rules about them: views, states, input checks."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from .errors import InvalidInput
from .events import ReleaseTask
from .identifiers import TaskIdentifier, can_run, make_identifier, parse_version
from .projection import ControlState
from .tasks import JobState, TaskState, job_state_of


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


class Progress(msgspec.Struct, frozen=True):
    label: str
    done: int
    total: int


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


def validated_input(input_json: str, schema: dict[str, Any] | None, task: str) -> str:
    """``input_json`` if it is a JSON object valid under ``schema`` (when known); else InvalidInput."""
    try:
        value = msgspec.json.decode(input_json)
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"task input for {task} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInput(
            f'task input for {task} must be a JSON object, like {{"scene_id": "S2A"}}'
        )
    if schema:
        import jsonschema

        errors = sorted(
            jsonschema.Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.path)
        )
        if errors:
            problems = "; ".join(
                f"{'.'.join(map(str, e.path)) or 'input'}: {e.message}" for e in errors[:5]
            )
            raise InvalidInput(f"task input does not match the schema of {task}: {problems}")
    return input_json
