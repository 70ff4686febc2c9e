"""Jobs and the direct runner against real servers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.servers import ServerProcess
from tests.tasks_fixture import FanOut, Leaf, Rendezvous, Root, Sleep, Step, Top, Wide
from tilebox_core import Client
from tilebox_core.domain.errors import InvalidInput, NotFound
from tilebox_core.domain.events import JobSubmitted, TaskClaimed, TaskCompleted, TaskSubmitted
from tilebox_core.domain.ids import new_id, subtask_id
from tilebox_core.domain.task_projection import fold
from tilebox_core.domain.tasks import Finish, FinishStatus, NewJob, Outcome
from tilebox_core.jobs import SUBMIT_CHUNK, Job, new_job, submitted_event, task_spec
from tilebox_core.redis import taskstore
from tilebox_core.redis.taskstore import STAGE_CHUNK

pytestmark = pytest.mark.cluster


def task_log_length(client: Client) -> int:
    """Entries in the task log, over every shard."""
    return sum(int(client.redis.xlen(log)) for log in client.tasks.log_streams())


def task_events(client: Client, kind: type) -> list:
    return [s.event for s in client.tasks.replay() if isinstance(s.event, kind)]


@pytest.fixture
def trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[str]]:
    """The labels of the fixture tasks, in the order they ran."""
    path = tmp_path / "trace"
    monkeypatch.setenv("TILEBOX_TEST_TRACE", str(path))
    return lambda: path.read_text().split()


def test_subtasks_with_dependencies_run_in_order(
    client: Client, tmp_path: Path, trace: Callable[[], list[str]]
) -> None:
    job = client.jobs().submit("ordered", Root(1))
    assert job.state == "queued"
    client.runner(tasks=[Root, Step, Leaf], cache_root=tmp_path / "cache").run_all()
    order = trace()
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


def test_a_parent_completes_once_all_its_many_subtasks_have(
    client: Client, tmp_path: Path, trace: Callable[[], list[str]]
) -> None:
    # The leaves finish in batches (prefetch 64), each batch telling their parent once.
    job = client.jobs().submit("wide", Top(150))
    client.runner(tasks=[Top, Wide, Leaf], prefetch=64, cache_root=tmp_path / "c").run_all()
    order = trace()
    assert len(order) == 151 and order[-1] == "after"
    done = client.jobs().find(job.id)
    assert done.state == "completed" and done.tasks_by_state == {"computed": 153}
    wide = next(t for t in done.tasks if t.name == "test.Wide")
    shard = client.tasks.shard(job.id)
    assert client.redis.hget(shard.task(wide.id), "open") == b"0"
    assert client.redis.hget(shard.job(job.id), "open") == b"0"


def test_a_large_fan_out_is_created_in_chunks_before_its_parent_completes(
    client: Client, tmp_path: Path
) -> None:
    job = client.jobs().submit("large", FanOut(STAGE_CHUNK + 500))
    client.runner(tasks=[FanOut, Sleep], cache_root=tmp_path).run_all()
    done = client.jobs().find(job.id)
    assert done.state == "completed" and done.tasks_by_state == {"computed": STAGE_CHUNK + 501}
    events = [s.event for s in client.tasks.replay()]
    root = done.tasks[0].id
    completed = next(
        i for i, e in enumerate(events) if isinstance(e, TaskCompleted) and e.task_id == root
    )
    submitted = [
        i for i, e in enumerate(events) if isinstance(e, TaskSubmitted) and e.task_id != root
    ]
    assert len(submitted) == STAGE_CHUNK + 500 and max(submitted) < completed
    assert len(set(client.tasks.task_ids(job.id))) == STAGE_CHUNK + 501


def test_a_parent_staging_again_with_other_chunks_creates_each_subtask_once(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A parent that runs again after its runner died while staging, on a runner whose chunks
    # have another size: whole chunks made before are skipped, a chunk made in part is looked
    # up task by task, and the rest is created; each subtask once, with one TaskSubmitted.
    job = client.jobs().submit("restaged", FanOut(0))
    lane = client.tasks.lane("default", "test.FanOut", "v1.0", job.id)
    [delivery] = client.tasks.read("runner-a", [lane], count=1, block_ms=1000)
    root = delivery.task
    specs = [
        task_spec(Sleep(i), subtask_id(root.task_id, i), "default", parent_id=root.task_id)
        for i in range(2500)
    ]
    events = [submitted_event(client.origin().stamp(), job.id, s) for s in specs]

    def stage(count: int, chunk: int) -> None:
        monkeypatch.setattr(taskstore, "STAGE_CHUNK", chunk)
        finish = Finish(root, Outcome.COMPLETED, events, subtasks=specs[:count])
        assert client.tasks.stage("runner-a", finish) == msgspec.structs.replace(
            finish, subtasks=[], events=[]
        )

    stage(1500, 1000)  # died after these: 0-999 and 1000-1499
    stage(2500, 700)  # 0-699 and 700-1399 exist, 1400-2099 in part, 2100-2499 are new
    submitted = [e.task_id for e in task_events(client, TaskSubmitted)]
    assert submitted == [root.task_id] + [s.id for s in specs]
    assert client.tasks.task_ids(job.id) == [root.task_id] + [s.id for s in specs]
    assert client.redis.hget(client.tasks.shard(job.id).task(root.task_id), "open") == b"2501"
    states = client.tasks.tasks([s.id for s in specs], ["state"], job.id)
    assert {row["state"] for row in states} == {"queued"}


def test_submit_many_creates_each_job_in_order(client: Client, tmp_path: Path) -> None:
    count = 2 * SUBMIT_CHUNK + 50  # several pipelined script calls
    jobs = client.jobs().submit_many((f"job-{i}", Leaf(str(i))) for i in range(count))
    assert [j.name for j in jobs] == [f"job-{i}" for i in range(count)]
    assert len({j.id for j in jobs}) == count
    assert all(j.state == "queued" and j.tasks_by_state == {"queued": 1} for j in jobs)
    assert client.jobs().find(jobs[-1].id).tasks[0].state == "queued"
    submitted = [e.job_id for e in task_events(client, JobSubmitted)]
    assert sorted(submitted) == sorted(j.id for j in jobs)
    for shard in client.tasks.shards:  # in submission order in each shard (all, with one)
        ids = {j.id for j in jobs if client.tasks.shard(j.id) is shard}
        assert [i for i in submitted if i in ids] == [j.id for j in jobs if j.id in ids]
    # The events of a call share log entries: far fewer entries than events.
    assert task_log_length(client) < count
    client.runner(tasks=[Leaf], prefetch=64, cache_root=tmp_path).run_all()
    assert {client.jobs().find(j.id, with_tasks=False).state for j in jobs} == {"completed"}
    assert len(task_events(client, TaskCompleted)) == count


def test_submit_many_checks_every_job_before_submitting_any(client: Client) -> None:
    with pytest.raises(InvalidInput, match="non-empty name"):
        client.jobs().submit_many([("fine", Leaf("a")), (" ", Leaf("b"))])
    with pytest.raises(InvalidInput, match=r"is not a subclass of tilebox_core\.Task"):
        client.jobs().submit_many([("fine", Leaf("a")), ("bad", [object()])])  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match="needs at least one task"):
        client.jobs().submit_many([("fine", Leaf("a")), ("empty", [])])
    assert client.jobs().query() == []
    assert task_log_length(client) == 0


def test_a_retried_submission_of_a_job_is_not_duplicated(client: Client) -> None:
    origin = client.origin()
    specs = [task_spec(Leaf("once"), new_id(), "default")]
    job = new_job(origin, "once", "default", specs, 0)
    assert client.tasks.submit_jobs([[job]]) == [True]
    entries = task_log_length(client)
    assert client.tasks.submit_jobs([[job]]) == [False]  # e.g. resent after a lost reply
    assert task_log_length(client) == entries
    assert client.jobs().find(job.id).total_tasks == 1
    # Resent with a new job in the same call: only the new job's events are appended.
    other = new_job(origin, "other", "default", [task_spec(Leaf("new"), new_id(), "default")], 0)
    assert client.tasks.submit_jobs([[job, other]]) == [False, True]
    assert [e.job_id for e in task_events(client, JobSubmitted)] == [job.id, other.id]
    assert [e.job_id for e in task_events(client, TaskSubmitted)] == [job.id, other.id]


def test_a_bulk_submission_rides_over_a_server_restart(
    private_server: ServerProcess, team: str
) -> None:
    with Client(private_server.url, team=team, retries=20) as client:
        origin = client.origin()
        jobs = [new_job(origin, f"job-{i}", "default", [task_spec(Leaf(str(i)), new_id(),
                "default")], 0) for i in range(300)]  # fmt: skip

        def chunks() -> Iterator[list[NewJob]]:
            yield jobs[:100]
            yield jobs[100:200]  # sent, reply unread: then the server dies under it
            private_server.restart()  # kill -9, start again on the same AOF
            yield jobs[200:]

        assert len(client.tasks.submit_jobs(chunks())) == 300
        # Resent calls found their jobs created: every job once, with its one task.
        submitted = task_events(client, JobSubmitted)
        assert sorted(e.job_id for e in submitted) == sorted(j.id for j in jobs)
        assert len(task_events(client, TaskSubmitted)) == 300
        assert {client.jobs().find(j.id).total_tasks for j in jobs} == {1}


def test_wait_reports_progress_until_the_job_is_done(client: Client, tmp_path: Path) -> None:
    job = client.jobs().submit("watched", Top(20))
    runner = client.runner(tasks=[Top, Wide, Leaf], cache_root=tmp_path)
    worker = threading.Thread(target=runner.run_all)
    updates: list[Job] = []
    worker.start()
    try:
        done = client.jobs().wait(job.id, timeout=60, on_update=updates.append, interval=0.01)
    finally:
        worker.join(60)
    assert done.state == "completed" and done.tasks_by_state == {"computed": 23}
    assert updates and updates[-1] == done  # the last update is the final view
    with pytest.raises(NotFound):
        client.jobs().wait("no-such-job", timeout=1)


def test_concurrency_runs_tasks_side_by_side(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    place = tmp_path / "rendezvous"
    place.mkdir()
    monkeypatch.setenv("TILEBOX_TEST_RENDEZVOUS", str(place))
    jobs = client.jobs().submit_many((f"meet-{i}", Rendezvous(i, 3)) for i in range(3))
    client.runner(tasks=[Rendezvous], concurrency=3, cache_root=tmp_path / "c").run_all()
    assert {client.jobs().find(j.id, with_tasks=False).state for j in jobs} == {"completed"}
    claims = task_events(client, TaskClaimed)
    assert len(claims) == 3 and len({c.runner_id for c in claims}) == 1


def test_a_cancel_drops_the_tasks_a_finish_created_while_it_ran(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cancel reads the job's unstarted tasks, then drops them in a script; a finish that runs
    # in between creates tasks the first read did not see: they are dropped too, not left waiting.
    job = client.jobs().submit("racing", FanOut(0))
    lane = client.tasks.lane("default", *FanOut.identifier(), job.id)
    [delivery] = client.tasks.read("runner-a", [lane], count=1, block_ms=1000)
    root = delivery.task
    first, second = (subtask_id(root.task_id, i) for i in range(2))
    specs = [task_spec(Leaf("a"), first, "default", parent_id=root.task_id),
             task_spec(Leaf("b"), second, "default", parent_id=root.task_id, depends_on=[first])]  # fmt: skip
    stamp = client.origin().stamp
    events = [TaskCompleted(**stamp(), job_id=job.id, task_id=root.task_id, runner_id="runner-a",
                            subtask_ids=[first, second]),
              *(submitted_event(stamp(), job.id, s) for s in specs)]  # fmt: skip
    claim = TaskClaimed(**stamp(), job_id=job.id, task_id=root.task_id, runner_id="runner-a")
    finish = Finish(root, Outcome.COMPLETED, events, subtasks=specs, claim=claim)
    store_cancel = client.tasks.cancel

    def finishing_first(*args: Any) -> bool:
        monkeypatch.setattr(client.tasks, "cancel", store_cancel)
        assert client.tasks.finish_many("runner-a", None, [finish]) == [FinishStatus.FINISHED]
        return store_cancel(*args)

    monkeypatch.setattr(client.tasks, "cancel", finishing_first)
    done = client.jobs().cancel(job.id)
    assert done.state == "cancelled" and done.tasks_by_state == {"computed": 1, "cancelled": 2}
    assert client.tasks.lane_backlog(
        [client.tasks.lane("default", *Leaf.identifier(), job.id)]
    ) == (
        0,
        0,
    )
    assert [t.state for t in fold(client.tasks.replay()).tasks.values()] == [
        t.state for t in done.tasks
    ]
