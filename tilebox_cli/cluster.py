"""``tilebox cluster``: create, list, get, delete."""

from __future__ import annotations

from typing import Any

import click

from tilebox_core import Cluster

from .context import AppContext, json_option, pass_app, yes_option
from .output import coloured, emit_json, table, when


@click.group("cluster")
def cluster() -> None:
    """Named groups of runners that jobs are submitted to."""


@cluster.command("create")
@click.argument("name")
@click.option("--slug", help="Slug (default: derived from NAME).")
@json_option
@pass_app
def create(app: AppContext, name: str, slug: str | None) -> None:
    """Create a cluster."""
    created = app.client.clusters().create(name, slug)
    if app.json:
        emit_json(created)
    else:
        click.echo(f"created cluster {created.slug} ({created.name})")


@cluster.command("list")
@json_option
@pass_app
def list_(app: AppContext) -> None:
    """List the team's clusters."""
    app.reading()
    clusters = app.client.clusters().all()
    if app.json:
        emit_json(clusters)
        return
    table(["slug", "name", "created"], [[c.slug, c.name, c.created_at] for c in clusters])


@cluster.command("get")
@click.argument("slug")
@json_option
@pass_app
def get(app: AppContext, slug: str) -> None:
    """Show a cluster and what is deployed on it."""
    app.reading()
    found: Cluster = app.client.clusters().find(slug)
    deployed = app.client.deployments().current().get(slug, {})
    runners = app.client.clusters().runners(slug)
    if app.json:
        emit_json({**_builtins(found), "deployments": deployed, "runners": runners})
        return
    click.echo(f"cluster  {found.slug} ({found.name})")
    if found.created_at is None:
        click.echo("created  built in (every team has it)")
    else:
        click.echo(f"created  {when(found.created_at)} by {found.created_by or '-'}")
    if deployed:
        table(["workflow", "release"], sorted(deployed.items()))
    else:
        click.echo("no releases deployed")
    if not runners:
        click.echo(f"no live runners; start one with 'tilebox runner start --cluster {slug}'")
    for r in runners:
        click.echo(f"runner   {r.id} on {r.host} (pid {r.pid}), heartbeat {when(r.last_heartbeat)}")
        for status in r.releases:
            error = f": {status.error}" if status.error else ""
            click.echo(f"  {status.workflow} {status.release_id} {coloured(status.status)}{error}")


@cluster.command("delete")
@click.argument("slug")
@click.option("--force", is_flag=True,
              help="Delete it even with deployments or unfinished jobs (they are removed/stranded).")  # fmt: skip
@yes_option
@json_option
@pass_app
def delete(app: AppContext, slug: str, force: bool, yes: bool) -> None:
    """Delete a cluster (its deployments are removed; releases and jobs are kept)."""
    clusters = app.client.clusters()
    if app.asks(yes):
        plan = clusters.delete(slug, force=force, dry_run=True)  # refuses as the deletion would
        app.confirm(f"Delete cluster {slug} (it {plan.summary()})?")
    deleted = clusters.delete(slug, force=force)
    if app.json:
        emit_json({"deleted": slug, "deployments": deleted.deployments,
                   "unfinished_jobs": deleted.unfinished_jobs})  # fmt: skip
        return
    click.echo(f"deleted cluster {slug}")
    for workflow, release in deleted.deployments.items():
        click.echo(f"removed deployment of {workflow} ({release})")
    if deleted.unfinished_jobs:
        click.echo(
            f"{deleted.unfinished_jobs} unfinished job(s) on it will not run (cluster deleted)"
        )


def _builtins(value: object) -> dict[str, Any]:
    import msgspec

    return msgspec.to_builtins(value)  # type: ignore[no-any-return]


def register(cli: click.Group) -> None:
    cli.add_command(cluster)
