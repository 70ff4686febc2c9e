"""Jobs: submitting task trees, reading their state, retrying and cancelling them.

Job and task state is kept in hashes that the task scripts update atomically with the events they
append (a materialised projection of the task log); reading a job is therefore a few hash reads,
not a replay.
"""

from __future__ import annotations

import datetime as dt
import math
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeAlias

import msgspec

from tilebox_core.domain.control import require_cluster
from tilebox_core.domain.diagnosis import why_queued
from tilebox_core.domain.diagram import job_diagram
from tilebox_core.domain.errors import Conflict, InvalidInput, NotFound
from tilebox_core.domain.events import (
    Event,
    JobCancelled,
    JobRetried,
    JobsDeleted,
    JobSubmitted,
    Origin,
)
from tilebox_core.domain.identifiers import make_identifier
from tilebox_core.domain.ids import id_time_ms, new_id, utcnow
from tilebox_core.domain.intervals import IDInterval, TemporalExtent, parse_temporal_extent
from tilebox_core.domain.jobs import (
    MAX_INPUT_BYTES,
    Job,
    Progress,
    TaskInfo,
    deployed_task,
    execution_stats,
    job_state,
    validated_input,
)
from tilebox_core.domain.projection import (
    ClusterLike,
    ControlState,
    cluster_slug,
)
from tilebox_core.domain.retention import RemovedJobFold, retention_ms, set_retention
from tilebox_core.domain.tasklogs import TaskLogLine
from tilebox_core.domain.tasks import (
    JOB_DONE,
    TASK_UNSTARTED,
    JobInfo,
    JobState,
    NewJob,
    TaskError,
    TaskSpec,
    TaskState,
    submitted_event,
)

from .redis.tasklogs import TaskLogStore
from .redis.taskstore import TASKS, Removal
from .session import Session
from .task import Task, encode_input, task_identifier

# Jobs per submit script call: one call's work blocks the server, so a bulk submission is cut
# into calls of a few milliseconds each, and runners start on the first jobs meanwhile.
SUBMIT_CHUNK = 200

QUERY_PAGE = 500  # job hashes read per round trip by query
# The sweep (expire): jobs scheduled per call, due jobs read per round, and task hashes removed
# per script call (a job with more is removed alone, in one call: atomically).
EXPIRE_BATCH, REMOVE_TASKS = 1000, 10_000
# A removed job's history is read from its submission time (its UUIDv7 id) less this, for clocks
# that disagree (the log's positions are the server's time, the id the submitter's); a job whose
# JobSubmitted is not found by this much after it is unknown.
CLOCK_SKEW_MS = 10 * 60 * 1000

# What a job retry names: its failed tasks, and those not started, which its failure may hold.
_RETRIED = TASK_UNSTARTED | {TaskState.FAILED}

JobIDLike: TypeAlias = Job | str | uuid.UUID
"""A job or its id, wherever the API takes a job (as Tilebox's ``JobIDLike``)."""


def job_id_of(job: JobIDLike) -> str:
    if isinstance(job, Job):
        return job.id
    if isinstance(job, uuid.UUID):
        return str(job)
    if isinstance(job, str):
        return job
    raise InvalidInput(f"{job!r} is not a job: pass a Job or a job id")


TASK_FIELDS = (
    "name", "version", "state", "parent", "runner", "release", "attempts", "compute_ms",
    "cluster", "finished_ms", "display", "error",
)  # fmt: skip
_task_error = msgspec.json.Decoder(TaskError)


def task_spec(
    task: Task, task_id: str, cluster: str, *, parent_id: str | None = None,
    depends_on: Sequence[str] = (), max_retries: int = 0, optional: bool = False,
    scopes: str = "",
) -> TaskSpec:  # fmt: skip
    identifier = task_identifier(type(task))
    return TaskSpec(
        task_id, identifier.name, identifier.version, cluster, encode_input(task),
        parent_id, list(dict.fromkeys(depends_on)), max_retries, optional,  # a dependency once
        scopes,
    )  # fmt: skip


class Jobs:
    def __init__(self, client: Session) -> None:
        self._client = client
        self._store = client.tasks
        self._logs = TaskLogStore(client.tasks)

    # --- submitting -------------------------------------------------------------------------------

    def submit(
        self,
        name: str,
        tasks: Task | Sequence[Task],
        cluster: ClusterLike | Sequence[ClusterLike] | None = None,
        max_retries: int = 0,
        retention: dt.timedelta | None = None,
    ) -> Job:
        """Submit a job whose root tasks are ``tasks``; returns it (state ``queued``).

        ``cluster``: where the root tasks run (default: the client's cluster), or, as in Tilebox,
        a list of one cluster per root task. The job's own cluster is its first root task's.
        ``retention``: how long it stays in Redis once it ended (default: the team's, see
        ``retention()``; 0: removed as soon as it ends)."""
        if cluster is None or isinstance(cluster, ClusterLike):
            return self.submit_many([(name, tasks)], cluster, max_retries, retention)[0]
        roots = [tasks] if isinstance(tasks, Task) else list(tasks)
        slugs = [cluster_slug(c) for c in cluster]
        if len(slugs) != len(roots):
            raise InvalidInput(
                f"job {name!r} has {len(roots)} root task(s) and {len(slugs)} cluster(s); pass "
                "one cluster for all, or exactly one per root task"
            )
        _retries(max_retries)
        specs = [task_spec(t, new_id(), c, max_retries=max_retries) for t, c in zip(roots, slugs)]
        if not specs:
            raise InvalidInput(f"job {name!r} needs at least one task")
        return self._submit([(name, specs)], max_retries, retention)[0]

    def submit_many(
        self,
        jobs: Iterable[tuple[str, Task | Sequence[Task]]],
        cluster: ClusterLike | None = None,
        max_retries: int = 0,
        retention: dt.timedelta | None = None,
    ) -> list[Job]:
        """Submit many jobs, each ``(name, root task or tasks)``, in few round trips: every job is
        created atomically, in order, and runners may start on the first ones while later ones
        are still being sent. All are checked before any is submitted."""
        cluster = cluster_slug(cluster) if cluster is not None else self._client.settings.cluster
        _retries(max_retries)
        requests = []
        for name, tasks in jobs:
            roots = [tasks] if isinstance(tasks, Task) else list(tasks)
            if not roots:
                raise InvalidInput(f"job {name!r} needs at least one task")
            requests.append((name, [task_spec(t, new_id(), cluster, max_retries=max_retries)
                                    for t in roots]))  # fmt: skip
        return self._submit(requests, max_retries, retention)

    def submit_by_name(
        self,
        name: str,
        task_name: str,
        version: str | None,
        input_json: str,
        cluster: str | None = None,
        max_retries: int = 0,
        max_input_bytes: int = MAX_INPUT_BYTES,
        retention: dt.timedelta | None = None,
    ) -> Job:
        """Submit a job from a task identifier and its JSON input (what ``tilebox job submit`` does).

        The input is checked against the task's schema when a release deployed on the cluster
        provides the task; without ``version``, the newest deployed version is used. An input over
        ``max_input_bytes`` is refused.
        """
        cluster = cluster or self._client.settings.cluster
        state = self._client.state()
        require_cluster(state, cluster)
        deployed = deployed_task(state, cluster, task_name, version)
        if version is None:
            if deployed is None:
                raise InvalidInput(
                    f"no release deployed on cluster {cluster!r} provides task {task_name!r}: "
                    "pass --version vMAJOR.MINOR"
                )
            version = deployed.version
        identifier = make_identifier(task_name, version)
        input_json = validated_input(
            input_json, deployed.input_schema if deployed else None, str(identifier),
            max_input_bytes,
        )  # fmt: skip
        spec = TaskSpec(
            new_id(), identifier.name, identifier.version, cluster, input_json,
            max_retries=_retries(max_retries),
        )  # fmt: skip
        return self._submit([(name, [spec])], max_retries, retention)[0]

    def _submit(
        self, requests: Sequence[tuple[str, list[TaskSpec]]], max_retries: int,
        retention: dt.timedelta | None = None,
    ) -> list[Job]:  # fmt: skip
        """Create the jobs ``requests`` (name, root task specs, each on its cluster)."""
        for name, _ in requests:
            if not name.strip():
                raise InvalidInput("a job needs a non-empty name")
        # A cluster the cached projection knows needs no round trip; an unknown one may be new.
        known = self._client.cached_state()
        for cluster in dict.fromkeys(s.cluster for _, specs in requests for s in specs):
            require_cluster(known if cluster in known.clusters else self._client.state(), cluster)
        # the team's retention as it is now (read afresh: it is the job's from now on)
        keep_ms = retention_ms(self._client.state() if retention is None else known, retention)
        origin = self._client.origin()
        views: list[Job] = []

        def chunks() -> Iterator[list[NewJob]]:
            """The jobs to create, SUBMIT_CHUNK at a time, made as the store sends them."""
            for start in range(0, len(requests), SUBMIT_CHUNK):
                chunk = []
                for name, specs in requests[start : start + SUBMIT_CHUNK]:
                    job = new_job(origin, name, specs[0].cluster, specs, max_retries, keep_ms)
                    chunk.append(job)
                    views.append(job_view(job, origin))
                yield chunk

        self._store.submit_jobs(chunks())
        return views

    # --- reading ----------------------------------------------------------------------------------

    def find(self, job: JobIDLike, with_tasks: bool = True, with_dependencies: bool = False) -> Job:
        """The job ``job`` (a Job, read afresh, or its id); ``with_dependencies`` also fills each
        task's ``depends_on`` (one more field read per task, so only when asked: the diagram
        needs it, most readers not)."""
        job_id = job_id_of(job)
        fields = self._store.job(job_id)
        if not fields:
            return self._removed(job_id, with_tasks)
        return self._jobs([(job_id, fields)], with_tasks, with_dependencies)[0]

    def _removed(self, job_id: str, with_tasks: bool = True) -> Job:
        """A job no longer in Redis, as its events in the task log left it (``removed_at`` and
        ``removed_reason`` set): read from its submission time, its UUIDv7 id's, to its
        JobsDeleted. NotFound if the log shows no such job."""
        submitted_ms = id_time_ms(job_id)
        if submitted_ms is None:
            raise NotFound(f"unknown job {job_id!r}; list jobs with 'tilebox job list'")
        fold = RemovedJobFold(job_id)
        stream = self._store.shard(job_id).log(TASKS)
        after = f"{max(submitted_ms - CLOCK_SKEW_MS, 0)}-0"
        for position, event in self._client.store.replay_stream(stream, after):
            fold.apply(event)
            if fold.done:
                break
            if fold.submitted is None and int(position.partition("-")[0]) > (
                submitted_ms + CLOCK_SKEW_MS
            ):
                break  # not submitted about when its id says: no such job
        view = fold.view() if fold.done else None
        if view is None:
            raise NotFound(f"unknown job {job_id!r}; list jobs with 'tilebox job list'")
        return view if with_tasks else msgspec.structs.replace(view, tasks=[])

    def visualize(self, job: JobIDLike) -> str:
        """The task tree of ``job`` (a Job or its id) as an SVG diagram, read afresh: states
        coloured, dependencies as arrows, wide fan-outs of identical leaves grouped."""
        return job_diagram(self.find(job, with_dependencies=True))

    def display(self, job: JobIDLike) -> None:
        """Show ``visualize(job)`` in a notebook (IPython)."""
        try:
            from IPython.display import SVG, display
        except ImportError:
            raise ImportError(
                "jobs().display needs IPython (run it in Jupyter, or pip install ipython); "
                "jobs().visualize(job) returns the SVG text without it"
            ) from None
        display(SVG(data=self.visualize(job)))

    def _logged(self, job_id: str) -> None:
        """NotFound unless job ``job_id`` is in Redis, where its task logs are: saying so of one
        that was removed (its logs went with it; its history did not)."""
        if self._store.job(job_id):
            return
        gone = self._removed(job_id, with_tasks=False)  # NotFound: no such job at all
        when = "" if gone.removed_at is None else f" {gone.removed_at:%Y-%m-%d %H:%M:%S} UTC"
        raise NotFound(
            f"job {job_id} was removed{when} ({gone.removed_reason}) and its task logs with it; "
            f"'tilebox job get {job_id}' shows its history"
        )

    def _fields(self, job_id: str) -> dict[str, Any]:
        fields = self._store.job(job_id)
        if not fields:
            raise NotFound(f"unknown job {job_id!r}; list jobs with 'tilebox job list'")
        return fields

    def _job(self, job_id: str, fields: dict[str, Any], with_tasks: bool) -> Job:
        """The job view from its hash ``fields`` and its tasks' rows."""
        return self._jobs([(job_id, fields)], with_tasks)[0]

    def _jobs(
        self,
        found: Sequence[tuple[str, dict[str, Any]]],
        with_tasks: bool,
        with_dependencies: bool = False,
    ) -> list[Job]:
        """Job views from (id, hash fields) pairs; two round trips however many jobs."""
        task_ids = self._store.task_ids_of(found)
        fields_read = (*TASK_FIELDS, "chain") if with_dependencies else TASK_FIELDS
        rows = iter(self._store.tasks(
            [t for ids in task_ids for t in ids], fields_read,
            [job_id for (job_id, _), ids in zip(found, task_ids) for _ in ids],
        ))  # fmt: skip
        views = []
        for (job_id, fields), ids in zip(found, task_ids):
            job_rows = [next(rows) for _ in ids]
            infos = [_task_info(task_id, row) for task_id, row in zip(ids, job_rows)]
            if with_dependencies:
                infos = _with_dependencies(infos, job_rows, self._store.task_key_prefix(job_id))
            by_state: dict[str, int] = dict.fromkeys(TaskState, 0)
            for info in infos:
                by_state[info.state] = by_state.get(info.state, 0) + 1
            counts = {k: v for k, v in by_state.items() if v}
            runs = [(int(r["finished_ms"] or 0), int(r["compute_ms"] or 0)) for r in job_rows]
            compute_ms = sum(compute for _, compute in runs)
            views.append(Job(
                id=job_id, name=fields["name"], cluster=fields["cluster"], state=job_state(fields),
                submitted_at=dt.datetime.fromisoformat(fields["submitted_at"]),
                submitted_by=fields["submitted_by"], total_tasks=len(infos),
                tasks_by_state=counts, compute_seconds=round(compute_ms / 1000, 3),
                progress=_progress(fields), tasks=infos if with_tasks else [],
                execution_stats=execution_stats(runs, len(infos), counts),
            ))  # fmt: skip
        return views

    def query(
        self,
        temporal_extent: TemporalExtent | None = None,
        job_states: JobState | Sequence[JobState] | None = None,
        name: str | None = None,
        task_states: TaskState | Sequence[TaskState] | None = None,
        clusters: ClusterLike | Sequence[ClusterLike] | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Job]:
        """Jobs, newest first, as Tilebox's ``jobs().query``: submitted within ``temporal_extent``
        (a time interval, a pair of times [start, end), one time, or a pair of job ids
        [start, end]; default: any time), in one of ``job_states``, whose name contains ``name``
        (case-insensitive), with a task in one of ``task_states``, on one of ``clusters``.
        ``limit`` (default: all) and ``offset`` page through the matches. At most the newest
        100,000 jobs of the extent are looked at."""
        extent = parse_temporal_extent(temporal_extent) if temporal_extent is not None else None
        wanted_jobs = _states(job_states, JobState, "job")
        wanted_tasks = _states(task_states, TaskState, "task")
        on = set() if clusters is None else {
            cluster_slug(c) for c in ([clusters] if isinstance(clusters, ClusterLike) else clusters)
        }  # fmt: skip
        needle = name.casefold() if name else None
        if limit is not None and limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {limit}")
        low, high = extent.bounds_ms() if extent is not None else (float("-inf"), float("inf"))
        # (the index is in ms of the server's clock; the extent is matched below, exactly)
        ids = self._store.job_ids(low - CLOCK_SKEW_MS, high + CLOCK_SKEW_MS, limit=100_000)
        wanted = math.inf if limit is None else offset + limit
        found: list[tuple[str, dict[str, Any]]] = []  # matches, read as views at the end
        views: list[Job] = []  # matches, read as views already (to filter by task state)
        for start in range(0, len(ids), QUERY_PAGE):  # job hashes a page per round trip
            page = ids[start : start + QUERY_PAGE]
            candidates = []
            for job_id, fields in zip(page, self._store.jobs(page)):
                if not fields:
                    continue
                if isinstance(extent, IDInterval):
                    if not extent.contains(job_id):
                        continue
                elif extent is not None and not extent.contains(
                    dt.datetime.fromisoformat(fields["submitted_at"])
                ):
                    continue
                if needle and needle not in fields.get("name", "").casefold():
                    continue
                if wanted_jobs and job_state(fields) not in wanted_jobs:
                    continue
                if on and fields.get("cluster") not in on:
                    continue
                candidates.append((job_id, fields))
            if wanted_tasks:  # task counts are in the job views: read them for this page only
                page_views = self._jobs(candidates, with_tasks=False)
                views += [v for v in page_views if wanted_tasks & v.tasks_by_state.keys()]
            else:
                found += candidates
            if len(views if wanted_tasks else found) >= wanted:
                break
        end = None if limit is None else offset + limit
        if wanted_tasks:
            return views[offset:end]
        return self._jobs(found[offset:end], with_tasks=False)

    def logs(self, job: Job | str, task: str | None = None) -> list[TaskLogLine]:
        """What the tasks of ``job`` (a Job or its id) logged through ``context.logger``, oldest
        first; only task ``task``'s when given. Notes of lines dropped (an execution logged more
        than it may keep) are among them, with ``dropped`` set."""
        job_id = job if isinstance(job, str) else job.id
        self._logged(job_id)  # an unknown job is one clear error, not an empty list
        found: list[TaskLogLine] = []
        after = "0-0"
        while page := self._logs.read(job_id, after):
            after = page[-1][0]
            found += (line for _, line in page if task is None or line.task_id == task)
        return found

    def follow_logs(
        self, job: Job | str, task: str | None = None, interval: float = 0.5
    ) -> Iterator[TaskLogLine]:
        """``logs(job, task)``, then each line as it is written, until the job is completed,
        failed or cancelled (and its last lines are read)."""
        job_id = job if isinstance(job, str) else job.id
        self._logged(job_id)
        after = "0-0"
        while True:
            done = job_state(self._fields(job_id)) in JOB_DONE
            while page := self._logs.read(job_id, after):
                after = page[-1][0]
                yield from (line for _, line in page if task is None or line.task_id == task)
            if done:  # read after it was done: every line its runners wrote before is in
                return
            for entry, line in self._logs.wait(job_id, after, int(interval * 1000)):
                after = entry
                if task is None or line.task_id == task:
                    yield line

    def why_queued(self, job: Job) -> list[str]:
        """Why the queued tasks of ``job`` are not running (empty when a runner should take them)."""

        if not any(t.state == "queued" for t in job.tasks):
            return []
        runners = self._client.runners.live(job.cluster)
        return why_queued(job, self._client.state(), runners)

    def unfinished_on(self, cluster: str) -> int:
        """How many jobs submitted to ``cluster`` are queued or running (of the newest 100,000)."""
        ids = self._store.job_ids(limit=100_000)
        count = 0
        for start in range(0, len(ids), QUERY_PAGE):  # job hashes only, a page per round trip
            for fields in self._store.jobs(ids[start : start + QUERY_PAGE]):
                if fields.get("cluster") == cluster and job_state(fields) in ("queued", "running"):
                    count += 1
        return count

    def wait(
        self,
        job: JobIDLike,
        timeout: float | None = None,
        on_update: Callable[[Job], None] | None = None,
        interval: float = 0.2,
    ) -> Job:
        """Poll until the job is completed, failed or cancelled (or ``timeout`` seconds pass).

        Each poll reads the job's hash only; the full view (every task's row) is read for
        ``on_update``, at most every ``interval`` seconds per 2,000 tasks (a waiting terminal
        must not load the server like a runner), and once at the end.
        """
        job_id = job_id_of(job)
        deadline = None if timeout is None else time.monotonic() + timeout
        next_update = 0.0
        while True:
            fields = self._store.job(job_id)
            if not fields:  # removed: it ended (or was deleted)
                removed = self._removed(job_id, with_tasks=False)
                if on_update is not None:
                    on_update(removed)
                return removed
            done = job_state(fields) in JOB_DONE
            if done or (deadline is not None and time.monotonic() > deadline):
                job = self._job(job_id, fields, with_tasks=False)
                if on_update is not None:
                    on_update(job)
                return job
            if on_update is not None and time.monotonic() >= next_update:
                job = self._job(job_id, fields, with_tasks=False)
                on_update(job)
                next_update = time.monotonic() + interval * max(1.0, job.total_tasks / 2000)
            time.sleep(interval)

    # --- changing ---------------------------------------------------------------------------------

    def retry(self, job_or_id: JobIDLike) -> int:
        """Re-queue the failed tasks of a job (a Job or its id; completed work is kept), and
        queue again the tasks its failure held: they run after the retry. Returns how many failed
        tasks were re-queued."""
        job_id = job_id_of(job_or_id)
        job = self.find(job_id)
        if job.state is JobState.CANCELLED:
            raise Conflict(f"job {job_id} was cancelled; submit it again instead of retrying")
        if not any(t.state is TaskState.FAILED for t in job.tasks):
            raise Conflict(f"job {job_id} has no failed tasks to retry (state: {job.state})")
        event = JobRetried(
            **self._client.origin().stamp(), job_id=job_id,
            task_ids=[t.id for t in job.tasks if t.state is TaskState.FAILED],
        )  # fmt: skip
        requeued, _ = self._store.retry(job_id, self._lanes(job, _RETRIED), event)
        # A task queued (and held) after the read above was not named: a second look queues it
        # again. Queued tasks only: a task that failed since is the job's new failure, not this
        # retry's, and while there is one the script resumes nothing.
        queued = self._lanes(self.find(job_id), {TaskState.QUEUED})
        if queued:
            self._store.retry(job_id, queued, event)
        return requeued

    def _lanes(
        self, job: Job, states: set[TaskState] | frozenset[TaskState]
    ) -> list[tuple[str, str]]:
        """The tasks of ``job`` in ``states``, with their lanes."""
        return [
            (t.id, self._store.lane(t.cluster, t.name, t.version, job.id))
            for t in job.tasks
            if t.state in states
        ]

    def cancel(self, job_or_id: JobIDLike) -> Job:
        """Cancel a job (a Job or its id): its tasks not started yet never run. Returns it."""
        job_id = job_id_of(job_or_id)
        job = self.find(job_id)
        if job.state in (JobState.COMPLETED, JobState.CANCELLED):
            raise Conflict(f"job {job_id} is already {job.state}; nothing to cancel")
        event = JobCancelled(**self._client.origin().stamp(), job_id=job_id)
        self._store.cancel(job_id, self._unstarted(job), event)
        # A finish under way may have created tasks after they were read; none is created once
        # the job is cancelled, so a second look drops whatever the first one missed.
        job = self.find(job_id)
        missed = self._unstarted(job)
        if missed:
            self._store.cancel(job_id, missed, event)
            job = self.find(job_id)
        return job

    def _unstarted(self, job: Job) -> list[tuple[str, str]]:
        """The tasks of ``job`` not handed to a runner yet, with their lanes."""
        return self._lanes(job, TASK_UNSTARTED)

    # --- retention --------------------------------------------------------------------------------

    def retention(self) -> dt.timedelta:
        """The team's retention: how long a job submitted now stays in Redis once it ended."""
        return dt.timedelta(seconds=self._client.state().retention_seconds)

    def set_retention(self, retention: dt.timedelta) -> dt.timedelta:
        """Set the team's retention (``RetentionSet``) for the jobs submitted from now on; jobs
        submitted before keep theirs. 0: jobs are removed as soon as they end."""

        def rule(state: ControlState, origin: Origin) -> tuple[None, list[Event]]:
            return None, set_retention(state, origin, retention)

        self._client.decide(rule)
        return self.retention()

    def delete(self, job: JobIDLike, *, force: bool = False) -> Job:
        """Remove a job from Redis now, recorded as ``JobsDeleted`` (reason "deleted"): its
        hashes, tasks, lists and task logs; its history stays (``find`` answers from it). A
        queued or running job is refused unless ``force``, which cancels it first (running tasks
        finish, and their results are dropped). Returns the job as it was, with ``removed_at``."""
        job_id = job_id_of(job)
        found = self.find(job_id)
        if found.removed_at is not None:
            raise NotFound(
                f"job {job_id} was removed already ({found.removed_reason}, "
                f"{found.removed_at.isoformat(timespec='seconds')}); 'tilebox job get' shows it"
            )
        if found.state in (JobState.QUEUED, JobState.RUNNING):
            if not force:
                raise Conflict(
                    f"job {job_id} is {found.state}: cancel it first ('tilebox job cancel "
                    f"{job_id}'), or pass --force to cancel and delete it"
                )
            self.cancel(job_id)
        _, event = self._remove([job_id], "deleted", None)
        if event is None:
            raise NotFound(f"unknown job {job_id!r}; list jobs with 'tilebox job list'")
        return msgspec.structs.replace(found, removed_at=event.at, removed_reason="deleted")

    def expire(self, now: dt.datetime | None = None, limit: int | None = None) -> int:
        """The sweep: remove every job whose retention has passed since it ended (by ``now``,
        default the current time), each atomically with its tasks, lists and task logs, in
        batches, recording ``JobsDeleted`` (reason "expired") per batch on its shard's log. How
        many jobs were removed (``limit``, when given: at most that many). Safe to run
        anywhere, any number of times at once, and to kill at any point: a job is removed
        wholly or not at all, and the next run goes on."""
        now_ms = int((now or utcnow()).timestamp() * 1000)
        removed = 0
        for shard in self._store.fix_shards():
            while (batch := min(EXPIRE_BATCH, limit - removed if limit else EXPIRE_BATCH)) > 0:
                ids = self._store.due(shard, now_ms, batch)
                if not ids:
                    break
                count, _ = self._remove(ids, "expired", now_ms)
                removed += count
                if len(ids) < batch or not count:
                    break  # (nothing removed: jobs changing all the time wait for the next run)
        return removed

    def _remove(
        self, job_ids: Sequence[str], reason: str, now_ms: int | None
    ) -> tuple[int, JobsDeleted | None]:
        """Remove ``job_ids`` (one shard's), in calls of up to REMOVE_TASKS tasks, each recording
        a JobsDeleted of the jobs it removed; how many were, and the last event recorded (None:
        none). A job found not due, not ended or gone is left out; one whose tasks changed is
        read again, its tasks' states with it."""
        count = 0
        last: JobsDeleted | None = None
        pending, read_states = list(job_ids), False
        for _ in range(10):  # a job changing under every read is read again next sweep
            if not pending:
                break
            again: list[str] = []
            for batch in self._removal_batches(pending, read_states):
                for _ in range(len(batch) + 1):
                    ids = [removal.job_id for removal, _ in batch]
                    event = JobsDeleted(**self._client.origin().stamp(), job_ids=ids,
                                        reason=reason)  # fmt: skip
                    statuses = self._store.remove_jobs(
                        ids[0], batch, reason, now_ms if now_ms is not None else 0, event
                    )
                    if all(s == "ok" for s in statuses):
                        last, count = event, count + len(ids)
                        break
                    again += [i for i, s in zip(ids, statuses) if s == "changed"]
                    batch = [b for b, s in zip(batch, statuses) if s == "ok"]
                    if not batch:
                        break
            pending, read_states = again, True
        return count, last

    def _removal_batches(
        self, job_ids: Sequence[str], read_states: bool
    ) -> Iterator[list[tuple[Removal, list[str]]]]:
        """(what removing it names, lanes of its queued tasks) of each of ``job_ids`` still in
        Redis, in batches of at most REMOVE_TASKS tasks (or one job). The tasks' states are
        read (for the lanes) of the jobs not settled, or of all when ``read_states``: a
        completed job has no queued task, and the script says when one was queued since."""
        found = [r for r in self._store.removals(job_ids) if r is not None]
        unsettled = [r for r in found if read_states or not r.settled]
        # every such job's tasks in one read (a round trip per job was most of a sweep's time)
        owners = [r.job_id for r in unsettled for _ in r.task_ids]
        every = [task_id for r in unsettled for task_id in r.task_ids]
        states = iter(self._store.tasks(every, ("state", "lane"), owners) if every else ())
        batch: list[tuple[Removal, list[str]]] = []
        size = 0
        for removal in found:
            lanes: list[str] = []
            if read_states or not removal.settled:
                rows = [next(states) for _ in removal.task_ids]
                lanes = sorted(
                    {r["lane"] for r in rows if r["state"] == TaskState.QUEUED and r["lane"]}
                )
            if batch and size + len(removal.task_ids) > REMOVE_TASKS:
                yield batch
                batch, size = [], 0
            batch.append((removal, lanes))
            size += len(removal.task_ids)
        if batch:
            yield batch


def new_job(
    origin: Origin, name: str, cluster: str, specs: list[TaskSpec],
    max_retries: int, retention_ms: int | None = None,
) -> NewJob:  # fmt: skip
    job_id = new_id()
    events = [
        JobSubmitted(**origin.stamp(), job_id=job_id, name=name, cluster=cluster,
                     root_task_ids=[s.id for s in specs], max_retries=max_retries),
        *(submitted_event(origin.stamp(), job_id, s) for s in specs),
    ]  # fmt: skip
    info = JobInfo(name, cluster, origin.actor, origin.at.isoformat(), max_retries,
                   [s.id for s in specs], retention_ms)  # fmt: skip
    return NewJob(job_id, info, specs, events)


def job_view(job: NewJob, origin: Origin) -> Job:
    """What ``find(job.id, with_tasks=False)`` reads back right after the submission."""
    by_state: dict[str, int] = {}
    for spec in job.specs:
        state = TaskState.WAITING if spec.depends_on else TaskState.QUEUED
        by_state[state] = by_state.get(state, 0) + 1
    return Job(
        id=job.id, name=job.info.name, cluster=job.info.cluster, state=JobState.QUEUED,
        submitted_at=origin.at, submitted_by=origin.actor, total_tasks=len(job.specs),
        tasks_by_state=by_state, compute_seconds=0.0, progress=[],
    )  # fmt: skip


def _states(given: Any, kind: type[JobState] | type[TaskState], what: str) -> set[str]:
    """The states ``given`` (one, or a sequence; a state's value is accepted too), checked."""
    if given is None:
        return set()
    values = [given] if isinstance(given, str) else list(given)
    try:
        return {kind(v).value for v in values}
    except ValueError:
        raise InvalidInput(
            f"unknown {what} state in {given!r}; use {kind.__name__} values: {', '.join(kind)}"
        ) from None


def _retries(value: int) -> int:
    if value < 0:
        raise InvalidInput(f"max_retries must be >= 0, got {value}")
    return value


def _task_info(task_id: str, row: dict[str, str]) -> TaskInfo:
    return TaskInfo(
        id=task_id, name=row["name"], version=row["version"], state=TaskState(row["state"]),
        parent_id=row["parent"] or None, cluster=row["cluster"], runner_id=row["runner"] or None,
        release_id=row["release"] or None, attempts=int(row["attempts"] or 0),
        compute_seconds=int(row["compute_ms"] or 0) / 1000, display=row["display"] or None,
        error=_task_error.decode(row["error"]) if row["error"] else None,
    )  # fmt: skip


def _with_dependencies(
    infos: list[TaskInfo], rows: Sequence[dict[str, str]], task_key_prefix: str
) -> list[TaskInfo]:
    """``infos`` with ``depends_on`` filled from the tasks' chains: the first node of a task's
    chain lists its dependants as [task key, lane] (tasklib.lua), so the dependencies of a task
    are the tasks listing it."""
    depends_on: dict[str, list[str]] = {}
    for info, row in zip(infos, rows):
        if not row["chain"]:  # a root without dependants stores no chain
            continue
        for dependant_key, _lane in msgspec.json.decode(row["chain"])[0]["d"]:
            depends_on.setdefault(dependant_key.removeprefix(task_key_prefix), []).append(info.id)
    return [
        msgspec.structs.replace(info, depends_on=depends_on[info.id])
        if info.id in depends_on
        else info
        for info in infos
    ]


def _progress(fields: dict[str, str]) -> list[Progress]:
    labels = sorted(
        {k.split(":", 1)[1].rsplit(":", 1)[0] for k in fields if k.startswith("progress:")}
    )
    return [
        Progress(label or None, total=int(fields.get(f"progress:{label}:total", 0)),
                 done=int(fields.get(f"progress:{label}:done", 0)))
        for label in labels
    ]  # fmt: skip
