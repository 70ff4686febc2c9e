"""What each console page shows, put together from the library's public API.

A view takes the thread's ``Client`` and the request and returns the template's context. Filters
that do not parse are collected (``Filters``) and shown on the page above empty results, with
the form still filled in, rather than as an error page.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import click
import msgspec
from starlette.requests import Request

from tilebox_core import (
    Client,
    Cluster,
    Event,
    InvalidInput,
    Job,
    NotFound,
    Release,
    TileboxError,
    job_diagram,
    position_time,
)
from tilebox_core.domain.diagram import STATE_COLOURS
from tilebox_core.domain.events import ALL_EVENTS, DeploymentRemoved, DeploymentSet, UnknownEvent
from tilebox_core.domain.intervals import between
from tilebox_core.domain.runners import RunnerInfo
from tilebox_core.domain.tasks import JobState, TaskState

from ..history import TIME
from .format import seconds, short

JOB_STATES = [str(s) for s in JobState]
TASK_STATES = list(
    dict.fromkeys([*(str(s) for s in TaskState), *STATE_COLOURS])
)  # every state a colour exists for
FINAL = frozenset({"completed", "failed", "cancelled"})
DONE = ("computed", "failed_optional", "skipped")  # task states that count as finished work
EVENT_TYPES = sorted(cls.__name__ for cls in ALL_EVENTS)
DEPLOYMENT_TYPES = ["DeploymentSet", "DeploymentRemoved"]
TASK_EVENT_TYPES = [
    "TaskSubmitted", "TaskClaimed", "TaskCompleted", "TaskFailed", "TaskLeaseExpired",
    "TaskReleased", "TaskSkipped",
]  # fmt: skip
JOBS_PER_PAGE = 50
TASKS_PER_PAGE = 100
EVENTS_PER_PAGE = 100
TIMELINE_ENTRIES = 200
SUBTASKS_SHOWN = 200
# Events of a task are looked for from a little before its job's submission: the job's time is
# its client's clock, the log's is the server's.
CLOCK_SKEW = dt.timedelta(minutes=1)
JOB_COLOURS = {"queued": "queued", "running": "running", "completed": "computed",
               "failed": "failed", "cancelled": "cancelled"}  # fmt: skip


def colours() -> dict[str, str]:
    """CSS colour of each task and job state: the diagram's, so pages and diagram agree."""
    found = {state: accent for state, (accent, _) in STATE_COLOURS.items()}
    found.update({job: STATE_COLOURS[task][0] for job, task in JOB_COLOURS.items()})
    return found


# --- request parsing --------------------------------------------------------------------------


class Filters:
    """The query parameters of a page, parsed; what does not parse is kept as an error."""

    def __init__(self, request: Request) -> None:
        self.params = request.query_params
        self.errors: list[str] = []

    def text(self, name: str) -> str:
        return self.params.get(name, "").strip()

    def choice(self, name: str, choices: Sequence[str]) -> str:
        value = self.text(name)
        if value and value not in choices:
            self.errors.append(f"{name}: unknown value {value!r}; use one of {', '.join(choices)}")
            return ""
        return value

    def time(self, name: str) -> dt.datetime | None:
        """ISO 8601 (no zone: UTC) or a duration ago (15m, 2h, 3d), as the CLI's --since."""
        value = self.text(name)
        if not value:
            return None
        try:
            parsed: dt.datetime = TIME.convert(value, None, None)
        except click.BadParameter as exc:
            self.errors.append(f"{name}: {exc.message}")
            return None
        return parsed

    def page(self, name: str = "page") -> int:
        value = self.text(name) or "1"
        if not value.isdigit() or int(value) < 1:
            self.errors.append(f"{name}: {value!r} is not a page number (1, 2, ...)")
            return 1
        return int(value)

    def link(self, **changes: object) -> str:
        """This page's query string with ``changes`` (a value of None drops the parameter)."""
        items = [(k, v) for k, v in self.params.multi_items() if k not in changes]
        items += [(k, str(v)) for k, v in changes.items() if v is not None]
        return "?" + urlencode(items) if items else "?"


@dataclass
class Paging:
    page: int
    has_next: bool
    previous_link: str
    next_link: str


def paging(filters: Filters, page: int, has_next: bool, name: str = "page") -> Paging:
    return Paging(page, has_next, filters.link(**{name: page - 1 if page > 2 else None}),
                  filters.link(**{name: page + 1}))  # fmt: skip


# --- clusters and deployments -----------------------------------------------------------------


@dataclass
class Deployed:
    workflow: str
    release: Release
    since: dt.datetime | None = None
    by: str = ""


@dataclass
class ClusterRow:
    cluster: Cluster
    runners: list[RunnerInfo]
    deployed: list[Deployed]


@dataclass
class TimelineEntry:
    at: dt.datetime
    event: DeploymentSet | DeploymentRemoved
    deployed: bool  # False: undeployed
    after: bool = False  # after the as-of time the page shows


def deployed_on(client: Client, slug: str, mapping: dict[str, dict[str, str]]) -> list[Deployed]:
    releases = client.workflows()
    return [Deployed(workflow, releases.release(release_id))
            for workflow, release_id in mapping.get(slug, {}).items()]  # fmt: skip


def clusters(client: Client, request: Request) -> dict[str, Any]:
    mapping = client.deployments().current()
    rows = [
        ClusterRow(c, client.clusters().runners(c.slug), deployed_on(client, c.slug, mapping))
        for c in client.clusters().all()
    ]
    return {"nav": "clusters", "clusters": rows}


def deployment_timeline(
    client: Client, *, cluster: str | None = None, release_id: str | None = None
) -> list[TimelineEntry]:
    """Deployments and undeployments of ``cluster`` (or of ``release_id``), newest first."""
    entries: collections.deque[TimelineEntry] = collections.deque(maxlen=TIMELINE_ENTRIES)
    for stored in client.events().list(types=DEPLOYMENT_TYPES):
        event = stored.event
        if not isinstance(event, DeploymentSet | DeploymentRemoved):
            continue
        if cluster is not None and event.cluster != cluster:
            continue
        if release_id is not None and event.release_id != release_id:
            continue
        entries.append(TimelineEntry(position_time(stored.position), event,
                                     isinstance(event, DeploymentSet)))  # fmt: skip
    return list(reversed(entries))


def cluster(client: Client, request: Request) -> dict[str, Any]:
    slug = request.path_params["slug"]
    found = client.clusters().find(slug)
    filters = Filters(request)
    as_of = filters.time("as_of")
    timeline = deployment_timeline(client, cluster=slug)
    deployed = deployed_on(client, slug, client.deployments().current())
    for entry in reversed(timeline):  # oldest first: the last deployment of a workflow wins
        for d in deployed:
            if entry.deployed and entry.event.workflow == d.workflow:
                d.since, d.by = entry.at, entry.event.actor
    past: list[tuple[str, str]] | None = None
    if as_of is not None:
        past = sorted(client.deployments().as_of(as_of).get(slug, {}).items())
        for entry in timeline:
            entry.after = entry.at > as_of
    return {
        "nav": "clusters", "cluster": found, "runners": client.clusters().runners(slug),
        "deployed": deployed, "timeline": timeline, "as_of": as_of, "past": past,
        "as_of_text": filters.text("as_of"), "errors": filters.errors,
        "timeline_full": len(timeline) == TIMELINE_ENTRIES,
    }  # fmt: skip


# --- workflows and releases -------------------------------------------------------------------


@dataclass
class ReleaseRow:
    release: Release
    clusters: list[str]


def _clusters_by_release(client: Client) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for slug, by_workflow in client.deployments().current().items():
        for release_id in by_workflow.values():
            found.setdefault(release_id, []).append(slug)
    return found


def workflows(client: Client, request: Request) -> dict[str, Any]:
    where = _clusters_by_release(client)
    rows = []
    for workflow in client.workflows().all():
        releases = client.workflows().releases(workflow.slug)
        deployed = [ReleaseRow(r, where[r.id]) for r in releases if r.id in where]
        rows.append({"workflow": workflow, "releases": len(releases),
                     "latest": releases[-1] if releases else None, "deployed": deployed})  # fmt: skip
    return {"nav": "workflows", "workflows": rows}


def workflow(client: Client, request: Request) -> dict[str, Any]:
    found = client.workflows().find(request.path_params["slug"])
    where = _clusters_by_release(client)
    releases = [ReleaseRow(r, where.get(r.id, [])) for r in client.workflows().releases(found.slug)]
    return {"nav": "workflows", "workflow": found, "releases": list(reversed(releases))}


class _FileLists:
    """The file lists of artifacts already read, by digest: an artifact never changes, and
    reading one means reading up to 64 MiB from the store."""

    LIMIT = 32

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lists: collections.OrderedDict[str, list[tuple[str, int]]] = collections.OrderedDict()

    def get(self, client: Client, release: Release) -> list[tuple[str, int]]:
        with self._lock:
            if release.digest in self._lists:
                return self._lists[release.digest]
        files = client.workflows().release_files(release.id)
        with self._lock:
            self._lists[release.digest] = files
            while len(self._lists) > self.LIMIT:
                self._lists.popitem(last=False)
        return files


FILE_LISTS = _FileLists()


def release(client: Client, request: Request) -> dict[str, Any]:
    found = client.workflows().release(request.path_params["release_id"])
    files: list[tuple[str, int]] | None = None
    files_error = ""
    try:
        files = FILE_LISTS.get(client, found)
    except TileboxError as exc:
        files_error = str(exc)
    tasks = []
    for t in found.tasks:
        schema = _resolved(t.input_schema)
        properties = schema.get("properties") or {}
        tasks.append({"task": t, "required": set(schema.get("required") or ()),
                      "fields": [(name, _schema_type(spec)) for name, spec in properties.items()]})  # fmt: skip
    return {
        "nav": "workflows", "release": found, "tasks": tasks, "files": files,
        "files_error": files_error, "clusters": _clusters_by_release(client).get(found.id, []),
        "timeline": deployment_timeline(client, release_id=found.id),
    }  # fmt: skip


def _resolved(schema: dict[str, Any]) -> dict[str, Any]:
    """A task's input schema with its top-level ``$ref`` (msgspec's ``#/$defs/Name``) followed."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        found = (schema.get("$defs") or {}).get(ref.removeprefix("#/$defs/"))
        if isinstance(found, dict):
            return found
    return schema


def _schema_type(spec: Any) -> str:
    if not isinstance(spec, dict):
        return ""
    if "type" in spec:
        kind = spec["type"]
        return " | ".join(kind) if isinstance(kind, list) else str(kind)
    if "anyOf" in spec:
        return " | ".join(_schema_type(s) or "?" for s in spec["anyOf"])
    if "$ref" in spec:
        return str(spec["$ref"]).rsplit("/", 1)[-1]
    return ""


# --- jobs -------------------------------------------------------------------------------------


@dataclass
class Segment:
    state: str
    count: int
    percent: float


def segments(by_state: dict[str, int], total: int) -> list[Segment]:
    """The parts of a job's progress bar, one per task state, in lifecycle order."""
    order = {s: i for i, s in enumerate(TASK_STATES)}
    return [
        Segment(state, count, 100 * count / max(total, 1))
        for state, count in sorted(by_state.items(), key=lambda kv: order.get(kv[0], len(order)))
        if count
    ]


def finished(job: Job) -> int:
    return sum(job.tasks_by_state.get(s, 0) for s in DONE)


def jobs(client: Client, request: Request) -> dict[str, Any]:
    filters = Filters(request)
    clusters_known = [c.slug for c in client.clusters().all()]
    state = filters.choice("state", JOB_STATES)
    name = filters.text("name")
    cluster_slug = filters.choice("cluster", clusters_known)
    since, until = filters.time("since"), filters.time("until")
    page = filters.page()
    found: list[Job] = []
    if not filters.errors:
        found = client.jobs().query(
            between(since, until), job_states=JobState(state) if state else None,
            name=name or None, clusters=cluster_slug or None, limit=JOBS_PER_PAGE + 1,
            offset=(page - 1) * JOBS_PER_PAGE,
        )  # fmt: skip
    rows = [{"job": j, "segments": segments(j.tasks_by_state, j.total_tasks), "done": finished(j)}
            for j in found[:JOBS_PER_PAGE]]  # fmt: skip
    return {
        "nav": "jobs", "rows": rows, "errors": filters.errors, "clusters": clusters_known,
        "form": {"state": state, "name": name, "cluster": cluster_slug,
                 "since": filters.text("since"), "until": filters.text("until")},
        "paging": paging(filters, page, len(found) > JOBS_PER_PAGE),
    }  # fmt: skip


def job(client: Client, request: Request) -> dict[str, Any]:
    """The job page and its live part (``/live``): the same context."""
    found = client.jobs().find(request.path_params["job_id"], with_dependencies=True)
    filters = Filters(request)
    task_state = filters.choice("task_state", TASK_STATES)
    page = filters.page("tasks_page")
    shown = [t for t in found.tasks if t.state == task_state] if task_state else found.tasks
    start = (page - 1) * TASKS_PER_PAGE
    names = {t.id: f"{t.name}@{t.version}" for t in found.tasks}
    svg = job_diagram(found, link=lambda task_id: f"/jobs/{found.id}/tasks/{task_id}")
    progress = [
        {"label": p.label or "progress", "done": p.done, "total": p.total,
         "percent": min(100.0, 100 * p.done / p.total) if p.total else 0.0}
        for p in found.progress
    ]  # fmt: skip
    return {
        "nav": "jobs", "job": found, "final": found.state in FINAL, "diagram": svg,
        "segments": segments(found.tasks_by_state, found.total_tasks), "done": finished(found),
        "progress": progress, "reasons": client.jobs().why_queued(found),
        "tasks": shown[start : start + TASKS_PER_PAGE], "names": names, "task_state": task_state,
        "shown_count": len(shown), "errors": filters.errors,
        "paging": paging(filters, page, start + TASKS_PER_PAGE < len(shown), "tasks_page"),
        "live_query": str(request.query_params),
    }  # fmt: skip


def diagram_svg(client: Client, job_id: str) -> str:
    return client.jobs().visualize(job_id)


@dataclass
class TaskEvent:
    at: dt.datetime
    type: str
    runner: str = ""
    release: str = ""
    detail: str = ""
    error: str = ""


def task(client: Client, request: Request) -> dict[str, Any]:
    found = client.jobs().find(request.path_params["job_id"], with_dependencies=True)
    task_id = request.path_params["task_id"]
    by_id = {t.id: t for t in found.tasks}
    if task_id not in by_id:
        raise NotFound(f"job {found.id} has no task {task_id!r}")
    current = by_id[task_id]
    subtasks = [t for t in found.tasks if t.parent_id == task_id]
    dependants = [t for t in found.tasks if task_id in t.depends_on]
    return {
        "nav": "jobs", "job": found, "task": current, "parent": by_id.get(current.parent_id or ""),
        "dependencies": [by_id[d] for d in current.depends_on if d in by_id],
        "dependants": dependants, "subtasks": subtasks[:SUBTASKS_SHOWN],
        "subtask_count": len(subtasks),
        "subtask_segments": segments(_count(t.state for t in subtasks), len(subtasks)),
        "events": task_events(client, found, task_id),
        "logs": client.jobs().logs(found.id, task=task_id),
    }  # fmt: skip


def task_events(client: Client, found: Job, task_id: str) -> list[TaskEvent]:
    """What the task log says about one task: submitted, claims, takeovers, failures, result."""
    history: list[TaskEvent] = []
    for stored in client.events().list(since=found.submitted_at - CLOCK_SKEW,
                                       types=TASK_EVENT_TYPES):  # fmt: skip
        event = stored.event
        if getattr(event, "task_id", None) != task_id:
            continue
        entry = TaskEvent(position_time(stored.position), event.type,
                          getattr(event, "runner_id", "") or "",
                          getattr(event, "release_id", "") or "")  # fmt: skip
        if event.type == "TaskFailed":
            entry.error = getattr(event, "error", "")
            entry.detail = f"reason {getattr(event, 'reason', '')}" + (
                ", will retry" if getattr(event, "will_retry", False) else ""
            )
        elif event.type == "TaskCompleted":
            entry.detail = seconds(getattr(event, "compute_seconds", 0.0))
            subtasks = len(getattr(event, "subtask_ids", ()))
            if subtasks:
                entry.detail += f", {subtasks:,} subtask{'s' if subtasks != 1 else ''}"
        elif event.type == "TaskSkipped":
            entry.detail = "not run: a task of the optional subtree it is in failed"
        elif event.type == "TaskLeaseExpired":
            entry.detail = (f"taken over from {getattr(event, 'previous_runner_id', '')} "
                            f"(delivery {getattr(event, 'deliveries', '')})")  # fmt: skip
        history.append(entry)
    return history


def _count(states: Iterable[str]) -> dict[str, int]:
    return dict(collections.Counter(states))


# --- events -----------------------------------------------------------------------------------


@dataclass
class Field:
    name: str
    text: str
    href: str = ""
    full: str = ""  # the whole value when ``text`` is cut


@dataclass
class EventRow:
    at: dt.datetime
    position: str
    type: str
    actor: str
    known: bool
    fields: list[Field] = field(default_factory=list)


_COMMON = {"id", "at", "actor", "team", "type"}
_CUT = 120


def event_fields(event: Event | UnknownEvent) -> list[Field]:
    """The payload of an event as (name, text, link) fields: ids link to their pages."""
    if isinstance(event, UnknownEvent):
        data = dict(event.raw)
    else:
        data = msgspec.to_builtins(msgspec.structs.asdict(event))
    job_id = data.get("job_id")
    fields = []
    for name, value in data.items():
        if name in _COMMON or value in (None, [], {}, "", False):
            continue
        if name == "tasks" and isinstance(value, list):
            text = ", ".join(
                f"{t.get('name')}@{t.get('version')}" for t in value if isinstance(t, dict)
            )
        elif isinstance(value, (list, dict)):
            text = json.dumps(value, separators=(",", ":"))
        else:
            text = str(value)
        href = _link(event.type, name, text, job_id)
        if name.endswith("_seconds") and isinstance(value, (int, float)):
            text = seconds(value)
        cut = text if len(text) <= _CUT else text[: _CUT - 1] + "…"
        if href and name.endswith("_id"):  # the whole id is in the link's title and address
            cut = short(text)
        fields.append(Field(name, cut, href, text if cut != text else ""))
    return fields


def _link(kind: str, name: str, value: str, job_id: Any) -> str:
    if name == "job_id":
        return f"/jobs/{value}"
    if name == "task_id" and job_id:
        return f"/jobs/{job_id}/tasks/{value}"
    if name in ("release_id", "previous_release_id"):
        return f"/releases/{value}"
    if name == "cluster" or (name == "slug" and kind == "ClusterCreated"):
        return f"/clusters/{value}"
    if name == "workflow" or (name == "slug" and kind == "WorkflowCreated"):
        return f"/workflows/{value}"
    return ""


def events(client: Client, request: Request) -> dict[str, Any]:
    """The event log, newest first, filtered by type, time, cluster and job."""
    filters = Filters(request)
    types = [t for t in request.query_params.getlist("type") if t]
    for unknown in sorted(set(types) - set(EVENT_TYPES)):
        filters.errors.append(f"type: unknown event type {unknown!r}")
    since, until = filters.time("since"), filters.time("until")
    cluster_slug, job_id = filters.text("cluster"), filters.text("job")
    page = filters.page()
    offset = (page - 1) * EVENTS_PER_PAGE
    newest: collections.deque[Any] = collections.deque(maxlen=offset + EVENTS_PER_PAGE + 1)
    matched = 0
    if not filters.errors:
        try:
            for stored in client.events().list(since=since, until=until, types=types):
                event = stored.event
                if cluster_slug and cluster_slug not in (getattr(event, "cluster", None),
                                                         getattr(event, "slug", None)):  # fmt: skip
                    continue
                if job_id and getattr(event, "job_id", None) != job_id:
                    continue
                newest.append(stored)
                matched += 1
        except InvalidInput as exc:
            filters.errors.append(str(exc))
    picked = list(reversed(newest))[offset : offset + EVENTS_PER_PAGE]
    rows = [
        EventRow(position_time(s.position), s.position, s.event.type, s.event.actor,
                 not isinstance(s.event, UnknownEvent), event_fields(s.event))
        for s in picked
    ]  # fmt: skip
    return {
        "nav": "events", "rows": rows, "matched": matched, "errors": filters.errors,
        "event_types": EVENT_TYPES, "types": types,
        "form": {"since": filters.text("since"), "until": filters.text("until"),
                 "cluster": cluster_slug, "job": job_id},
        "paging": paging(filters, page, len(newest) > offset + EVENTS_PER_PAGE),
    }  # fmt: skip
