"""How tasks behave when they run, as Tilebox's do: progress, coroutine tasks, optional subtrees,
failures that hold a job until it is retried, retries of subtasks, display names and the errors
failed tasks keep. Real servers, a direct runner."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from tilebox_core import Client, ExecutionContext, Task

pytestmark = pytest.mark.cluster


def run(client: Client, tmp_path: Path, *tasks: type[Task], **options: object) -> None:
    client.runner(tasks=list(tasks), cache_root=tmp_path / "cache", **options).run_all()


# --- progress --------------------------------------------------------------------------------------


class Reports(Task):
    """Adds ``total`` to indicator "work" and marks ``done`` of it done; fails its first run when
    ``flaky`` (after reporting)."""

    total: int
    done: int
    flaky: bool = False

    def execute(self, context: ExecutionContext) -> None:
        context.progress("work").add(self.total)
        context.progress("work").done(self.done)
        if self.flaky and context.current_task.attempt == 1:
            raise RuntimeError("first run fails")


def test_progress_add_counts_total_and_done_counts_done(client: Client, tmp_path: Path) -> None:
    jobs = client.jobs().submit_many([("a", Reports(5, 2)), ("b", Reports(0, 3))])
    run(client, tmp_path, Reports)
    assert [[(p.label, p.total, p.done) for p in client.jobs().find(j.id).progress]
            for j in jobs] == [[("work", 5, 2)], [("work", 0, 3)]]  # fmt: skip


def test_progress_of_a_failed_run_does_not_count(client: Client, tmp_path: Path) -> None:
    # Tilebox counts only the last execution of a task: here, the run that completed.
    job = client.jobs().submit("flaky", Reports(4, 4, flaky=True), max_retries=1)
    run(client, tmp_path, Reports)
    found = client.jobs().find(job.id)
    assert found.state == "completed" and found.tasks[0].attempts == 1
    assert [(p.total, p.done) for p in found.progress] == [(4, 4)]


class BadCount(Task):
    count: int | float

    def execute(self, context: ExecutionContext) -> None:
        context.progress().done(self.count)  # type: ignore[arg-type]


@pytest.mark.parametrize(("count", "message"), [(1.5, "takes an int, got 1.5"),
                                                (-1, "takes a count >= 0, got -1")])  # fmt: skip
def test_a_progress_count_that_is_no_count_fails_the_task(
    client: Client, tmp_path: Path, count: float, message: str
) -> None:
    job = client.jobs().submit("bad", BadCount(count))
    run(client, tmp_path, BadCount)
    found = client.jobs().find(job.id)
    assert found.state == "failed" and found.progress == []
    failed = [s.event for s in client.tasks.replay() if s.event.type == "TaskFailed"]
    assert message in failed[0].error


# --- retries of subtasks ---------------------------------------------------------------------------

RUNS: dict[str, int] = {}


class FailsOnce(Task):
    label: str

    def execute(self, context: ExecutionContext) -> None:
        RUNS[self.label] = RUNS.get(self.label, 0) + 1
        if RUNS[self.label] == 1:
            raise RuntimeError(f"{self.label}: first run fails")


class Parent(Task):
    retries: int | None = None  # None: max_retries not given

    def execute(self, context: ExecutionContext) -> None:
        if self.retries is None:
            context.submit_subtask(FailsOnce("default"))
        else:
            context.submit_subtask(FailsOnce("given"), max_retries=self.retries)


def test_a_subtask_is_retried_as_often_as_it_says_not_as_its_parent(
    client: Client, tmp_path: Path
) -> None:
    RUNS.clear()
    default = client.jobs().submit("default", Parent(), max_retries=3)
    given = client.jobs().submit("given", Parent(1), max_retries=0)
    run(client, tmp_path, Parent, FailsOnce)
    assert client.jobs().find(default.id).state == "failed"  # the parent's 3 retries are its own
    assert client.jobs().find(given.id).state == "completed"
    assert RUNS == {"default": 1, "given": 2}


# --- coroutine tasks -------------------------------------------------------------------------------

LOOPS: list[tuple[int, asyncio.AbstractEventLoop]] = []  # (thread, loop) of each coroutine run


class AsyncLeaf(Task):
    i: int

    async def execute(self, context: ExecutionContext) -> None:
        await asyncio.sleep(0)
        LOOPS.append((threading.get_ident(), asyncio.get_running_loop()))
        context.progress("leaves").done(1)


class AsyncRoot(Task):
    n: int

    async def execute(self, context: ExecutionContext) -> None:
        await asyncio.sleep(0.001)
        LOOPS.append((threading.get_ident(), asyncio.get_running_loop()))
        context.progress("leaves").add(self.n)
        context.submit_subtasks([AsyncLeaf(i) for i in range(self.n)])


@pytest.mark.parametrize("concurrency", [1, 2])
def test_async_execute_is_awaited_on_one_loop_per_worker_reused_and_closed(
    client: Client, tmp_path: Path, concurrency: int
) -> None:
    LOOPS.clear()
    job = client.jobs().submit("async", AsyncRoot(30))
    run(client, tmp_path, AsyncRoot, AsyncLeaf, concurrency=concurrency)
    found = client.jobs().find(job.id)
    assert found.state == "completed" and found.tasks_by_state == {"computed": 31}
    assert [(p.total, p.done) for p in found.progress] == [(30, 30)]
    assert len(LOOPS) == 31
    by_thread: dict[int, set[asyncio.AbstractEventLoop]] = {}
    for thread, loop in LOOPS:
        by_thread.setdefault(thread, set()).add(loop)
    assert len(by_thread) <= concurrency
    assert all(len(loops) == 1 for loops in by_thread.values())  # reused, task after task
    assert all(loop.is_closed() for _, loop in LOOPS)  # closed when the run ended


def test_a_runner_inside_a_running_event_loop_awaits_on_a_loop_of_its_own(
    client: Client, tmp_path: Path
) -> None:
    # As in a notebook: run_all called from a thread whose own loop is running.
    LOOPS.clear()
    job = client.jobs().submit("async", AsyncRoot(3))

    async def cell() -> asyncio.AbstractEventLoop:
        run(client, tmp_path, AsyncRoot, AsyncLeaf)
        return asyncio.get_running_loop()

    notebook_loop = asyncio.run(cell())
    assert client.jobs().find(job.id).state == "completed"
    loops = {loop for _, loop in LOOPS}
    assert len(loops) == 1 and notebook_loop not in loops


class Yields(Task):
    def execute(self, context: ExecutionContext) -> Any:
        yield 1


class Later:
    """An awaitable that is no coroutine (as a Future, or a library's own)."""

    def __await__(self) -> Any:
        yield


class Returns(Task):
    what: str

    def execute(self, context: ExecutionContext) -> Any:
        if self.what == "awaitable":
            return Later()
        return {"result": 42}


class AsyncYields(Task):
    async def execute(self, context: ExecutionContext) -> Any:  # type: ignore[override]
        yield 1


class AsyncReturns(Task):
    async def execute(self, context: ExecutionContext) -> Any:
        await asyncio.sleep(0)
        return 7


class AsyncRaises(Task):
    cancel: bool

    async def execute(self, context: ExecutionContext) -> None:
        await asyncio.sleep(0)
        if self.cancel:
            raise asyncio.CancelledError
        raise ValueError("broken coroutine")


@pytest.mark.parametrize(
    ("task", "error"),
    [
        (Yields(), "TypeError: Yields.execute returned a generator: execute contains 'yield'"),
        (Returns("awaitable"), "returned an awaitable (Later) that is not a coroutine"),
        (
            Returns("value"),
            "Returns.execute returned dict {'result': 42}: execute must return None",
        ),
        (AsyncYields(), "AsyncYields.execute returned an async generator"),
        (AsyncReturns(), "AsyncReturns.execute returned int 7: execute must return None"),
        (AsyncRaises(False), "ValueError: broken coroutine"),
        (AsyncRaises(True), "RuntimeError: the task's coroutine was cancelled"),
    ],
)
def test_an_execute_that_cannot_run_fails_its_task_loudly(
    client: Client, tmp_path: Path, task: Task, error: str
) -> None:
    job = client.jobs().submit("cannot run", task)
    after = client.jobs().submit("after", Reports(1, 1))
    run(client, tmp_path, type(task), Reports)
    assert client.jobs().find(job.id).state == "failed"
    assert client.jobs().find(after.id).state == "completed"  # the runner went on
    [failed] = [s.event for s in client.tasks.replay() if s.event.type == "TaskFailed"]
    assert error in failed.error
