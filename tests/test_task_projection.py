"""The task-plane fold agrees with what the task scripts keep in Redis, for random job trees run
on a real server by a real runner: subtasks, dependencies between siblings, failing runs,
retries, optional tasks, cancels (before a job runs and while it runs) and job retries."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import tree_tasks
from tests.servers import ServerProcess
from tests.tree_tasks import Child, Node
from tilebox_core import Client, Conflict
from tilebox_core.domain.events import TaskClaimed, TaskFailed, TaskSkipped
from tilebox_core.domain.task_projection import TaskPlane, apply, in_skipped_subtree, is_held
from tilebox_core.domain.tasks import FailureReason


@st.composite
def nodes(draw: st.DrawFn, depth: int) -> Node:
    children = []
    for i in range(draw(st.integers(0, 3)) if depth else 0):
        children.append(Child(
            draw(nodes(depth - 1)),
            after=draw(st.lists(st.integers(0, i - 1), max_size=2, unique=True)) if i else [],
            optional=draw(st.booleans()),
            max_retries=draw(st.integers(0, 2)),
        ))  # fmt: skip
    return Node(
        fail=draw(st.integers(0, 3)),
        cancel=draw(st.integers(0, 19)) == 0,
        seconds=draw(st.sampled_from([0.0, 0.0, 0.0, 0.008])),  # some slower than a claim
        children=children,
    )


@st.composite
def optional_subtrees(draw: st.DrawFn) -> Node:
    """A root whose optional child holds, among random siblings (with subtrees, dependencies
    and optional ones of their own), one that fails for good: the case of the skipping rules,
    which random trees make rare."""
    failing = Node(fail=3, children=draw(st.lists(nodes(1), max_size=2).map(
        lambda ns: [Child(n) for n in ns])))  # fmt: skip
    others = draw(st.lists(nodes(2), min_size=1, max_size=3))
    at = draw(st.integers(0, len(others)))
    inner = [*others[:at], failing, *others[at:]]
    children = [
        Child(node, after=draw(st.lists(st.integers(0, i - 1), max_size=2, unique=True))
              if i else [], optional=draw(st.integers(0, 3)) == 0 and node is not failing)
        for i, node in enumerate(inner)
    ]  # fmt: skip
    scope = Node(children=children, seconds=draw(st.sampled_from([0.0, 0.008])))
    return Node(children=[Child(scope, optional=True), *(Child(n) for n in draw(
        st.lists(nodes(1), max_size=2)))])  # fmt: skip


class Plan(msgspec.Struct, frozen=True):
    jobs: list[tuple[list[Node], int]]  # root tasks, max_retries
    cancelled: list[bool]  # cancelled before anything runs
    bad_input: bool  # one more job, whose input does not decode
    retries: int  # rounds of retrying the failed jobs
    concurrency: int


plans = st.builds(
    Plan,
    jobs=st.lists(
        st.tuples(
            st.lists(st.one_of(nodes(2), optional_subtrees()), min_size=1, max_size=2),
            st.integers(0, 2),
        ),
        min_size=1,
        max_size=2,
    ),
    cancelled=st.lists(st.integers(0, 5).map(lambda x: x == 0), min_size=2, max_size=2),
    bad_input=st.booleans(),
    retries=st.integers(0, 2),
    concurrency=st.sampled_from([1, 1, 2]),
)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=plans)
def test_the_fold_of_the_task_log_is_what_the_scripts_keep(
    server: ServerProcess, tmp_path: Path, plan: Plan
) -> None:
    with Client(server.url, team="t-" + uuid.uuid4().hex[:12]) as client:

        def cancel(job_id: str) -> None:
            with contextlib.suppress(Conflict):  # cancelled already, by another of its tasks
                client.jobs().cancel(job_id)

        tree_tasks.RUNS.clear()
        tree_tasks.CANCEL[:] = [cancel]
        runner = client.runner(tasks=[Node], concurrency=plan.concurrency,
                               cache_root=tmp_path / "cache")  # fmt: skip
        jobs = [
            client.jobs().submit(f"job-{i}", roots, max_retries=max_retries)
            for i, (roots, max_retries) in enumerate(plan.jobs)
        ]
        if plan.bad_input:
            jobs.append(client.jobs().submit_by_name("bad", "prop.Node", "v1.0", '{"fail": "x"}'))
        for job, cancelled in zip(jobs, plan.cancelled):
            if cancelled:
                client.jobs().cancel(job.id)
        runner.run_all()
        for _ in range(plan.retries):
            for job in jobs:
                if client.jobs().find(job.id, with_tasks=False).state == "failed":
                    client.jobs().retry(job.id)
            runner.run_all()

        plane = TaskPlane()
        for stored in client.tasks.replay():
            event = stored.event
            # a failed job hands out none of its queued tasks until it is retried
            if isinstance(event, TaskClaimed) or (
                isinstance(event, TaskFailed) and event.reason == FailureReason.POISON
            ):
                assert not is_held(plane, event.task_id), event
            # a task of an optional subtree whose run failed runs no more once it is queued
            if isinstance(event, TaskClaimed) and plane.tasks[event.task_id].state == "queued":
                assert not in_skipped_subtree(plane, event.task_id), event
            if isinstance(event, TaskSkipped):
                assert in_skipped_subtree(plane, event.task_id), event
            apply(plane, event)
        assert sorted(plane.jobs) == sorted(j.id for j in jobs)
        for job in jobs:
            found, folded = client.jobs().find(job.id), plane.jobs[job.id]
            assert folded.state == found.state
            assert folded.tasks == [t.id for t in found.tasks]
            # the runner ran all it could: a job is done, and one that is not failed (never, or
            # retried since) has no task left to run (the retry resumed what it held)
            assert found.state in ("completed", "failed", "cancelled")
            if found.state != "failed":
                assert not {"waiting", "queued", "running"} & set(found.tasks_by_state), found
            tasks = [plane.tasks[t.id] for t in found.tasks]
            assert [(t.state, t.attempts, t.runner) for t in tasks] == [
                (t.state, t.attempts, t.runner_id) for t in found.tasks
            ]
