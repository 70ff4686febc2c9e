"""``tilebox workflow``: workflows, releases, and deploying releases to clusters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from tilebox_core import DeployPlan, NotFound, Release
from tilebox_core.build.config import WorkflowConfig, find_config, load_config
from tilebox_core.build.release import BuildResult, build_release
from tilebox_core.build.scaffold import init_project

from .context import (
    AppContext,
    deprecated_path_option,
    json_option,
    pass_app,
    path_argument,
    split_csv,
    yes_option,
)
from .output import TerminalProgress, emit_json, table, warn


@click.group("workflow")
def workflow() -> None:
    """Workflows, their releases and deployments."""


def project_config(path: Path | None, required: bool) -> WorkflowConfig | None:
    """The tilebox.workflow.toml above ``path`` (or the working directory), if there is one."""
    try:
        return load_config(find_config(path or Path.cwd()))
    except NotFound:
        if required:
            raise
        return None


def workflow_slug(slug: str | None, config_path: Path | None = None) -> str:
    """An explicit slug, else the one in tilebox.workflow.toml."""
    if slug:
        return slug
    config = project_config(config_path, required=False)
    if config is None:
        raise click.UsageError(
            "no workflow given and no tilebox.workflow.toml found here: pass --workflow SLUG"
        )
    return config.workflow.slug


@workflow.command("create")
@click.argument("name")
@click.option("--slug", help="Slug (default: derived from NAME).")
@json_option
@pass_app
def create(app: AppContext, name: str, slug: str | None) -> None:
    """Create a workflow: the long-lived name releases are published under."""
    created = app.client.workflows().create(name, slug)
    if app.json:
        emit_json(created)
    else:
        click.echo(f"created workflow {created.slug} ({created.name})")


@workflow.command("list")
@json_option
@pass_app
def list_(app: AppContext) -> None:
    """List workflows."""
    app.reading()
    workflows = app.client.workflows().all()
    if app.json:
        emit_json(workflows)
        return
    table(["slug", "name", "created"], [[w.slug, w.name, w.created_at] for w in workflows])


@workflow.command("get")
@click.argument("slug", required=False)
@json_option
@pass_app
def get(app: AppContext, slug: str | None) -> None:
    """Show a workflow (default: the one of tilebox.workflow.toml) and where it is deployed."""
    app.reading()
    found = app.client.workflows().find(workflow_slug(slug))
    state = app.client.state()
    deployed = {c: by_wf[found.slug] for c, by_wf in state.mapping().items() if found.slug in by_wf}
    releases = state.releases_of(found.slug)
    if app.json:
        emit_json({"workflow": found, "releases": len(releases), "deployments": deployed})
        return
    click.echo(f"workflow  {found.slug} ({found.name})")
    click.echo(f"releases  {len(releases)}")
    for cluster, release in sorted(deployed.items()):
        click.echo(f"deployed  {cluster}: {release}")


@workflow.command("releases")
@click.argument("slug", required=False)
@json_option
@pass_app
def releases(app: AppContext, slug: str | None) -> None:
    """List releases with their tasks, digest and where each is deployed."""
    app.reading()
    slug = workflow_slug(slug)
    found = app.client.workflows().releases(slug)
    state = app.client.state()
    rows = [(r, state.clusters_of_release(r.id)) for r in found]
    if app.json:
        emit_json([{**release_dict(r), "deployed_on": clusters} for r, clusters in rows])
        return
    table(
        ["release", "published", "digest", "tasks", "deployed on"],
        [
            [r.id, r.published_at, r.digest[:19], [f"{t.name}@{t.version}" for t in r.tasks], c]
            for r, c in rows
        ],
    )


@workflow.command("init")
@click.argument("directory", required=False, type=click.Path(path_type=Path, file_okay=False))
@click.option("--name", help="Workflow name (default: the directory's name).")
@click.option("--slug", help="Workflow slug (default: derived from the name).")
@json_option
@pass_app
def init(app: AppContext, directory: Path | None, name: str | None, slug: str | None) -> None:
    """Scaffold a workflow project: tilebox.workflow.toml, pyproject.toml and a runner module."""
    target = directory or Path.cwd()
    written = init_project(target, name, slug)
    if app.json:
        emit_json([str(p) for p in written])
        return
    for path in written:
        click.echo(f"created {path}")
    shown = shell_quote(name or target.absolute().name)
    with_slug = f" --slug {slug}" if slug else ""
    click.echo(
        f"next: tilebox workflow create {shown}{with_slug}, then tilebox workflow publish-release"
    )


def shell_quote(word: str) -> str:
    """``word`` as a user would type it in a shell: double quotes around anything not plain."""
    if word and all(c.isalnum() or c in "-_./:@" for c in word):
        return word
    return '"' + "".join("\\" + c if c in '"\\$`' else c for c in word) + '"'


def _build(app: AppContext, path: Path | None) -> BuildResult:
    config = project_config(path, required=True)
    assert config is not None
    progress = TerminalProgress(not app.json)
    try:
        result = build_release(config, progress)
    finally:
        progress.close()
    for warning in result.warnings:
        warn(warning)
    return result


def _build_dict(result: BuildResult) -> dict[str, Any]:
    return {
        "workflow": result.workflow, "fingerprint": result.fingerprint, "digest": result.digest,
        "size": result.size, "artifact_path": str(result.artifact_path), "cached": result.cached,
        "runner": result.runner, "command": result.command,
        "tasks": [{"name": t.name, "version": t.version} for t in result.tasks],
        "files": result.files,
    }  # fmt: skip


@workflow.command("build-release")
@path_argument
@json_option
@pass_app
def build_release_command(app: AppContext, path: Path | None) -> None:
    """Build the deterministic artifact and discover its tasks; nothing is uploaded."""
    result = _build(app, path)
    if app.json:
        emit_json(_build_dict(result))
        return
    click.echo(
        f"artifact     {result.artifact_path} ({result.size:,} bytes, {len(result.files)} files)"
    )
    click.echo(f"digest       {result.digest}")
    click.echo(f"fingerprint  {result.fingerprint}")
    click.echo(f"tasks        {', '.join(f'{t.name}@{t.version}' for t in result.tasks)}")
    if result.cached:
        click.echo("runtime check: unchanged project, answered from the local cache")


@workflow.command("publish-release")
@path_argument
@click.option("--force", is_flag=True, help="Publish despite input schema incompatibilities.")
@json_option
@pass_app
def publish_release(app: AppContext, path: Path | None, force: bool) -> None:
    """Build, upload the artifact if it is not stored yet, and create the release (idempotent)."""
    result = _build(app, path)
    progress = TerminalProgress(not app.json)
    try:
        published = app.client.workflows().publish_release(
            result.workflow, result.artifact_path.read_bytes(), result.tasks,
            runner=result.runner, command=result.command, force=force, progress=progress.upload,
        )  # fmt: skip
    finally:
        progress.close()
    release = published.release
    if app.json:
        emit_json({**release_dict(release), "created": published.created,
                   "uploaded": published.uploaded})  # fmt: skip
        return
    if not published.created:
        click.echo(
            f"release {release.id} already published with identical content; nothing uploaded"
        )
        return
    stored = "uploaded" if published.uploaded else "already stored, not uploaded"
    click.echo(f"published release {release.id} of {release.workflow} (artifact {stored})")
    if release.forced:
        click.echo("published with --force despite incompatibilities", err=True)
    click.echo(f"deploy it: tilebox workflow deploy-release --release {release.id}")


def release_dict(release: Release) -> dict[str, Any]:
    import msgspec

    data = msgspec.to_builtins(release)
    for task in data["tasks"]:
        task.pop("input_schema", None)
    return data  # type: ignore[no-any-return]


def _targets(target: str | None, clusters: str | None, config: WorkflowConfig | None) -> list[str]:
    if target and clusters:
        raise click.UsageError("give either --target or --cluster, not both")
    if target:
        if config is None:
            raise click.UsageError(
                f"--target {target} needs a tilebox.workflow.toml here (or at PATH) that defines it"
            )
        return config.target_clusters(target)
    return split_csv(clusters)


@workflow.command("deploy-release")
@click.option("--release", "release_id", help="Release id to deploy.")
@click.option("--latest", is_flag=True, help="Deploy the workflow's latest release.")
@click.option("--target", help="Deploy to the clusters of this target in tilebox.workflow.toml.")
@click.option("--cluster", "clusters", help="Comma-separated cluster slugs (default: 'default').")
@click.option("--workflow", "slug", help="Workflow slug (default: from tilebox.workflow.toml).")
@click.option("--force", is_flag=True, help="Deploy despite input schema incompatibilities.")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@path_argument
@deprecated_path_option
@json_option
@pass_app
def deploy_release(
    app: AppContext,
    release_id: str | None,
    latest: bool,
    target: str | None,
    clusters: str | None,
    slug: str | None,
    force: bool,
    dry_run: bool,
    path: Path | None,
) -> None:
    """Make a release the active one of its workflow on clusters."""
    if bool(release_id) == latest:
        raise click.UsageError("give exactly one of --release ID or --latest")
    config = project_config(path, required=False)
    targets = _targets(target, clusters, config)
    if latest:
        slug = slug or (config.workflow.slug if config else None)
        if not slug:
            raise click.UsageError("--latest needs --workflow SLUG or a tilebox.workflow.toml here")
    plan = app.client.workflows().deploy_release(
        release_id, latest_of=slug if latest else None, clusters=targets, target=target,
        workflow=slug, force=force, dry_run=dry_run,
    )  # fmt: skip
    _report(app, plan, dry_run, "deployed")


@workflow.command("undeploy-release")
@click.option("--target", help="Undeploy from the clusters of this target.")
@click.option("--cluster", "clusters", help="Comma-separated cluster slugs (default: 'default').")
@click.option("--workflow", "slug", help="Workflow slug (default: from tilebox.workflow.toml).")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@yes_option
@path_argument
@deprecated_path_option
@json_option
@pass_app
def undeploy_release(
    app: AppContext,
    target: str | None,
    clusters: str | None,
    slug: str | None,
    dry_run: bool,
    yes: bool,
    path: Path | None,
) -> None:
    """Remove a workflow's active release from clusters (releases, artifacts and jobs are kept)."""
    config = project_config(path, required=False)
    targets = _targets(target, clusters, config)
    workflows = app.client.workflows()
    slug = workflow_slug(slug, path)
    if not dry_run and app.asks(yes):
        plan = workflows.undeploy_release(slug, clusters=targets, target=target, dry_run=True)
        removed = [f"{c.cluster} ({c.previous_release_id})" for c in plan.changes if c.changed]
        if removed:
            app.confirm(f"Undeploy {slug} from {', '.join(removed)}?")
    plan = workflows.undeploy_release(slug, clusters=targets, target=target, dry_run=dry_run)
    _report(app, plan, dry_run, "undeployed")


def _report(app: AppContext, plan: DeployPlan, dry_run: bool, verb: str) -> None:
    changed = any(c.changed for c in plan.changes)
    if app.json:
        emit_json(
            {
                "dry_run": dry_run,
                "release_id": plan.release.id if plan.release else None,
                "changed": changed,
                "message": None if changed else "nothing to change",
                "changes": plan.changes,
                "incompatibilities": plan.incompatibilities,
            }
        )
        return
    prefix = "would be " if dry_run else ""
    for change in plan.changes:
        if not change.changed and change.release_id is None:
            click.echo(f"{change.cluster}: {change.workflow} is not deployed there")
        elif not change.changed:
            click.echo(f"{change.cluster}: {change.workflow} already at {change.release_id}")
        elif change.release_id is None:
            click.echo(
                f"{change.cluster}: {change.workflow} {prefix}{verb} ({change.previous_release_id})"
            )
        else:
            was = f" (was {change.previous_release_id})" if change.previous_release_id else ""
            click.echo(
                f"{change.cluster}: {change.workflow} {prefix}{verb} {change.release_id}{was}"
            )
    if not changed:
        click.echo("nothing to change")
    for problem in plan.incompatibilities:
        click.echo(f"forced despite: {problem}", err=True)


def register(cli: click.Group) -> None:
    cli.add_command(workflow)
