"""``tilebox job``: submit, list, get, wait, retry, cancel."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import click
import msgspec

from tilebox_core import Job, TaskInfo

from .context import AppContext, json_option, pass_app
from .history import TIME
from .output import emit_json, table, when

FINAL = ("completed", "failed", "cancelled")


@click.group("job")
def job() -> None:
    """Jobs: trees of tasks submitted to a cluster."""


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
@click.option("--wait", "wait_", is_flag=True, help="Wait for the job to finish, showing progress.")
@json_option
@pass_app
def submit(
    app: AppContext, name: str, task_name: str, version: str | None, input_json: str | None,
    input_file: Path | None, cluster: str | None, max_retries: int, wait_: bool,
) -> None:  # fmt: skip
    """Submit a job with one root task."""
    if input_json is not None and input_file is not None:
        raise click.UsageError("give either --input or --input-file, not both")
    payload = input_file.read_text() if input_file else (input_json or "{}")
    submitted = app.client.jobs().submit_by_name(
        name, task_name, version, payload, cluster=cluster, max_retries=max_retries
    )
    if wait_:
        _wait(app, submitted.id, None)
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
    jobs = app.client.jobs().query(state=state, name=name, since=since, until=until, limit=limit)
    if app.json:
        emit_json(jobs)
        return
    table(
        ["id", "name", "cluster", "state", "tasks", "submitted"],
        [[j.id, j.name, j.cluster, j.state, _counts(j), j.submitted_at] for j in jobs],
    )


@job.command("get")
@click.argument("job_id")
@json_option
@pass_app
def get(app: AppContext, job_id: str) -> None:
    """Show a job: state, progress, and its task tree with runner and release."""
    found = app.client.jobs().find(job_id)
    reasons = app.client.jobs().why_queued(found)
    if app.json:
        emit_json({**msgspec.to_builtins(found), "waiting_because": reasons})
        return
    click.echo(f"job       {found.id} ({found.name})")
    click.echo(f"cluster   {found.cluster}")
    click.echo(f"state     {found.state}")
    click.echo(f"submitted {when(found.submitted_at)} by {found.submitted_by}")
    click.echo(f"tasks     {_counts(found)}; compute {found.compute_seconds:.3f} s")
    for progress in found.progress:
        click.echo(f"progress  {progress.label or '-'}: {progress.done}/{progress.total}")
    for reason in reasons:
        click.echo(f"waiting   {reason}")
    click.echo("")
    for depth, task in _tree(found.tasks):
        runner = f" runner={task.runner_id}" if task.runner_id else ""
        release = f" release={task.release_id}" if task.release_id else ""
        retries = f" attempts={task.attempts}" if task.attempts else ""
        click.echo(
            f"{'  ' * depth}{task.name}@{task.version}  {task.state}{runner}{release}{retries}"
        )


@job.command("wait")
@click.argument("job_id")
@click.option("--timeout", type=float, help="Give up after this many seconds (exit 2).")
@json_option
@pass_app
def wait(app: AppContext, job_id: str, timeout: float | None) -> None:
    """Wait for a job to finish; a live progress bar on a terminal. Exit 1 if it failed."""
    _wait(app, job_id, timeout)


@job.command("retry")
@click.argument("job_id")
@json_option
@pass_app
def retry(app: AppContext, job_id: str) -> None:
    """Re-queue the failed tasks of a job; completed tasks are not rerun."""
    count = app.client.jobs().retry(job_id)
    if app.json:
        emit_json({"job_id": job_id, "requeued": count})
    else:
        click.echo(f"re-queued {count} failed task{'s' if count != 1 else ''} of job {job_id}")


@job.command("cancel")
@click.argument("job_id")
@json_option
@pass_app
def cancel(app: AppContext, job_id: str) -> None:
    """Cancel a job: queued tasks are dropped, running ones finish without subtasks."""
    found = app.client.jobs().cancel(job_id)
    if app.json:
        emit_json(found)
    else:
        click.echo(f"cancelled job {job_id}")


def _wait(app: AppContext, job_id: str, timeout: float | None) -> None:
    interactive = not app.json and sys.stderr.isatty()

    def show(current: Job) -> None:
        if interactive:
            click.echo("\r" + _bar(current), nl=False, err=True)

    final = app.client.jobs().wait(job_id, timeout=timeout, on_update=show)
    if interactive:
        click.echo("", err=True)
    if app.json:
        emit_json(final)
    else:
        click.echo(f"job {final.id} {final.state}: {_counts(final)}")
    if final.state not in FINAL:
        raise SystemExit(2)
    if final.state != "completed":
        raise SystemExit(1)


def _bar(current: Job, width: int = 30) -> str:
    done = sum(current.tasks_by_state.get(s, 0) for s in ("computed", "failed_optional"))
    total = max(current.total_tasks, 1)
    filled = int(width * done / total)
    labels = " ".join(f"{p.label}:{p.done}/{p.total}" for p in current.progress)
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
