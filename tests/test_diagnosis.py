"""Pure rules of issue 16, as tables: diagnoses of jobs and retries, names, the input check."""

from __future__ import annotations

import datetime as dt
import itertools
import re

import pytest

from tilebox_core.domain import control
from tilebox_core.domain.diagnosis import (
    deployment_gap,
    failing_releases_still_deployed,
    why_queued,
)
from tilebox_core.domain.errors import InvalidInput
from tilebox_core.domain.events import Event, Origin, ReleaseTask
from tilebox_core.domain.identifiers import TaskIdentifier, validate_name
from tilebox_core.domain.jobs import Job, TaskInfo, validated_input
from tilebox_core.domain.projection import ControlState, apply

AT = dt.datetime(2026, 11, 21, 14, 2, tzinfo=dt.UTC)
_ids = itertools.count()


def origin() -> Origin:
    return Origin("t", "user:test", AT, lambda: f"id-{next(_ids)}")


def run(state: ControlState, events: list[Event]) -> None:
    for event in events:
        apply(state, event)


def release(state: ControlState, workflow: str, digest: str, *tasks: tuple[str, str]) -> str:
    if workflow not in state.workflows:
        run(state, control.create_workflow(state, origin(), workflow))
    release_id, events = control.publish_release(
        state, origin(), workflow=workflow, digest=digest, size=1,
        tasks=[ReleaseTask(n, v) for n, v in tasks], runner="m:r", command=None,
        fingerprint=digest,
    )  # fmt: skip
    run(state, events)
    return release_id


def deploy(state: ControlState, release_id: str, cluster: str = "default") -> None:
    run(state, control.deploy(state, origin(), clusters=[cluster], release_id=release_id).events)


def task(state: str, release_id: str | None = None, cluster: str = "default") -> TaskInfo:
    return TaskInfo(id=f"task-{next(_ids)}", name="s.Process", version="v1.0", state=state,
                    parent_id=None, cluster=cluster, runner_id=None, release_id=release_id,
                    attempts=1, compute_seconds=0.0)  # fmt: skip


def job(*tasks: TaskInfo, cluster: str = "default", state: str = "failed") -> Job:
    return Job(id="job", name="j", cluster=cluster, state=state, submitted_at=AT,
               submitted_by="user:test", total_tasks=len(tasks), tasks_by_state={},
               compute_seconds=0.0, progress=[], tasks=list(tasks))  # fmt: skip


def test_a_retry_is_warned_about_while_the_failing_release_is_deployed() -> None:
    state = ControlState()
    broken = release(state, "scenes", "sha256:1", ("s.Process", "v1.0"))
    deploy(state, broken)
    failed = job(task("computed", broken), task("failed", broken), task("failed", broken))
    (warning,) = failing_releases_still_deployed(failed, state)
    assert warning.startswith(f"release {broken} that failed s.Process is still the one deployed")
    assert "workflow 'scenes' on cluster 'default'" in warning

    assert failing_releases_still_deployed(job(task("failed", None)), state) == []  # never claimed
    assert failing_releases_still_deployed(job(task("failed", broken, "dev")), state) == []
    fixed = release(state, "scenes", "sha256:2", ("s.Process", "v1.1"))
    deploy(state, fixed)
    assert failing_releases_still_deployed(failed, state) == []
    run(state, control.undeploy(state, origin(), workflow="scenes", clusters=[]).events)
    assert failing_releases_still_deployed(failed, state) == []  # nothing deployed: no claim


def test_queued_jobs_of_a_deleted_cluster_say_so() -> None:
    state = ControlState()
    run(state, control.create_cluster(state, origin(), "dev"))
    waiting = job(task("queued"), cluster="dev", state="queued")
    assert "no release deployed on cluster 'dev'" in why_queued(waiting, state, [])[0]
    run(state, control.delete_cluster(state, origin(), "dev"))
    (reason,) = why_queued(waiting, state, [])
    assert reason.startswith("cluster 'dev' was deleted (cluster deleted)")
    assert why_queued(job(task("failed"), cluster="dev"), state, []) == []  # nothing queued


def test_the_queued_tasks_of_a_failed_job_are_held_until_it_is_retried() -> None:
    state = ControlState()
    run(state, control.create_cluster(state, origin(), "dev"))
    held = job(task("failed"), task("queued"), task("queued"), cluster="dev")
    assert why_queued(held, state, []) == [
        "2 queued tasks are held because the job failed: fix what failed, then "
        "'tilebox job retry job' resumes them"
    ]


def test_a_recreated_cluster_has_another_identity() -> None:
    state = ControlState()
    run(state, control.create_cluster(state, origin(), "dev"))
    first = state.clusters["dev"].id
    run(state, control.delete_cluster(state, origin(), "dev"))
    run(state, control.create_cluster(state, origin(), "dev"))
    assert first and state.clusters["dev"].id and state.clusters["dev"].id != first
    assert state.clusters["default"].id is None and state.clusters["default"].created_at is None


@pytest.mark.parametrize(
    ("deployed", "wanted", "gap"),
    [
        ([], "v1.0", "no release deployed on cluster 'default' provides task 's.Process'"),
        ([("s.Process", "v1.0")], "v1.0", ""),
        ([("s.Process", "v1.2")], "v1.1", ""),
        ([("s.Process", "v1.0")], "v1.1", "only incompatible versions are deployed on cluster "
                                          "'default' (v1.0); it needs v1.x with x >= 1"),
        ([("s.Process", "v2.0")], "v1.0", "only incompatible versions"),
        ([("s.Other", "v1.0")], "v1.0", "no release deployed"),
    ],
)  # fmt: skip
def test_deployment_gap(deployed: list[tuple[str, str]], wanted: str, gap: str) -> None:
    state = ControlState()
    if deployed:
        deploy(state, release(state, "scenes", "sha256:1", *deployed))
    found = deployment_gap(TaskIdentifier("s.Process", wanted), "default", state)
    assert (gap in found) if gap else found == ""


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("Prod EU", None),
        ("x" * 128, None),
        ("Zürich 東京 👩\u200d💻", None),
        ("x" * 129, "129 characters long, over the limit of 128"),
        ("", "cannot be empty"),
        ("  ", "cannot be empty"),
        ("tab\there", "control character U+0009"),
        ("esc\x1b[31m", "control character U+001B"),
        ("rtl\u202eevil", "control character U+202E"),
        ("line\u2028break", "control character U+2028"),
    ],
)
def test_names(name: str, problem: str | None) -> None:
    if problem is None:
        assert validate_name(name, "cluster name") == name
    else:
        with pytest.raises(InvalidInput, match=re.escape(problem)):
            validate_name(name, "cluster name")


OBJECT = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}


@pytest.mark.parametrize(
    ("schema", "value", "problem"),
    [
        (OBJECT, '{"a": "x"}', None),
        (OBJECT, '{"a": "x", "b": 1}', "unknown field 'b' (the task's fields: a)"),
        ({**OBJECT, "additionalProperties": True}, '{"a": "x", "b": 1}', None),
        ({**OBJECT, "additionalProperties": {"type": "integer"}}, '{"a": "x", "b": 1}', None),
        ({**OBJECT, "additionalProperties": {"type": "integer"}}, '{"a": "x", "b": "y"}',
         "b: 'y' is not of type 'integer'"),
        ({"$ref": "#/$defs/T", "$defs": {"T": OBJECT}}, '{"a": "x", "c": 1}', "unknown field 'c'"),
        ({"type": "object", "properties": {"inner": OBJECT}}, '{"inner": {"a": "x", "d": 1}}',
         "inner: unknown field 'd'"),
        (None, '{"anything": 1}', None),  # no deployed schema: nothing to check against
        (OBJECT, '{"a": "' + "x" * 64 + '"}', "is 73 bytes, over the limit of 64 bytes"),
    ],
)  # fmt: skip
def test_input_check(schema: dict | None, value: str, problem: str | None) -> None:  # type: ignore[type-arg]
    if problem is None:
        assert validated_input(value, schema, "s.T@v1.0", max_bytes=64) == value
    else:
        with pytest.raises(InvalidInput, match=re.escape(problem)):
            validated_input(value, schema, "s.T@v1.0", max_bytes=64)
