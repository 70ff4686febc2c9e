"""Jobs and the direct runner against real servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tasks_fixture import Leaf, Root, Step
from tilebox_core import Client
from tilebox_core.events import TaskClaimed, TaskCompleted, TaskSubmitted
from tilebox_core.taskstore import TASKS


def task_events(client: Client, kind: type) -> list:
    return [s.event for s in client.store.replay(TASKS) if isinstance(s.event, kind)]


def test_subtasks_with_dependencies_run_in_order(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = tmp_path / "trace"
    monkeypatch.setenv("TILEBOX_TEST_TRACE", str(trace))
    job = client.jobs().submit("ordered", Root(1))
    assert job.state == "queued"
    client.runner(tasks=[Root, Step, Leaf], cache_root=tmp_path / "cache").run_all()
    order = trace.read_text().split()
    assert order[0] == "root"
    # b waits for a, and a is complete only when its subtasks a.1 and a.2 are; c waits for both.
    assert order.index("b") > max(order.index("a.1"), order.index("a.2"))
    assert order.index("c") > order.index("b")
    done = client.jobs().find(job.id)
    assert done.state == "completed" and done.total_tasks == 6
    assert done.tasks_by_state == {"computed": 6}
    assert [(p.label, p.done, p.total) for p in done.progress] == [("steps", 3, 3)]
    completed = task_events(client, TaskCompleted)
    assert sorted(e.task_id for e in completed) == sorted(t.id for t in done.tasks)
    assert len(task_events(client, TaskSubmitted)) == 6
    assert {e.runner_id for e in task_events(client, TaskClaimed)} == {done.tasks[0].runner_id}


def test_a_stop_requested_before_the_run_is_honoured(client: Client, tmp_path: Path) -> None:
    job = client.jobs().submit("not-yet", Leaf("x"))
    runner = client.runner(tasks=[Leaf], cache_root=tmp_path)
    runner.stop()  # e.g. SIGTERM, or an orphaned runtime, while still starting up
    runner.run_forever()  # returns at once instead of serving
    assert client.jobs().find(job.id).state == "queued"
    runner.run_all()  # a later run works normally
    assert client.jobs().find(job.id).state == "completed"
