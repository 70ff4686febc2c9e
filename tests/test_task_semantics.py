"""How tasks behave when they run, as Tilebox's do: progress, coroutine tasks, optional subtrees,
failures that hold a job until it is retried, retries of subtasks, display names and the errors
failed tasks keep. Real servers, a direct runner."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.conftest import Cli
from tilebox_core import Client, ExecutionContext, Task
from tilebox_core.domain.task_projection import fold
from tilebox_core.domain.tasks import bounded_traceback

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


# Mistakes, unannotated (an annotation other than None is refused when the class is defined):
# the runner finds them out by what execute returns.


class Yields(Task):
    def execute(self, context):  # type: ignore[no-untyped-def]
        yield 1


class Later:
    """An awaitable that is no coroutine (as a Future, or a library's own)."""

    def __await__(self) -> Any:
        yield


class Returns(Task):
    what: str

    def execute(self, context):  # type: ignore[no-untyped-def]
        if self.what == "awaitable":
            return Later()
        return {"result": 42}


class AsyncYields(Task):
    async def execute(self, context):  # type: ignore[no-untyped-def]
        yield 1


class AsyncReturns(Task):
    async def execute(self, context):  # type: ignore[no-untyped-def]
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


# --- display names ---------------------------------------------------------------------------------


class Named(Task):
    display: Any
    fail: bool = False

    def execute(self, context: ExecutionContext) -> None:
        assert context.current_task.display == "Named"  # its class's name until it sets one
        # a name no text can hold (a file name decoded with surrogateescape), made here: no input
        # can carry it
        surrogate = self.display == "surrogate"
        context.current_task.display = "scene-\udcff" if surrogate else self.display
        if self.fail:
            raise RuntimeError("after naming itself")


def test_a_display_name_a_task_sets_is_kept_and_shown(
    client: Client, tmp_path: Path, cli: Cli
) -> None:
    jobs = client.jobs().submit_many([
        ("named", Named("Leaf Nr. 1\nof 3")), ("long", Named("x" * 2000)),
        ("failed", Named("broken one", fail=True)), ("not text", Named(42)),
        ("surrogate", Named("surrogate")),
    ])  # fmt: skip
    run(client, tmp_path, Named)
    named, long, failed, not_text, surrogate = (client.jobs().find(j.id) for j in jobs)
    assert (named.state, named.tasks[0].display) == ("completed", "Leaf Nr. 1\nof 3")
    assert long.tasks[0].display == "x" * 1024  # cut off, as in Tilebox
    assert (failed.state, failed.tasks[0].display) == ("failed", "broken one")
    for bad, message in [(not_text, "current_task.display must be a str, got 42"),
                         (surrogate, "surrogates not allowed")]:  # fmt: skip
        assert bad.state == "failed" and bad.tasks[0].display is None
        assert bad.tasks[0].error is not None and message in bad.tasks[0].error.message
    assert '"Leaf Nr. 1 | of 3"  computed' in cli("job", "get", named.id).output
    assert "Leaf Nr. 1" in client.jobs().visualize(named.id)
    completed = [s.event for s in client.tasks.replay() if s.event.type == "TaskCompleted"]
    assert {e.display for e in completed} == {"Leaf Nr. 1\nof 3", "x" * 1024}


# --- the errors failed tasks keep ----------------------------------------------------------------


def parse(text: str) -> int:
    return int(text)


class Breaks(Task):
    text: str
    optional_child: bool = False

    def execute(self, context: ExecutionContext) -> None:
        if self.optional_child:
            context.submit_subtask(Breaks("child"), optional=True)
            return
        try:
            parse(self.text)
        except ValueError as exc:
            raise LookupError(f"no scene {self.text!r}") from exc


def test_a_failed_task_keeps_its_error_traceback_and_attempts(
    client: Client, tmp_path: Path
) -> None:
    failed = client.jobs().submit("failed", Breaks("S2A"), max_retries=2)
    optional = client.jobs().submit("optional", Breaks("-", optional_child=True))
    run(client, tmp_path, Breaks)
    [task] = client.jobs().find(failed.id).tasks
    assert task.state == "failed" and task.attempts == 3
    assert task.error is not None
    assert (task.error.type, task.error.message) == ("LookupError", "no scene 'S2A'")
    trace = task.error.traceback
    assert trace.startswith("Traceback (most recent call last):")
    assert "in parse" in trace and "int(text)" in trace  # the cause, chained
    assert trace.rstrip().endswith("LookupError: no scene 'S2A'")
    assert "execution/worker.py" not in trace  # the runner's own frames are left out
    [event] = [s.event for s in client.tasks.replay() if s.event.type == "TaskFailed"
               and not s.event.will_retry and s.event.job_id == failed.id]  # fmt: skip
    assert event.traceback == trace and event.error == "LookupError: no scene 'S2A'"
    parent, child = client.jobs().find(optional.id).tasks
    assert child.state == "failed_optional" and child.error is not None
    assert parent.error is None
    # a job retry runs it again: its last failure is history, not its error any more
    client.jobs().retry(failed.id)
    assert client.jobs().find(failed.id).tasks[0].error is None


def test_a_traceback_kept_is_bounded_to_its_last_lines() -> None:
    text = "\n".join(f"line {i}" for i in range(5000))
    bounded = bounded_traceback(text, 1000)
    assert len(bounded) <= 1000 + 40 and bounded.endswith("line 4999")
    assert bounded.startswith("... (earlier lines left out)\nline ")
    assert bounded_traceback("short", 1000) == "short"


def test_job_get_shows_failed_tasks_errors_and_lists_them_with_tracebacks(
    client: Client, tmp_path: Path, cli: Cli
) -> None:
    job = client.jobs().submit("failed", Breaks("S2A"), max_retries=1)
    run(client, tmp_path, Breaks)
    shown = cli("job", "get", job.id, ok=False).output
    assert "error: LookupError: no scene 'S2A' (after 2 attempts)" in shown
    assert 'raise LookupError(f"no scene {self.text!r}") from exc' in shown  # the traceback's end
    assert "int(text)" not in shown  # not all of it
    listed = cli("job", "get", job.id, "--tasks", "failed").output
    assert "error: LookupError: no scene 'S2A'" in listed and "int(text)" in listed
    assert "no computed tasks" in cli("job", "get", job.id, "--tasks", "computed").output
    as_json = json.loads(cli("job", "get", job.id, "--tasks", "failed", "--json").stdout)
    [task] = as_json["tasks"]
    assert task["error"]["type"] == "LookupError" and task["attempts"] == 2
    assert "int(text)" in task["error"]["traceback"]
    assert json.loads(cli("job", "get", job.id, "--tasks", "queued", "--json").stdout)[
        "tasks"] == []  # fmt: skip


# --- a failure holds its job until it is retried ---------------------------------------------------

RAN: list[str] = []  # labels of the Mark tasks, as they ran
HOOKS: dict[str, Any] = {}  # set by a test: what a Hold task waits for


class Mark(Task):
    label: str
    fail: bool = False

    def execute(self, context: ExecutionContext) -> None:
        RAN.append(self.label)
        if self.fail and HOOKS.get("failing", True):
            raise RuntimeError(f"{self.label} breaks")


class Fans(Task):
    """A failing task, then ``n`` more (queued behind it) and one waiting for the first of
    them."""

    n: int

    def execute(self, context: ExecutionContext) -> None:
        context.submit_subtask(Mark("bad", fail=True))
        leaves = context.submit_subtasks([Mark(f"leaf-{i}") for i in range(self.n)])
        context.submit_subtask(Mark("after"), depends_on=leaves[:1])


def test_a_failure_holds_the_rest_of_its_job_and_a_retry_resumes_it(
    client: Client, tmp_path: Path
) -> None:
    RAN.clear()
    HOOKS["failing"] = True
    job = client.jobs().submit("held", Fans(20))
    run(client, tmp_path, Fans, Mark)
    failed = client.jobs().find(job.id)
    assert failed.state == "failed"
    # How the lane's entries fall into the runner's batches is timing: leaves read with bad are
    # handed back unrun once it failed (TaskReleased), leaves read after it are held at their
    # claim (no event), and a leaf read in a later batch may have run before the failure was
    # recorded: its result was dropped. Either way, none of them counts, as checked below.
    assert RAN[0] == "bad" and "after" not in RAN
    assert len(events(client, "TaskReleased")) <= 20
    states = {t.id: t.state for t in failed.tasks}
    computed = {e.task_id for e in events(client, "TaskCompleted")}
    # What ran after the failure was recorded had its result dropped: held, not computed.
    held = [t for t in failed.tasks if t.state == "queued"]
    assert held and all(t.id not in computed for t in held)
    assert failed.tasks_by_state.get("running", 0) == 0
    lanes = [client.tasks.lane("default", *Mark.identifier(), job.id)]
    assert client.tasks.lane_backlog(lanes) == (0, 0)  # nothing waits in a lane: held
    ran_before = len(RAN)
    run(client, tmp_path, Fans, Mark)  # a runner again: it is given nothing of the job
    assert len(RAN) == ran_before and client.jobs().find(job.id).state == "failed"

    HOOKS["failing"] = False  # the fix
    assert client.jobs().retry(job.id) == 1
    run(client, tmp_path, Fans, Mark)
    done = client.jobs().find(job.id)
    assert done.state == "completed" and done.tasks_by_state == {"computed": 23}
    completed = [e.task_id for e in events(client, "TaskCompleted")]
    assert sorted(completed) == sorted(states)  # each task completed once
    assert fold(client.tasks.replay()).jobs[job.id].state == "completed"


def until(condition: Any, failure: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(failure)
        time.sleep(0.01)


class Side(Task):
    """One of two tasks run side by side (one lane: a read of COUNT 1 gets one): "holds" runs
    until its job has failed, then completes with a subtask (a task running when its job fails
    finishes, and what it submits waits for the retry); "fails" fails once the store shows the
    other running (its claim recorded)."""

    role: str

    def execute(self, context: ExecutionContext) -> None:
        job_id = context.current_task.job_id
        if self.role == "holds":
            until(lambda: HOOKS["job"](job_id).state == "failed", "the job never failed")
            context.submit_subtask(Mark("child of a running task"))
            return
        me = context.current_task.id
        until(lambda: any(t.name == "Side" and t.id != me and t.state in ("running", "computed")
                          for t in HOOKS["job"](job_id).tasks), "the other never ran")  # fmt: skip
        raise RuntimeError("breaks while the other runs")


class Both(Task):
    def execute(self, context: ExecutionContext) -> None:
        time.sleep(0.02)  # slow: the runner records its next tasks' claims before they run
        context.submit_subtasks([Side("holds"), Side("fails")])


def test_a_task_running_when_its_job_fails_finishes_and_its_subtasks_wait_for_the_retry(
    client: Client, tmp_path: Path
) -> None:
    RAN.clear()
    HOOKS.update(job=client.jobs().find)
    job = client.jobs().submit("running", Both())
    tasks = (Both, Side, Mark)
    run(client, tmp_path, *tasks, concurrency=2, prefetch=1)  # the two side by side
    failed = client.jobs().find(job.id)
    assert failed.state == "failed"
    assert [(t.name, t.state) for t in failed.tasks] == [
        ("Both", "computed"), ("Side", "computed"), ("Side", "failed"), ("Mark", "queued"),
    ]  # fmt: skip
    assert "child of a running task" not in RAN
    client.jobs().retry(job.id)
    run(client, tmp_path, *tasks)
    assert client.jobs().find(job.id).state == "failed"  # "fails" fails again...
    assert RAN.count("child of a running task") == 1  # ...but the held child ran


def test_a_retry_resumes_tasks_held_after_it_read_the_job(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The retry reads the job, then runs its script; a task held in between is not named by the
    # first call: the second look queues it again.
    RAN.clear()
    HOOKS["failing"] = True
    job = client.jobs().submit("racing", Fans(3))
    run(client, tmp_path, Fans, Mark)
    assert client.jobs().find(job.id).state == "failed"
    HOOKS["failing"] = False
    jobs = client.jobs()
    find = jobs.find
    reads: list[int] = []

    def first_read_misses_the_held(job_id: str, *args: Any, **kwargs: Any) -> Any:
        found = find(job_id, *args, **kwargs)
        reads.append(1)
        if len(reads) == 1:  # as if read before they were held
            return msgspec.structs.replace(
                found, tasks=[t for t in found.tasks if t.state != "queued"]
            )
        return found

    monkeypatch.setattr(jobs, "find", first_read_misses_the_held)
    assert jobs.retry(job.id) == 1
    run(client, tmp_path, Fans, Mark)
    assert find(job.id).state == "completed"


def events(client: Client, kind: str) -> list[Any]:
    return [s.event for s in client.tasks.replay() if s.event.type == kind]


def test_a_failed_job_with_held_tasks_can_be_cancelled(client: Client, tmp_path: Path) -> None:
    RAN.clear()
    HOOKS["failing"] = True
    job = client.jobs().submit("held then cancelled", Fans(5))
    run(client, tmp_path, Fans, Mark)
    assert any(t.state == "queued" for t in client.jobs().find(job.id).tasks)  # held
    cancelled = client.jobs().cancel(job.id)
    assert cancelled.state == "cancelled" and "queued" not in cancelled.tasks_by_state
    assert "waiting" not in cancelled.tasks_by_state


# --- optional subtrees ---------------------------------------------------------------------------


class Node(Task):
    """A node of a tree: it submits ``children``, each [kind, label, optional, index of an
    earlier sibling it depends on or -1, its children]; kind "node" is a Node, "fail" a Fails,
    "late" a Late."""

    label: str
    children: list[Any] = msgspec.field(default_factory=list)

    def execute(self, context: ExecutionContext) -> None:
        RAN.append(self.label)
        context.current_task.display = self.label
        handles: list[Any] = []
        for kind, label, optional, after, children in self.children:
            task = {"node": Node, "fail": Fails, "late": Late}[kind](label, children)
            handles.append(context.submit_subtask(
                task, optional=optional, depends_on=[handles[after]] if after >= 0 else []
            ))  # fmt: skip


class Fails(Node):
    def execute(self, context: ExecutionContext) -> None:
        RAN.append(self.label)
        context.current_task.display = self.label
        raise RuntimeError(f"{self.label} breaks")


class Late(Node):
    """A Node served by a second runner: it is received after the first runner's tasks (and
    failures) are recorded."""


def late(label: str, after: int = -1, optional: bool = False, children: Any = ()) -> list[Any]:
    return ["late", label, optional, after, list(children)]


def test_a_failure_in_an_optional_subtree_skips_the_rest_of_it_transitively(
    client: Client, tmp_path: Path
) -> None:
    # root -> outer (optional) -> [bad, mid -> [m1, m2], after (after bad) -> [a1],
    #                               inner (optional) -> [i1], next (after after)]
    #      -> sibling (outside the optional subtree)
    RAN.clear()
    tree = Node("root", [
        ["node", "outer", True, -1, [
            ["fail", "bad", False, -1, []],
            late("mid", children=[late("m1"), late("m2", after=0)]),
            late("after", after=0, children=[late("a1")]),
            late("inner", optional=True, children=[late("i1")]),
            late("next", after=2),
        ]],
        ["node", "sibling", False, -1, []],
    ])  # fmt: skip
    job = client.jobs().submit("optional subtree", tree)
    run(client, tmp_path, Node, Fails)
    run(client, tmp_path, Late)
    found = client.jobs().find(job.id)
    assert found.state == "completed"
    # in the order they were created; a task that never ran set no display name
    assert [(t.display, t.state) for t in found.tasks] == [
        ("root", "computed"), ("outer", "computed"), ("sibling", "computed"),
        ("bad", "failed_optional"),
        (None, "skipped"),  # mid: queued when bad failed; its subtasks are never created
        (None, "skipped"),  # after: waited for bad, was queued then, and skipped
        (None, "skipped"),  # inner: an optional subtree inside the skipped one
        (None, "skipped"),  # next: waited for after: skipped in turn
    ]  # fmt: skip
    assert sorted(RAN) == ["bad", "outer", "root", "sibling"]
    skipped = [e.task_id for e in events(client, "TaskSkipped")]
    assert sorted(skipped) == sorted(t.id for t in found.tasks if t.state == "skipped")
    assert fold(client.tasks.replay()).jobs[job.id].state == "completed"


def test_a_failure_of_an_optional_task_inside_an_optional_subtree_is_contained_by_it(
    client: Client, tmp_path: Path
) -> None:
    RAN.clear()
    tree = Node("root", [
        ["node", "outer", True, -1, [
            ["node", "inner", True, -1, [["fail", "bad", False, -1, []], late("i2")]],
            late("after inner", after=0),
            late("beside"),
        ]],
    ])  # fmt: skip
    job = client.jobs().submit("contained", tree)
    run(client, tmp_path, Node, Fails)
    run(client, tmp_path, Late)
    found = client.jobs().find(job.id)
    assert found.state == "completed"
    assert [(t.display, t.state) for t in found.tasks] == [
        ("root", "computed"), ("outer", "computed"), ("inner", "computed"),
        ("after inner", "computed"),  # runs once inner is complete (its subtree skipped)
        ("beside", "computed"),
        ("bad", "failed_optional"),
        (None, "skipped"),  # i2: in inner's subtree, with bad
    ]  # fmt: skip
    assert RAN.count("after inner") == 1 and "i2" not in RAN


class Slow(Task):
    """Inside an optional subtree: runs until its sibling's failure skipped the subtree, then
    completes with subtasks, which are not created."""

    label: str

    def execute(self, context: ExecutionContext) -> None:
        RAN.append(self.label)
        job_id = context.current_task.job_id
        until(lambda: any(t.state == "failed_optional" for t in HOOKS["job"](job_id).tasks),
              "the sibling never failed")  # fmt: skip
        context.submit_subtasks([Late("never created"), Late("nor this")])


class Scope(Task):
    def execute(self, context: ExecutionContext) -> None:
        time.sleep(0.02)  # slow: the runner records its next tasks' claims before they run
        context.submit_subtask(Slow("slow"))
        context.submit_subtask(Slow("slow"))  # the same lane as the failing one: see below


class Outer(Task):
    def execute(self, context: ExecutionContext) -> None:
        time.sleep(0.02)
        context.submit_subtask(Scope(), optional=True)


class FailingSlow(Task):
    """``Slow``'s identifier: the one failing of the two (a runner registers one class per
    identifier, so the two are told apart by their order)."""

    label: str

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "Slow", "v0.0"

    def execute(self, context: ExecutionContext) -> None:
        if HOOKS.pop("first", False):  # (atomic: one of the two runs is the first)
            job_id, me = context.current_task.job_id, context.current_task.id
            until(lambda: any(t.name == "Slow" and t.id != me and t.state == "running"
                              for t in HOOKS["job"](job_id).tasks), "the other never ran")  # fmt: skip
            raise RuntimeError("the first Slow breaks while the other runs")
        Slow.execute(self, context)  # type: ignore[arg-type]


def test_a_task_running_when_its_optional_subtree_fails_completes_without_subtasks(
    client: Client, tmp_path: Path
) -> None:
    RAN.clear()
    HOOKS.update(job=client.jobs().find, first=True)
    job = client.jobs().submit("running in a skipped subtree", Outer())
    run(client, tmp_path, Outer, Scope, FailingSlow, Late, concurrency=2, prefetch=1)
    found = client.jobs().find(job.id)
    assert found.state == "completed"
    assert sorted(t.state for t in found.tasks if t.name == "Slow") == ["computed",
                                                                         "failed_optional"]  # fmt: skip
    assert [t.name for t in found.tasks] == ["Outer", "Scope", "Slow", "Slow"]  # none created
    assert "never created" not in RAN


def test_job_get_says_why_the_queued_tasks_of_a_failed_job_wait(
    client: Client, tmp_path: Path, cli: Cli
) -> None:
    RAN.clear()
    HOOKS["failing"] = True
    job = client.jobs().submit("held", Fans(3))
    run(client, tmp_path, Fans, Mark)
    shown = cli("job", "get", job.id).output
    assert f"waiting   3 queued tasks are held because the job failed: fix what failed, then " \
           f"'tilebox job retry {job.id}' resumes them" in shown  # fmt: skip
