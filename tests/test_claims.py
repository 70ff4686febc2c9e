"""When claims are recorded: before a task runs, or, for fast tasks, with its result."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest

from tests.tasks_fixture import FanOut, Gate, Leaf, Sleep
from tests.waiting import wait_for
from tilebox_core import Client
from tilebox_core.domain.events import TaskClaimed, TaskCompleted, TaskLeaseExpired, TaskReleased
from tilebox_core.domain.ids import subtask_id
from tilebox_core.domain.task_projection import fold
from tilebox_core.domain.tasks import Claim, ClaimedTask, Delivery, Finish, Outcome
from tilebox_core.execution.worker import TaskRunner
from tilebox_core.jobs import submitted_event, task_spec


def positions(client: Client, kind: type) -> dict[str, str]:
    """task id -> position in the task log of its event of ``kind``."""
    return {s.event.task_id: s.position for s in client.tasks.replay() if isinstance(s.event, kind)}


def warmed_up(client: Client, tmp_path: Path) -> TaskRunner:
    """A runner that has run fast tasks: it records the claims of the next ones with their results."""
    runner = client.runner(tasks=[FanOut, Sleep, Gate, Leaf], cache_root=tmp_path / "cache")
    client.jobs().submit("warm-up", FanOut(50))
    runner.run_all()
    return runner


def test_fast_tasks_have_their_claims_recorded_with_their_results(
    client: Client, tmp_path: Path
) -> None:
    runner = warmed_up(client, tmp_path)
    job = client.jobs().submit("fast", FanOut(100))
    runner.run_all()
    done = client.jobs().find(job.id)
    assert done.state == "completed" and {t.runner_id for t in done.tasks} == {runner.id}
    claimed, completed = positions(client, TaskClaimed), positions(client, TaskCompleted)
    leaves = [t.id for t in done.tasks if t.name == "test.Sleep"]
    # one log entry holds a leaf's claim and its result: one script call recorded both
    assert sum(claimed[t] == completed[t] for t in leaves) >= len(leaves) // 2
    claims = [e for e in (s.event for s in client.tasks.replay()) if isinstance(e, TaskClaimed)]
    assert len(claims) == len({c.task_id for c in claims})  # each task claimed once


def test_claims_recorded_with_results_are_stamped_when_the_tasks_were_received(
    client: Client, tmp_path: Path
) -> None:
    runner = warmed_up(client, tmp_path)
    jobs = client.jobs().submit_many((f"short-{i}", Sleep(i, seconds=0.002)) for i in range(20))
    runner.run_all()
    events = [s.event for s in client.tasks.replay()]
    ours = {t.id for j in jobs for t in client.jobs().find(j.id).tasks}
    claimed = {e.task_id: e.at for e in events if isinstance(e, TaskClaimed) and e.task_id in ours}
    completed = {
        e.task_id: e.at for e in events if isinstance(e, TaskCompleted) and e.task_id in ours
    }
    assert claimed.keys() == completed.keys() == ours
    assert all(completed[t] - claimed[t] >= dt.timedelta(seconds=0.002) for t in ours)


def test_a_task_slower_than_it_looked_shows_running_while_it_runs(
    client: Client, tmp_path: Path
) -> None:
    runner = warmed_up(client, tmp_path)
    gate = tmp_path / "gate"
    job = client.jobs().submit("slow", Gate(str(gate)))
    worker = threading.Thread(target=runner.run_all)
    worker.start()
    try:
        wait_for(gate.exists)
        started = dt.datetime.fromtimestamp(gate.stat().st_mtime, dt.UTC)
        wait_for(lambda: client.jobs().find(job.id).tasks[0].state == "running")
        assert client.jobs().find(job.id).tasks[0].runner_id == runner.id
    finally:
        gate.unlink(missing_ok=True)
        worker.join(30)
    done = client.jobs().find(job.id)
    assert done.state == "completed"
    claims = [e for e in (s.event for s in client.tasks.replay()) if isinstance(e, TaskClaimed)]
    [claim] = [c for c in claims if c.task_id == done.tasks[0].id]
    # Stamped when the task was received, before it started (the file's time is coarse by a few
    # ms), not when the heartbeat recorded it, at least 50 ms (FLUSH_SECONDS) after it started.
    assert claim.at - started < dt.timedelta(seconds=0.025)


@pytest.mark.cluster
def test_results_of_tasks_cancelled_while_they_ran_unclaimed_are_dropped(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = warmed_up(client, tmp_path)
    job = client.jobs().submit("cancel-me", FanOut(30))
    original = Sleep.execute
    cancelled = threading.Event()

    def cancelling(self: Sleep, context) -> None:  # type: ignore[no-untyped-def]
        if not cancelled.is_set():
            cancelled.set()
            client.jobs().cancel(job.id)  # its other leaves are queued as far as the store knows
        original(self, context)

    monkeypatch.setattr(Sleep, "execute", cancelling)
    runner.run_all()
    done = client.jobs().find(job.id)
    assert done.state == "cancelled" and done.tasks_by_state == {"computed": 1, "cancelled": 30}
    assert client.tasks.lane_backlog(runner.lanes) == (0, 0)  # every entry acknowledged
    assert not set(positions(client, TaskCompleted)) & {
        t.id for t in done.tasks if t.name == "test.Sleep"
    }


@pytest.mark.cluster
def test_a_task_queued_in_a_job_cancelled_meanwhile_is_not_completed(
    client: Client, tmp_path: Path
) -> None:
    runner = warmed_up(client, tmp_path)
    job = client.jobs().submit("late", Leaf("created-while-the-cancel-ran"))
    # as if the cancel had read the job's tasks before this one was created by its parent
    client.redis.hset(client.tasks.shard(job.id).job(job.id), "cancelled", "1")
    runner.run_all()
    done = client.jobs().find(job.id)
    assert done.state == "cancelled" and done.tasks_by_state == {"cancelled": 1}
    assert client.tasks.lane_backlog(runner.lanes) == (0, 0)
    assert done.tasks[0].id not in positions(client, TaskCompleted)


def test_one_finish_records_the_tasks_it_accepts_and_drops_the_others(
    client: Client, tmp_path: Path
) -> None:
    runner = warmed_up(client, tmp_path)
    jobs = client.jobs().submit_many((f"job-{i}", Leaf(str(i))) for i in range(4))
    for late in jobs[0], jobs[2]:  # cancelled as their tasks run: one batch, one finish
        client.redis.hset(client.tasks.shard(late.id).job(late.id), "cancelled", "1")
    runner.run_all()
    done = [client.jobs().find(j.id) for j in jobs]
    assert [j.state for j in done] == ["cancelled", "completed", "cancelled", "completed"]
    events = [s.event for s in client.tasks.replay()]
    kept = {done[1].tasks[0].id, done[3].tasks[0].id}
    for kind in TaskClaimed, TaskCompleted:
        recorded = [
            e.task_id for e in events if isinstance(e, kind) and e.job_id in {j.id for j in jobs}
        ]
        assert sorted(recorded) == sorted(kept)
    claimed, completed = positions(client, TaskClaimed), positions(client, TaskCompleted)
    assert len({claimed[t] for t in kept} | {completed[t] for t in kept}) == 1  # one call


def test_a_runner_stopped_between_batches_hands_back_what_it_read_ahead(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = warmed_up(client, tmp_path)  # fast tasks: it reads the next batch while one runs
    job = client.jobs().submit("stopped", FanOut(1000))
    original, ran = Sleep.execute, []

    def stopping(self: Sleep, context) -> None:  # type: ignore[no-untyped-def]
        ran.append(self.i)
        if len(ran) == 100:
            runner.stop()
        original(self, context)

    monkeypatch.setattr(Sleep, "execute", stopping)
    runner.run_forever()
    lane = client.tasks.lane("default", *Sleep.identifier())
    waiting, pending = client.tasks.lane_backlog([lane])
    assert pending == 0 and waiting == 1000 - len(ran)  # nothing held: the rest queued again
    monkeypatch.setattr(Sleep, "execute", original)
    runner.run_all()
    done = client.jobs().find(job.id)
    assert done.state == "completed" and done.tasks_by_state == {"computed": 1001}
    completed = [
        s.event.task_id for s in client.tasks.replay() if isinstance(s.event, TaskCompleted)
    ]
    assert len(completed) == len(set(completed))


def test_lane_entries_without_their_task_still_run(client: Client, tmp_path: Path) -> None:
    # Entries written before lane entries carried their task: only task and job id.
    job = client.jobs().submit("older", Leaf("old"))
    task = client.jobs().find(job.id).tasks[0]
    task_key = client.store.keys.task(task.id)
    entry = client.redis.hget(task_key, "entry")
    lane = client.tasks.lane("default", "test.Leaf", "v1.0")
    client.redis.xdel(lane, entry)
    older = client.redis.xadd(lane, {"t": task.id, "j": job.id})
    client.redis.hset(task_key, "entry", older)
    client.runner(tasks=[Leaf], cache_root=tmp_path).run_all()
    assert client.jobs().find(job.id).state == "completed"


def claimed_event(client: Client, task: ClaimedTask, runner: str) -> TaskClaimed:
    return TaskClaimed(
        **client.origin().stamp(), job_id=task.job_id, task_id=task.task_id, runner_id=runner
    )


def finish(client: Client, runner: str, task: ClaimedTask, claimed: bool) -> int:
    """Report ``task`` completed by ``runner``, as its worker does; the finish status."""
    claim = None if claimed else claimed_event(client, task, runner)
    events = [TaskCompleted(**client.origin().stamp(), job_id=task.job_id, task_id=task.task_id,
                            runner_id=runner)]  # fmt: skip
    [status] = client.tasks.finish_many(
        runner, None, [Finish(task, Outcome.COMPLETED, events, claim=claim)]
    )
    return status


def take_over(client: Client, runner: str, lane: str) -> Delivery:
    """``runner`` takes over the entry whose lease expired and records its claim, as a worker does."""
    wait_for(lambda: client.tasks.expired([lane], 50, 10))
    [delivery] = client.tasks.take_over(runner, client.tasks.expired([lane], 50, 10), 50)
    task = delivery.task
    expired = TaskLeaseExpired(**client.origin().stamp(), job_id=task.job_id, task_id=task.task_id,
                               previous_runner_id="runner-a", runner_id=runner, deliveries=2)  # fmt: skip
    claims = [Claim(delivery, claimed_event(client, task, runner), expired)]
    assert client.tasks.claim(runner, None, claims) == ["ok"]
    return delivery


def test_a_stalled_runner_does_not_claim_back_a_task_taken_over(client: Client) -> None:
    job = client.jobs().submit("contended", Leaf("x"))
    lane = client.tasks.lane("default", *Leaf.identifier())
    [delivery] = client.tasks.read("runner-a", [lane], count=1, block_ms=1000)
    take_over(client, "runner-b", lane)
    # runner-a, awake again, records the claim it had deferred (its heartbeat does, for a task
    # that turned out slow): refused, the task stays runner-b's
    claims = [Claim(delivery, claimed_event(client, delivery.task, "runner-a"))]
    assert client.tasks.claim("runner-a", None, claims) == ["taken"]
    assert finish(client, "runner-a", delivery.task, claimed=True) == 0
    assert finish(client, "runner-b", delivery.task, claimed=True) == 1
    done = client.jobs().find(job.id)
    assert done.state == "completed" and done.tasks[0].runner_id == "runner-b"


@pytest.mark.parametrize("claimed_first", [False, True], ids=["claim-deferred", "claimed-first"])
def test_only_the_current_owner_of_a_task_can_finish_it(
    client: Client, claimed_first: bool
) -> None:
    job = client.jobs().submit("contended", Leaf("x"))
    lane = client.tasks.lane("default", *Leaf.identifier())
    [delivery] = client.tasks.read("runner-a", [lane], count=1, block_ms=1000)
    task = delivery.task
    if claimed_first:
        claims = [Claim(delivery, claimed_event(client, task, "runner-a"))]
        assert client.tasks.claim("runner-a", None, claims) == ["ok"]
    take_over(client, "runner-b", lane)  # runner-a stalled past its lease
    assert finish(client, "runner-a", task, claimed=claimed_first) == 0  # fenced off
    assert finish(client, "runner-b", task, claimed=True) == 1
    done = client.jobs().find(job.id)
    assert done.state == "completed" and done.tasks[0].runner_id == "runner-b"
    events = [s.event for s in client.tasks.replay()]
    assert [e.runner_id for e in events if isinstance(e, TaskCompleted)] == ["runner-b"]
    claims = [e.runner_id for e in events if isinstance(e, TaskClaimed)]
    assert claims == (["runner-a", "runner-b"] if claimed_first else ["runner-b"])
    assert client.tasks.lane_backlog([lane]) == (0, 0)


@pytest.mark.parametrize("taker_claimed", [True, False], ids=["taken-over", "taken-unclaimed"])
def test_staging_and_finishing_agree_on_the_owner(client: Client, taker_claimed: bool) -> None:
    # A runner stalled past its lease stages subtasks and finishes. Once the runner that took its
    # task over has recorded its claim, both are refused; before (it has only XCLAIMed the entry)
    # both are accepted, and the taker's claim then finds the task done. Never one of the two:
    # a parent completed without the subtasks it staged, or with a chunk its finish disowns.
    job = client.jobs().submit("contended fan-out", FanOut(0))
    lane = client.tasks.lane("default", *FanOut.identifier())
    [delivery] = client.tasks.read("runner-a", [lane], count=1, block_ms=1000)
    task = delivery.task
    claims = [Claim(delivery, claimed_event(client, task, "runner-a"))]
    assert client.tasks.claim("runner-a", None, claims) == ["ok"]
    if taker_claimed:
        take_over(client, "runner-b", lane)
    else:
        wait_for(lambda: client.tasks.expired([lane], 50, 10))
        client.tasks.take_over("runner-b", client.tasks.expired([lane], 50, 10), 50)
    specs = [task_spec(Sleep(i), subtask_id(task.task_id, i), "default", parent_id=task.task_id)
             for i in range(10)]  # fmt: skip
    submitted = [submitted_event(client.origin().stamp(), job.id, s) for s in specs]
    client.tasks.stage("runner-a", Finish(task, Outcome.COMPLETED, [*submitted], subtasks=specs))
    staged = client.tasks.task_ids(job.id)[1:]
    status = finish(client, "runner-a", task, claimed=True)
    if taker_claimed:
        assert staged == [] and status == 0
    else:
        assert staged == [s.id for s in specs] and status == 1
        assert client.redis.hget(client.store.keys.task(task.task_id), "open") == b"10"


@pytest.mark.parametrize("claimed_first", [False, True], ids=["claim-deferred", "claimed-first"])
def test_a_task_handed_back_unrun_leaves_its_job_started_either_way(
    client: Client, claimed_first: bool
) -> None:
    job = client.jobs().submit("handed back", Leaf("x"))
    lane = client.tasks.lane("default", *Leaf.identifier())
    [delivery] = client.tasks.read("runner-a", [lane], count=1, block_ms=1000)
    task, claim = delivery.task, claimed_event(client, delivery.task, "runner-a")
    if claimed_first:
        assert client.tasks.claim("runner-a", None, [Claim(delivery, claim)]) == ["ok"]
    released = TaskReleased(**client.origin().stamp(), job_id=job.id, task_id=task.task_id,
                            runner_id="runner-a")  # fmt: skip
    finish = Finish(task, Outcome.RELEASED, [released], claim=None if claimed_first else claim)
    assert client.tasks.finish_many("runner-a", None, [finish]) == [1]
    found = client.jobs().find(job.id)
    assert found.state == "running" and found.tasks[0].state == "queued"
    assert found.tasks[0].runner_id is None
    assert fold(client.tasks.replay()).jobs[job.id].state == found.state
    assert client.tasks.lane_backlog([lane]) == (1, 0)  # queued again, as a new entry


def test_entries_of_different_lanes_with_the_same_id_are_told_apart(
    client: Client, tmp_path: Path
) -> None:
    """One submit call gives the entries it adds to different lanes the same stream ids; a runner
    that named deliveries by entry id alone recorded one task's claim for another's (a failed
    task then had no TaskClaimed in the log, a completed one two)."""
    runner = warmed_up(client, tmp_path)
    jobs = client.jobs().submit_many(
        (f"pair-{i}", Leaf(f"l{i}") if i % 2 else Sleep(i)) for i in range(200)
    )
    pairs = [(t, j.id) for j in jobs for t in client.tasks.task_ids(j.id)]
    entries = client.tasks.tasks([t for t, _ in pairs], ["entry"], [j for _, j in pairs])
    assert len({e["entry"] for e in entries}) < len(entries)  # the ids do repeat across lanes
    runner.run_all()
    claims = [e for e in (s.event for s in client.tasks.replay()) if isinstance(e, TaskClaimed)]
    assert len(claims) == len({c.task_id for c in claims})  # each task's own claim, once
    claimed = {c.task_id for c in claims}
    for job in jobs:
        (task,) = client.jobs().find(job.id).tasks
        assert task.state == "computed" and task.id in claimed
