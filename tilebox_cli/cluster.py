"""``tilebox cluster``: create, list, get, delete."""

from __future__ import annotations

from typing import Any

import click

from tilebox_core import Cluster

from .context import AppContext, json_option, pass_app
from .output import emit_json, table, when


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
    found: Cluster = app.client.clusters().find(slug)
    deployed = app.client.deployments().current().get(slug, {})
    runners = app.client.clusters().runners(slug)
    if app.json:
        emit_json({**_builtins(found), "deployments": deployed, "runners": runners})
        return
    click.echo(f"cluster  {found.slug} ({found.name})")
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
            click.echo(f"  {status.workflow} {status.release_id} {status.status}{error}")


@cluster.command("delete")
@click.argument("slug")
@json_option
@pass_app
def delete(app: AppContext, slug: str) -> None:
    """Delete a cluster (its deployments are removed; releases and jobs are kept)."""
    app.client.clusters().delete(slug)
    if app.json:
        emit_json({"deleted": slug})
    else:
        click.echo(f"deleted cluster {slug}")


def _builtins(value: object) -> dict[str, Any]:
    import msgspec

    return msgspec.to_builtins(value)  # type: ignore[no-any-return]


def register(cli: click.Group) -> None:
    cli.add_command(cluster)
