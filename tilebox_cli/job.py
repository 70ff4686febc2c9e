"""``tilebox job``: submit, list, get, wait, logs, retry, cancel."""

from __future__ import annotations

import datetime as dt
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec

from tilebox_core import Job, JobState, NotFound, TaskInfo, TaskLogLine, TaskState, job_diagram
from tilebox_core.domain.diagnosis import deployment_gap, failing_releases_still_deployed
from tilebox_core.domain.identifiers import make_identifier
from tilebox_core.domain.intervals import between
from tilebox_core.domain.jobs import MAX_INPUT_BYTES
from tilebox_core.domain.projection import DEFAULT_CLUSTER
from tilebox_core.domain.retention import parse_duration

from .context import AppContext, json_option, pass_app, yes_option
from .history import TIME
from .output import State, coloured, emit_json, page, printable, table, warn, when

FINAL = ("completed", "failed", "cancelled")
F = TypeVar("F", bound=Callable[..., Any])


@click.group("job")
def job() -> None:
    """Jobs: trees of tasks submitted to a cluster."""


def diagnose_option(func: F) -> F:
    return click.option(
        "--diagnose-after", type=click.FloatRange(min=0), default=5.0, show_default=True,
        envvar="TILEBOX_DIAGNOSE_AFTER", metavar="SECONDS",
        help="Say why the job is still queued once it has not started after this long.",
    )(func)  # fmt: skip


@job.command("submit")
@click.option("--name", "name", required=True, help="Job name.")
@click.option(
    "--task", "task_name", required=True, help="Task identifier name, e.g. acme.io/Fetch."
)
@click.option(
    "--version", help="Task version vMAJOR.MINOR (default: newest deployed on the cluster)."
)
@click.option("--input", "input_json", help="Task input as a JSON object.")
@click.option("--input-file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Read the task input JSON from a file ('-' is not supported).")  # fmt: skip
@click.option("--cluster", help="Cluster slug (default: TILEBOX_CLUSTER, else 'default').")
@click.option("--max-retries", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--max-input-bytes", type=click.IntRange(min=1), default=MAX_INPUT_BYTES,
              envvar="TILEBOX_MAX_INPUT_BYTES", show_default=True,
              help="Refuse a task input JSON larger than this.")  # fmt: skip
@click.option("--require-deployed", is_flag=True,
              help="Refuse (submit nothing) unless a release deployed on the cluster runs the task.")  # fmt: skip
@click.option("--retention", metavar="DURATION",
              help="How long the job stays once it ended, e.g. 1d, 12h, 0 (default: the team's, "
                   "see 'tilebox team retention').")  # fmt: skip
@click.option("--wait", "wait_", is_flag=True, help="Wait for the job to finish, showing progress.")
@diagnose_option
@json_option
@pass_app
def submit(
    app: AppContext, name: str, task_name: str, version: str | None, input_json: str | None,
    input_file: Path | None, cluster: str | None, max_retries: int, max_input_bytes: int,
    require_deployed: bool, retention: str | None, wait_: bool, diagnose_after: float,
) -> None:  # fmt: skip
    """Submit a job with one root task."""
    if input_json is not None and input_file is not None:
        raise click.UsageError("give either --input or --input-file, not both")
    keep = parse_duration(retention) if retention is not None else None
    # undecodable bytes are kept (as surrogates) for the input check to name, not a traceback here
    payload = (
        input_file.read_bytes().decode("utf-8", "surrogateescape")
        if input_file
        else (input_json or "{}")
    )
    slug = cluster or DEFAULT_CLUSTER
    gap = ""
    if version is not None:  # without one, submit_by_name picks a deployed version or refuses
        identifier = make_identifier(task_name, version)
        app.client.clusters().find(slug)
        gap = deployment_gap(identifier, slug, app.client.state())
        if gap and require_deployed:
            raise NotFound(f"{gap}; nothing submitted (--require-deployed)")
    submitted = app.client.jobs().submit_by_name(
        name, task_name, version, payload, cluster=slug, max_retries=max_retries,
        max_input_bytes=max_input_bytes, retention=keep,
    )  # fmt: skip
    if gap:
        warn(f"submitted, but it will wait: {gap}")
    if wait_:
        _wait(app, submitted.id, None, diagnose_after)
        return
    if app.json:
        emit_json(submitted)
    else:
        click.echo(
            f"submitted job {submitted.id} ({submitted.name}) to cluster {submitted.cluster}"
        )


@job.command("list")
@click.option(
    "--state", type=click.Choice(["queued", "running", "completed", "failed", "cancelled"])
)
@click.option("--name", help="Only jobs whose name contains this.")
@click.option("--since", type=TIME, help="Submitted at or after (ISO time or 15m/2h/3d).")
@click.option("--until", type=TIME, help="Submitted at or before.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
@pass_app
def list_(
    app: AppContext, state: str | None, name: str | None, since: dt.datetime | None,
    until: dt.datetime | None, limit: int,
) -> None:  # fmt: skip
    """List jobs, newest first."""
    app.reading()
    jobs = app.client.jobs().query(
        between(since, until), job_states=JobState(state) if state else None, name=name, limit=limit
    )
    if app.json:
        emit_json(jobs)
        return
    table(
        ["id", "name", "cluster", "state", "tasks", "submitted"],
        [[j.id, j.name, j.cluster, State(j.state), _counts(j), j.submitted_at] for j in jobs],
    )


@job.command("get")
@click.argument("job_id")
@click.option("--diagram", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write the task tree as an SVG diagram to this file.")  # fmt: skip
@click.option("--tasks", "task_state", type=click.Choice([s.value for s in TaskState]),
              help="List only the tasks in this state (failed ones with their tracebacks).")  # fmt: skip
@json_option
@pass_app
def get(app: AppContext, job_id: str, diagram: Path | None, task_state: str | None) -> None:
    """Show a job: state, progress, and its task tree with runner and release; failed tasks with
    their error and attempts."""
    app.reading()
    found = app.client.jobs().find(job_id, with_dependencies=diagram is not None)
    if diagram is not None:
        try:
            diagram.write_text(job_diagram(found))
        except OSError as exc:
            raise click.ClickException(
                f"cannot write the diagram to {diagram}: {exc.strerror}; pick a writable path"
            ) from None
    reasons = app.client.jobs().why_queued(found) if found.removed_at is None else []
    if task_state is not None:
        found = msgspec.structs.replace(
            found, tasks=[t for t in found.tasks if t.state == task_state]
        )
    if app.json:
        emit_json({**msgspec.to_builtins(found), "waiting_because": reasons})
        return
    lines = [
        f"job       {found.id} ({printable(found.name)})",
        f"cluster   {found.cluster}",
        f"state     {coloured(found.state)}",
        f"submitted {when(found.submitted_at)} by {found.submitted_by}",
        f"tasks     {_counts(found)}; compute {found.compute_seconds:.3f} s",
        *(
            [f"removed   {when(found.removed_at)} ({found.removed_reason}), from history"]
            if found.removed_at is not None
            else []
        ),
        *([f"diagram   {diagram}"] if diagram is not None else []),
        *(f"progress  {p.label or '-'}: {p.done}/{p.total}" for p in found.progress),
        *(f"waiting   {reason}" for reason in reasons),
        "",
    ]
    if task_state is not None:  # a flat list: the tasks' parents may be in other states
        if not found.tasks:
            lines.append(f"no {task_state} tasks")
        for task in found.tasks:
            lines += [_task_line(task, 0), *_error_lines(task, "  ", TRACEBACK_LINES_ALL)]
        page(lines)
        return
    for depth, task in _tree(found.tasks):
        indent = "  " * depth
        lines += [_task_line(task, depth), *_error_lines(task, indent + "  ", TRACEBACK_LINES)]
    page(lines)


# Lines of a failed task's traceback shown by `job get`: its end (where the error was raised);
# all it kept with --tasks.
TRACEBACK_LINES, TRACEBACK_LINES_ALL = 3, None


def _task_line(task: TaskInfo, depth: int) -> str:
    display = f' "{printable(" | ".join(task.display.splitlines()))}"' if task.display else ""
    runner = f" runner={task.runner_id}" if task.runner_id else ""
    release = f" release={task.release_id}" if task.release_id else ""
    retries = f" attempts={task.attempts}" if task.attempts else ""
    return (f"{'  ' * depth}{printable(task.name)}@{task.version}{display}  "
            f"{coloured(task.state)}{runner}{release}{retries}")  # fmt: skip


def _error_lines(task: TaskInfo, indent: str, traceback_lines: int | None) -> list[str]:
    """A failed task's error (type: message), the attempts it had, and its traceback's last
    ``traceback_lines`` lines (None: all of them)."""
    error = task.error
    if error is None:
        return []
    attempts = f" (after {task.attempts} attempt{'s' if task.attempts != 1 else ''})"
    message = error.message.splitlines() or [""]
    lines = [f"{indent}error: {printable(error.type)}: {printable(message[0])}{attempts}",
             *(f"{indent}       {printable(line)}" for line in message[1:])]  # fmt: skip
    trace = error.traceback.splitlines()
    if trace and trace[-1].startswith((error.type, error.type.rsplit(".", 1)[-1])):
        trace = trace[:-1]  # the error line itself, shown above already
    if traceback_lines is not None:
        trace = trace[-traceback_lines:]
    return lines + [f"{indent}  {printable(line)}" for line in trace]


@job.command("wait")
@click.argument("job_id")
@click.option("--timeout", type=float, help="Give up after this many seconds (exit 2).")
@diagnose_option
@json_option
@pass_app
def wait(app: AppContext, job_id: str, timeout: float | None, diagnose_after: float) -> None:
    """Wait for a job to finish; a live progress bar on a terminal. Exit 1 if it failed."""
    _wait(app, job_id, timeout, diagnose_after)


@job.command("retry")
@click.argument("job_id")
@json_option
@pass_app
def retry(app: AppContext, job_id: str) -> None:
    """Re-queue the failed tasks of a job; completed tasks are not rerun."""
    jobs = app.client.jobs()
    before = jobs.find(job_id)
    count = jobs.retry(job_id)
    warnings = failing_releases_still_deployed(before, app.client.state())
    for warning in warnings:
        warn(warning)
    if app.json:
        emit_json({"job_id": job_id, "requeued": count, "warnings": warnings})
    else:
        click.echo(f"re-queued {count} failed task{'s' if count != 1 else ''} of job {job_id}")


@job.command("cancel")
@click.argument("job_id")
@yes_option
@json_option
@pass_app
def cancel(app: AppContext, job_id: str, yes: bool) -> None:
    """Cancel a job: queued tasks are dropped, running ones finish without subtasks."""
    jobs = app.client.jobs()
    if app.asks(yes):
        found = jobs.find(job_id, with_tasks=False)
        app.confirm(f"Cancel job {found.id} ({found.name}: {_counts(found)})?")
    cancelled = jobs.cancel(job_id)
    if app.json:
        emit_json(cancelled)
    else:
        click.echo(f"cancelled job {job_id}")


@job.command("delete")
@click.argument("job_id")
@click.option("--force", is_flag=True,
              help="Also a queued or running job: cancel it first (running tasks finish, their "
                   "results are dropped).")  # fmt: skip
@yes_option
@json_option
@pass_app
def delete(app: AppContext, job_id: str, force: bool, yes: bool) -> None:
    """Remove a job from Redis now: its tasks, task logs and index entries (recorded as an event;
    'job get' still shows it from history). An ended job (completed, failed, cancelled) only,
    unless --force."""
    jobs = app.client.jobs()
    if app.asks(yes):
        found = jobs.find(job_id, with_tasks=False)
        refused = not force and found.state in ("queued", "running")
        if found.removed_at is None and not refused:  # else delete says why not, unasked
            app.confirm(f"Delete job {found.id} ({found.name}, {found.state}: {_counts(found)})?")
    deleted = jobs.delete(job_id, force=force)
    if app.json:
        emit_json(deleted)
    else:
        click.echo(f"deleted job {job_id} ({deleted.name}, {deleted.state})")


@job.command("logs")
@click.argument("job_id")
@click.option("--task", "task_id", metavar="TASK_ID", help="Only this task's lines.")
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing lines as they are written, until the job is done.")  # fmt: skip
@json_option
@pass_app
def logs(app: AppContext, job_id: str, task_id: str | None, follow: bool) -> None:
    """What the job's tasks logged (context.logger), oldest first (--json: one object a line)."""
    app.reading()
    jobs = app.client.jobs()
    names = {t.id: f"{t.name}@{t.version}" for t in jobs.find(job_id).tasks}
    if task_id is not None and task_id not in names:
        raise NotFound(
            f"job {job_id} has no task {task_id!r}; see its tasks with 'tilebox job get {job_id}'"
        )
    lines = jobs.follow_logs(job_id, task_id) if follow else iter(jobs.logs(job_id, task_id))

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt) if follow else None
    try:
        for line in lines:
            if line.task_id not in names:  # a task submitted since
                names.update((t.id, f"{t.name}@{t.version}") for t in jobs.find(job_id).tasks)
            if app.json:
                emit_json({**msgspec.to_builtins(line), "task": names.get(line.task_id, "")})
            else:
                click.echo(_log_line(line, names.get(line.task_id, "?")))
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM ends --follow, with exit code 0
        return
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _log_line(line: TaskLogLine, task: str) -> str:
    at = line.at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    who = f"{task} {line.task_id[:8]}" + (f" attempt {line.attempt}" if line.attempt > 1 else "")
    if line.dropped:
        return (
            f"{at}  {'':7}  {who}  ({line.dropped} more lines dropped: over the task's log bound)"
        )
    fields = " ".join(f"{k}={v}" for k, v in line.fields.items() if k != "exception")
    text = f"{at}  {line.level.upper():7}  {who}  {line.message}" + (
        f"  {fields}" if fields else ""
    )
    exception = line.fields.get("exception")
    return text + (f"\n{exception}" if exception else "")


def _wait(app: AppContext, job_id: str, timeout: float | None, diagnose_after: float) -> None:
    """Wait with a progress bar on a terminal; say once why the job is still queued after
    ``diagnose_after`` seconds, and again on a timeout."""
    interactive = not app.json and sys.stderr.isatty()
    jobs = app.client.jobs()
    diagnose_at = time.monotonic() + diagnose_after
    diagnosed = False

    def show(current: Job) -> None:
        nonlocal diagnosed
        late = time.monotonic() >= diagnose_at
        if late and not diagnosed and not app.json and current.state == "queued":
            diagnosed = True
            reasons = jobs.why_queued(jobs.find(job_id))
            if reasons and interactive:
                click.echo("", err=True)  # end the progress bar's line
            for reason in reasons:
                click.echo(f"still queued: {reason}", err=True)
        if interactive:
            click.echo("\r" + _bar(current), nl=False, err=True)

    final = jobs.wait(job_id, timeout=timeout, on_update=show)
    if interactive:
        click.echo("", err=True)
    reasons = jobs.why_queued(jobs.find(job_id)) if final.state not in FINAL else []
    if app.json:
        emit_json({**msgspec.to_builtins(final), "waiting_because": reasons})
    else:
        click.echo(f"job {final.id} {final.state}: {_counts(final)}")
        for reason in reasons:
            click.echo(f"waiting   {reason}")
    if final.state not in FINAL:
        raise SystemExit(2)
    if final.state != "completed":
        raise SystemExit(1)


def _bar(current: Job, width: int = 30) -> str:
    done = sum(current.tasks_by_state.get(s, 0) for s in ("computed", "failed_optional", "skipped"))
    total = max(current.total_tasks, 1)
    filled = int(width * done / total)
    labels = " ".join(f"{p.label or '-'}:{p.done}/{p.total}" for p in current.progress)
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{current.total_tasks} tasks {current.state} {labels}".rstrip()


def _counts(found: Job) -> str:
    return ", ".join(f"{n} {state}" for state, n in found.tasks_by_state.items()) or "no tasks"


def _tree(tasks: list[TaskInfo]) -> list[tuple[int, TaskInfo]]:
    children: dict[str | None, list[TaskInfo]] = {}
    for task in tasks:
        children.setdefault(task.parent_id, []).append(task)
    ordered: list[tuple[int, TaskInfo]] = []

    def walk(parent: str | None, depth: int) -> None:
        for task in children.get(parent, []):
            ordered.append((depth, task))
            walk(task.id, depth + 1)

    walk(None, 0)
    return ordered


def register(cli: click.Group) -> None:
    cli.add_command(job)
