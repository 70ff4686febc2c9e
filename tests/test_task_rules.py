"""The task plane's pure rules and its fold, as tables: no server."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from tilebox_core.domain.events import (
    Event,
    JobCancelled,
    JobRetried,
    JobSubmitted,
    TaskClaimed,
    TaskCompleted,
    TaskFailed,
    TaskReleased,
    TaskSkipped,
    TaskSubmitted,
    UnknownEvent,
)
from tilebox_core.domain.jobs import job_state
from tilebox_core.domain.task_projection import TaskPlane, fold
from tilebox_core.domain.tasks import (
    ClaimStatus,
    FailureReason,
    FinishStatus,
    JobState,
    Outcome,
    TaskState,
    failure_outcome,
    is_poison,
    job_state_of,
    nearest_scope,
    subtask_scopes,
)

ERROR, INPUT = FailureReason.ERROR, FailureReason.INPUT


@pytest.mark.parametrize(
    ("reason", "attempts", "max_retries", "optional", "outcome"),
    [
        (ERROR, 0, 0, False, Outcome.FAILED),
        (ERROR, 0, 1, False, Outcome.RETRY),
        (ERROR, 1, 1, False, Outcome.FAILED),
        (ERROR, 1, 3, False, Outcome.RETRY),
        (ERROR, 3, 3, False, Outcome.FAILED),
        (ERROR, 0, 0, True, Outcome.FAILED_OPTIONAL),
        (ERROR, 0, 2, True, Outcome.RETRY),  # an optional task is retried like any other
        (ERROR, 2, 2, True, Outcome.FAILED_OPTIONAL),
        (INPUT, 0, 5, False, Outcome.FAILED),  # bad input fails the same way every time
        (INPUT, 0, 5, True, Outcome.FAILED_OPTIONAL),
    ],
)
def test_a_failed_run_is_retried_while_attempts_are_left(
    reason: FailureReason, attempts: int, max_retries: int, optional: bool, outcome: Outcome
) -> None:
    assert failure_outcome(reason, attempts, max_retries, optional) is outcome


@pytest.mark.parametrize(
    ("attempts", "max_retries", "optional", "nested", "outcome"),
    [
        (0, 0, False, True, Outcome.FAILED_NESTED),  # inside an optional subtree
        (0, 1, False, True, Outcome.RETRY),  # retried first, like any task
        (0, 0, True, True, Outcome.FAILED_OPTIONAL),  # optional itself: its dependants run
        (0, 0, False, False, Outcome.FAILED),
    ],
)
def test_a_failure_inside_an_optional_subtree_does_not_fail_the_job(
    attempts: int, max_retries: int, optional: bool, nested: bool, outcome: Outcome
) -> None:
    assert failure_outcome(ERROR, attempts, max_retries, optional, nested) is outcome
    assert failure_outcome(INPUT, attempts, max_retries, optional, nested) is (
        outcome if outcome is not Outcome.RETRY else Outcome.FAILED_NESTED
    )


@pytest.mark.parametrize(
    ("scopes", "task", "optional", "subtasks", "nearest"),
    [
        ("", "t", False, "", None),
        ("", "t", True, "t", None),
        ("a", "t", False, "a", "a"),
        ("a", "t", True, "a,t", "a"),
        ("a,b", "t", False, "a,b", "b"),  # the nearest optional ancestor bounds a failure
    ],
)
def test_the_scopes_of_subtasks_are_their_optional_ancestors(
    scopes: str, task: str, optional: bool, subtasks: str, nearest: str | None
) -> None:
    assert subtask_scopes(scopes, task, optional) == subtasks
    if nearest is not None:
        assert nearest_scope(scopes) == nearest


@pytest.mark.parametrize(
    ("deliveries", "max_deliveries", "poison"),
    [(1, 5, False), (5, 5, False), (6, 5, True), (1, 0, True), (2, 1, True)],
)
def test_a_task_delivered_too_often_is_poison(
    deliveries: int, max_deliveries: int, poison: bool
) -> None:
    assert is_poison(deliveries, max_deliveries) is poison


@pytest.mark.parametrize(
    ("cancelled", "failed", "complete", "started", "state"),
    [
        (False, False, False, False, JobState.QUEUED),
        (False, False, False, True, JobState.RUNNING),
        (False, False, True, True, JobState.COMPLETED),
        (False, True, False, True, JobState.FAILED),
        (False, True, True, True, JobState.FAILED),
        (True, False, False, False, JobState.CANCELLED),
        (True, True, True, True, JobState.CANCELLED),
    ],
)
def test_job_states_rank_cancelled_failed_completed_running_queued(
    cancelled: bool, failed: bool, complete: bool, started: bool, state: JobState
) -> None:
    assert job_state_of(cancelled=cancelled, failed=failed, complete=complete,
                        started=started) is state  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "state"),
    [
        ({"open": "1"}, "queued"),
        ({"open": "1", "started": "1"}, "running"),
        ({"open": "2", "computed": "1"}, "running"),  # a claim recorded with its result
        ({"open": "1", "skipped": "1"}, "running"),
        ({"open": "0"}, "completed"),
        ({"open": "0", "failed": "1"}, "failed"),
        ({"open": "1", "failed": "0", "started": "1"}, "running"),  # failed, then retried
        ({"open": "1", "cancelled": "1", "failed": "1"}, "cancelled"),
        ({}, "queued"),
    ],
)
def test_a_jobs_state_from_the_counters_of_its_hash(fields: dict[str, str], state: str) -> None:
    assert job_state(fields) == state


def test_the_wire_values_are_those_the_scripts_and_older_data_use() -> None:
    assert [s.value for s in TaskState] == [
        "waiting", "queued", "running", "computed", "failed", "failed_optional", "cancelled",
        "skipped",
    ]  # fmt: skip
    assert [s.value for s in JobState] == ["queued", "running", "completed", "failed", "cancelled"]
    assert [o.value for o in Outcome] == [
        "completed", "retry", "failed", "failed_optional", "released", "failed_nested", "skipped",
    ]  # fmt: skip
    assert [s.value for s in ClaimStatus] == [
        "ok", "stale", "cancelled", "poisoned", "taken", "held", "skip",
    ]  # fmt: skip
    assert {s.name: s.value for s in FinishStatus} == {"FENCED": 0, "FINISHED": 1, "SUPERSEDED": 2}
    assert [r.value for r in FailureReason] == ["error", "input", "poison", "unavailable"]


# --- the fold, on logs written by hand ------------------------------------------------------------


class Log:
    """Builds a task log event by event, with fixed stamps."""

    def __init__(self) -> None:
        self.events: list[Event | UnknownEvent] = []
        self._ids = itertools.count()

    def __call__(self, kind: type[Event], **fields: object) -> Log:
        stamp = {"id": f"e{next(self._ids)}", "at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                 "actor": "test", "team": "t"}  # fmt: skip
        self.events.append(kind(**stamp, **fields))
        return self

    def job(self, job_id: str, *roots: str, **task: object) -> Log:
        self(JobSubmitted, job_id=job_id, name=job_id, cluster="dev", root_task_ids=list(roots))
        for root in roots:
            self.task(job_id, root, **task)
        return self

    def task(self, job_id: str, task_id: str, **fields: object) -> Log:
        return self(TaskSubmitted, job_id=job_id, task_id=task_id, name="T", version="v1.0",
                    cluster="dev", input="{}", **fields)  # fmt: skip

    def ran(self, job_id: str, task_id: str, *subtasks: str, runner: str = "r") -> Log:
        self(TaskClaimed, job_id=job_id, task_id=task_id, runner_id=runner)
        return self(TaskCompleted, job_id=job_id, task_id=task_id, runner_id=runner,
                    subtask_ids=list(subtasks))  # fmt: skip

    def failed(self, job_id: str, task_id: str, **fields: object) -> Log:
        self(TaskClaimed, job_id=job_id, task_id=task_id, runner_id="r")
        return self(TaskFailed, job_id=job_id, task_id=task_id, runner_id="r", error="x", **fields)

    def plane(self) -> TaskPlane:
        return fold(self.events)


def states(plane: TaskPlane) -> dict[str, str]:
    return {task_id: task.state.value for task_id, task in plane.tasks.items()}


def test_a_parent_completes_once_its_subtasks_have_and_dependants_wait_for_it() -> None:
    log = Log().job("j", "root").ran("j", "root", "a", "b")
    log.task("j", "a", parent_id="root").task("j", "b", parent_id="root", depends_on=["a", "a"])
    assert states(log.plane()) == {"root": "computed", "a": "queued", "b": "waiting"}
    log.ran("j", "a", "a1").task("j", "a1", parent_id="a")
    assert states(log.plane())["b"] == "waiting"  # a is complete only once a1 is
    log.ran("j", "a1")
    assert states(log.plane())["b"] == "queued"
    assert log.plane().jobs["j"].state is JobState.RUNNING
    log.ran("j", "b")
    assert log.plane().jobs["j"].state is JobState.COMPLETED
    assert log.plane().jobs["j"].tasks == ["root", "a", "b", "a1"]


def test_staged_subtasks_count_before_their_parent_completes() -> None:
    log = Log().job("j", "root")
    log(TaskClaimed, job_id="j", task_id="root", runner_id="r")
    for child in ("s0", "s1"):  # created chunk by chunk, while the root runs
        log.task("j", child, parent_id="root")
    log(TaskCompleted, job_id="j", task_id="root", runner_id="r", subtask_ids=["s0", "s1"])
    assert log.plane().tasks["root"].open == 2  # its two subtasks
    log.ran("j", "s0").ran("j", "s1")
    assert log.plane().jobs["j"].state is JobState.COMPLETED


def test_retries_count_attempts_and_a_job_retry_resets_them() -> None:
    log = Log().job("j", "t", max_retries=1)
    log.failed("j", "t", will_retry=True)
    assert (log.plane().tasks["t"].state, log.plane().tasks["t"].attempts) == ("queued", 1)
    log.failed("j", "t")
    plane = log.plane()
    assert (plane.tasks["t"].state, plane.tasks["t"].attempts) == ("failed", 2)
    assert plane.jobs["j"].state is JobState.FAILED
    log(JobRetried, job_id="j", task_ids=["t"])
    plane = log.plane()
    assert (plane.tasks["t"].state, plane.tasks["t"].attempts) == ("queued", 0)
    assert plane.tasks["t"].runner is None and plane.jobs["j"].state is JobState.RUNNING
    log.ran("j", "t")
    assert log.plane().jobs["j"].state is JobState.COMPLETED


def test_a_failed_optional_task_completes_and_its_dependants_run() -> None:
    log = Log().job("j", "root").ran("j", "root", "opt", "after")
    log.task("j", "opt", parent_id="root", optional=True)
    log.task("j", "after", parent_id="root", depends_on=["opt"])
    log.failed("j", "opt")
    plane = log.plane()
    assert states(plane) == {"root": "computed", "opt": "failed_optional", "after": "queued"}
    assert plane.tasks["opt"].attempts == 1 and plane.jobs["j"].state is JobState.RUNNING
    log.ran("j", "after")
    assert log.plane().jobs["j"].state is JobState.COMPLETED


def test_a_failure_inside_an_optional_subtree_skips_the_rest_of_it() -> None:
    # root -> opt (optional) -> step -> [a, b, c]; after (depends on step) under opt; other
    log = Log().job("j", "root").ran("j", "root", "opt", "other")
    log.task("j", "opt", parent_id="root", optional=True).task("j", "other", parent_id="root")
    log.ran("j", "opt", "step", "after")
    log.task("j", "step", parent_id="opt").task("j", "after", parent_id="opt", depends_on=["step"])
    log.ran("j", "step", "a", "b", "c")
    for child in "abc":
        log.task("j", child, parent_id="step")
    log.ran("j", "a").failed("j", "b")  # nested in opt: failed_optional, opt's rest skipped
    plane = log.plane()
    assert states(plane)["b"] == "failed_optional" and plane.jobs["j"].skipped == {"opt"}
    assert plane.jobs["j"].state is JobState.RUNNING
    log(TaskSkipped, job_id="j", task_id="c", runner_id="r")  # a runner received it
    assert states(log.plane())["after"] == "queued"  # step complete: its dependant queued...
    log(TaskSkipped, job_id="j", task_id="after", runner_id="r")  # ...and skipped in turn
    log.ran("j", "other")
    plane = log.plane()
    assert states(plane) == {
        "root": "computed", "opt": "computed", "other": "computed", "step": "computed",
        "after": "skipped", "a": "computed", "b": "failed_optional", "c": "skipped",
    }  # fmt: skip
    assert plane.jobs["j"].state is JobState.COMPLETED


def test_a_completion_in_a_skipped_subtree_creates_no_subtasks() -> None:
    log = Log().job("j", "root").ran("j", "root", "opt")
    log.task("j", "opt", parent_id="root", optional=True)
    log.ran("j", "opt", "bad", "slow").task("j", "bad", parent_id="opt")
    log.task("j", "slow", parent_id="opt")
    log(TaskClaimed, job_id="j", task_id="slow", runner_id="r")
    log.failed("j", "bad")
    log(TaskCompleted, job_id="j", task_id="slow", runner_id="r", subtask_ids=["late"])
    log.task("j", "late", parent_id="slow")  # logged, not created
    plane = log.plane()
    assert "late" not in plane.tasks and plane.jobs["j"].state is JobState.COMPLETED


def test_a_failure_of_an_optional_task_inside_an_optional_subtree_skips_nothing() -> None:
    log = Log().job("j", "root").ran("j", "root", "opt").task("j", "opt", parent_id="root",
                                                                optional=True)  # fmt: skip
    log.ran("j", "opt", "inner", "next").task("j", "inner", parent_id="opt", optional=True)
    log.task("j", "next", parent_id="opt", depends_on=["inner"])
    log.failed("j", "inner")
    plane = log.plane()
    assert states(plane)["next"] == "queued" and plane.jobs["j"].skipped == set()


def test_a_poison_task_fails_its_job_even_when_optional() -> None:
    log = Log().job("j", "t", optional=True)
    log(TaskFailed, job_id="j", task_id="t", runner_id="r2", error="x", reason="poison")
    plane = log.plane()
    assert (plane.tasks["t"].state, plane.tasks["t"].attempts, plane.tasks["t"].runner) == (
        "failed", 0, "r2",
    )  # fmt: skip
    assert plane.jobs["j"].state is JobState.FAILED


def test_a_cancelled_job_hands_out_no_further_tasks() -> None:
    log = Log().job("j", "root", "other", max_retries=1)
    log(TaskClaimed, job_id="j", task_id="root", runner_id="r")
    log(TaskClaimed, job_id="j", task_id="other", runner_id="r")
    log(JobCancelled, job_id="j")
    # a running task finishes, without the subtasks it names (their events are logged anyway)
    log(TaskCompleted, job_id="j", task_id="root", runner_id="r", subtask_ids=["child"])
    log.task("j", "child", parent_id="root")
    log(TaskFailed, job_id="j", task_id="other", runner_id="r", error="x", will_retry=True)
    plane = log.plane()
    assert states(plane) == {"root": "computed", "other": "cancelled"}
    assert plane.jobs["j"].state is JobState.CANCELLED
    assert plane.jobs["j"].tasks == ["root", "other"]


def test_a_release_queues_a_task_again_without_an_owner() -> None:
    log = Log().job("j", "t")
    log(TaskClaimed, job_id="j", task_id="t", runner_id="r", release_id="rel")
    log(TaskReleased, job_id="j", task_id="t", runner_id="r")
    plane = log.plane()
    assert (plane.tasks["t"].state, plane.tasks["t"].runner, plane.tasks["t"].release) == (
        "queued", None, None,
    )  # fmt: skip
    assert plane.jobs["j"].state is JobState.RUNNING  # a claim was recorded


def test_events_of_unknown_jobs_and_unknown_events_change_nothing() -> None:
    log = Log().job("j", "t")
    log.ran("gone", "x")  # a job whose submission is no longer in the log
    log.events.append(UnknownEvent("Future", "?", None, "?", "?", {}))
    plane = log.plane()
    assert list(plane.jobs) == ["j"] and states(plane) == {"t": "queued"}
