"""The jobs API as Tilebox's: find/retry/cancel take a Job or an id, ``query`` filters by
temporal extent (times, time intervals, id ranges), job and task states, clusters and name, jobs
carry execution stats, and a job's root tasks may each go to their own cluster."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest

from tests.tasks_fixture import FanOut, Flaky, Leaf, Sleep
from tilebox_core import (
    Client,
    Conflict,
    ExecutionContext,
    IDInterval,
    InMemoryCache,
    InvalidInput,
    JobState,
    NotFound,
    Task,
    TaskState,
    TimeInterval,
)


@pytest.mark.parametrize("form", ["job", "str", "uuid"])
def test_find_retry_and_cancel_take_a_job_or_an_id(
    client: Client, form: str, tmp_path: Path
) -> None:
    def ref(job: object) -> object:
        return {"job": job, "str": job.id, "uuid": uuid.UUID(job.id)}[form]  # type: ignore[attr-defined]

    failing = client.jobs().submit("flaky", Flaky("x"))
    assert client.jobs().find(ref(failing)).id == failing.id  # type: ignore[arg-type]
    client.runner(tasks=[Flaky], cache_root=tmp_path).run_all()
    assert client.jobs().find(ref(failing)).state is JobState.FAILED  # type: ignore[arg-type]
    assert client.jobs().retry(ref(failing)) == 1  # type: ignore[arg-type]
    assert client.jobs().find(failing).state is not JobState.FAILED
    queued = client.jobs().submit("to-cancel", Leaf("never"))
    assert client.jobs().cancel(ref(queued)).state is JobState.CANCELLED  # type: ignore[arg-type]
    assert client.jobs().wait(ref(queued), timeout=5).state is JobState.CANCELED  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="is not a job: pass a Job or a job id"):
        client.jobs().find(42)  # type: ignore[arg-type]


def test_tilebox_state_names_are_aliases() -> None:
    assert JobState.SUBMITTED is JobState.QUEUED
    assert JobState.CANCELED is JobState.CANCELLED
    assert JobState.STARTED is JobState.RUNNING
    assert list(JobState) == ["queued", "running", "completed", "failed", "cancelled"]


def three_jobs(client: Client, tmp_path: Path) -> tuple[list[str], dt.datetime]:
    """A failed job, then a completed one, then a queued one on another cluster; and a moment
    between the first and the second."""
    client.clusters().create("Other", slug="other")
    failed = client.jobs().submit("Ingest-Scene", Flaky("a"))
    between = dt.datetime.now(dt.UTC)
    while dt.datetime.now(dt.UTC) <= between:  # a later clock tick for the next submission
        pass
    completed = client.jobs().submit("ingest-tile", Leaf("b"))
    queued = client.jobs().submit("report", Leaf("c"), cluster="other")
    client.runner(tasks=[Flaky, Leaf], cache_root=tmp_path).run_all()
    return [failed.id, completed.id, queued.id], between


def ids(jobs: list[object]) -> list[str]:
    return [j.id for j in jobs]  # type: ignore[attr-defined]


def test_query_filters_as_tilebox(client: Client, tmp_path: Path) -> None:
    (failed, completed, queued), _ = three_jobs(client, tmp_path)
    jobs = client.jobs()
    assert ids(jobs.query()) == [queued, completed, failed]  # newest first
    # job_states: one or several, Tilebox's names too
    assert ids(jobs.query(job_states=JobState.FAILED)) == [failed]
    assert ids(jobs.query(job_states=[JobState.SUBMITTED, JobState.COMPLETED])) == [
        queued,
        completed,
    ]
    # task_states: jobs with at least one task in one of them
    assert ids(jobs.query(task_states=TaskState.FAILED)) == [failed]
    assert ids(jobs.query(task_states=[TaskState.QUEUED, TaskState.FAILED])) == [queued, failed]
    # clusters: a slug, a Cluster, or several
    other = client.clusters().find("other")
    assert ids(jobs.query(clusters="other")) == ids(jobs.query(clusters=other)) == [queued]
    assert ids(jobs.query(clusters=["default", other])) == [queued, completed, failed]
    # name: case-insensitive substring
    assert ids(jobs.query(name="INGEST")) == [completed, failed]
    assert ids(jobs.query(name="ingest", job_states=JobState.COMPLETED)) == [completed]
    # paging
    assert ids(jobs.query(limit=2)) == [queued, completed]
    assert ids(jobs.query(limit=2, offset=2)) == [failed]
    assert ids(jobs.query(task_states=[TaskState.QUEUED, TaskState.FAILED], limit=1, offset=1)) == [
        failed
    ]


def test_query_by_temporal_extent(client: Client, tmp_path: Path) -> None:
    (failed, completed, queued), between = three_jobs(client, tmp_path)
    jobs = client.jobs()
    hour = dt.timedelta(hours=1)
    now = dt.datetime.now(dt.UTC)
    # a pair of datetimes or ISO strings: [start, end)
    assert ids(jobs.query((between, now + hour))) == [queued, completed]
    assert ids(jobs.query((now - hour, between))) == [failed]
    assert ids(jobs.query([(now - hour).isoformat(), between.isoformat()])) == [failed]
    day = now.date().isoformat()
    assert ids(jobs.query((day, (now + dt.timedelta(days=1)).date().isoformat()))) == [
        queued, completed, failed,
    ]  # fmt: skip
    # naive datetimes are UTC, as in Tilebox
    naive = between.replace(tzinfo=None)
    assert ids(jobs.query((naive, naive + hour))) == [queued, completed]
    # a TimeInterval, with its ends' inclusiveness
    submitted = jobs.find(completed).submitted_at
    assert ids(jobs.query(TimeInterval(submitted, submitted, end_inclusive=True))) == [completed]
    assert ids(jobs.query(TimeInterval(submitted, submitted))) == []
    assert ids(jobs.query(submitted)) == [completed]  # one moment: [t, t]
    # job ids: a pair of id strings or UUIDs [start, end], or an IDInterval
    assert ids(jobs.query((failed, completed))) == [completed, failed]
    assert ids(jobs.query((uuid.UUID(completed), uuid.UUID(queued)))) == [queued, completed]
    exclusive = IDInterval(uuid.UUID(failed), uuid.UUID(queued), start_exclusive=True,
                           end_inclusive=False)  # fmt: skip
    assert ids(jobs.query(exclusive)) == [completed]
    with pytest.raises(InvalidInput, match="invalid time 'yesterday': use ISO 8601"):
        jobs.query(("yesterday", "today"))
    with pytest.raises(InvalidInput, match="cannot use 42 as a temporal extent"):
        jobs.query(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="unknown job state"):
        jobs.query(job_states="done")  # type: ignore[arg-type]


def test_execution_stats(client: Client, tmp_path: Path) -> None:
    job = client.jobs().submit("fan", FanOut(4))
    stats = client.jobs().find(job).execution_stats
    assert stats.first_task_started_at is None and stats.last_task_stopped_at is None
    assert (stats.total_tasks, stats.tasks_by_state) == (1, {TaskState.QUEUED: 1})
    assert stats.elapsed_time == stats.compute_time == dt.timedelta(0)
    client.runner(tasks=[FanOut, Sleep], cache_root=tmp_path, concurrency=2).run_all()
    found = client.jobs().find(job)
    stats = found.execution_stats
    assert stats.total_tasks == 5
    assert stats.tasks_by_state == {TaskState.COMPUTED: 5}
    assert stats.first_task_started_at is not None and stats.last_task_stopped_at is not None
    assert found.submitted_at - dt.timedelta(seconds=5) < stats.first_task_started_at
    assert stats.first_task_started_at <= stats.last_task_stopped_at
    assert stats.elapsed_time == stats.last_task_stopped_at - stats.first_task_started_at
    assert stats.compute_time == dt.timedelta(seconds=found.compute_seconds)
    if stats.elapsed_time:
        assert stats.parallelism == round(stats.compute_time / stats.elapsed_time, 3)
    # In a job's JSON too (the CLI's --json).
    import msgspec

    encoded = msgspec.json.decode(msgspec.json.encode(found))
    assert encoded["execution_stats"]["total_tasks"] == 5


def test_one_cluster_per_root_task(client: Client, tmp_path: Path) -> None:
    client.clusters().create("East", slug="east")
    west = client.clusters().create("West", slug="west")
    job = client.jobs().submit("split", [Leaf("e"), Leaf("w")], cluster=["east", west])
    assert job.cluster == "east"  # the job's own cluster is its first root task's
    found = client.jobs().find(job)
    assert sorted(t.cluster for t in found.tasks) == ["east", "west"]
    client.runner("east", tasks=[Leaf], cache_root=tmp_path).run_all()
    found = client.jobs().find(job)
    assert {t.cluster: t.state for t in found.tasks} == {"east": "computed", "west": "queued"}
    client.runner(west, tasks=[Leaf], cache_root=tmp_path).run_all()
    assert client.jobs().find(job).state is JobState.COMPLETED
    with pytest.raises(InvalidInput, match=r"2 root task\(s\) and 1 cluster"):
        client.jobs().submit("bad", [Leaf("a"), Leaf("b")], cluster=["east"])
    with pytest.raises(NotFound, match="nowhere"):
        client.jobs().submit("bad", [Leaf("a")], cluster=["nowhere"])
    assert len(client.jobs().query(name="bad")) == 0


class Batch(Task):
    n: int

    def execute(self, context: ExecutionContext) -> None:
        with pytest.warns(DeprecationWarning, match="use submit_subtasks instead"):
            context.submit_batch([BatchLeaf(i) for i in range(self.n)])


class BatchLeaf(Task):
    i: int

    def execute(self, context: ExecutionContext) -> None:
        context.job_cache[str(self.i)] = b"done"


def test_submit_batch_is_tilebox_deprecated_submit_subtasks(client: Client) -> None:
    cache = InMemoryCache()
    job = client.jobs().submit("batch", Batch(3))
    client.runner(tasks=[Batch, BatchLeaf], cache=cache).run_all()
    assert client.jobs().find(job).state is JobState.COMPLETED
    assert sorted(cache.group(job.id)) == ["0", "1", "2"]


def test_retry_of_a_job_without_failures_is_refused(client: Client, tmp_path: Path) -> None:
    job = client.jobs().submit("ok", Leaf("fine"))
    client.runner(tasks=[Leaf], cache_root=tmp_path).run_all()
    with pytest.raises(Conflict, match="no failed tasks to retry"):
        client.jobs().retry(client.jobs().find(job))


def test_execution_stats_from_the_tasks_runs() -> None:
    """A task started its compute time before it finished; unfinished ones add nothing."""
    from tilebox_core.domain.jobs import execution_stats

    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    stats = execution_stats([(1000, 400), (1200, 500), (0, 0)], 3, {"computed": 2, "queued": 1})
    assert stats.first_task_started_at == epoch + dt.timedelta(milliseconds=600)
    assert stats.last_task_stopped_at == epoch + dt.timedelta(milliseconds=1200)
    assert stats.elapsed_time == dt.timedelta(milliseconds=600)
    assert stats.compute_time == dt.timedelta(milliseconds=900)
    assert stats.parallelism == 1.5  # two tasks overlapping: 900 ms of work in 600 ms
    assert (stats.total_tasks, stats.tasks_by_state) == (3, {"computed": 2, "queued": 1})
    none = execution_stats([], 1, {"queued": 1})
    assert none.first_task_started_at is None and none.parallelism == 0.0
