"""``tilebox team``: a server's tenants and their ACL users (create, list, rotate, delete).

Every command needs an administrator's credential: ``TILEBOX_REDIS_URL`` naming such a user, or,
with none set, the embedded server's own admin. Secrets are printed once; the server keeps only
their hashes."""

from __future__ import annotations

import click

from tilebox_core.domain.retention import format_duration, parse_duration
from tilebox_core.domain.tenancy import ROLES, TeamChange

from .context import AppContext, json_option, pass_app, yes_option
from .output import emit_json, table


@click.group("team")
def team() -> None:
    """Teams (tenants) and their users: one per role (developer, runner, auditor)."""


def _warn_unsaved(change: TeamChange) -> None:
    if not change.persisted:
        click.echo(
            "warning: the server has no ACL file: it keeps these users in memory only and "
            "forgets them when it restarts (configure aclfile, then run ACL SAVE)",
            err=True,
        )


def _show_credentials(change: TeamChange) -> None:
    table(["role", "user", "secret"], [[c.role, c.user, c.secret] for c in change.credentials])
    click.echo("\nconnect as each with (shown this once; the server keeps only a hash):")
    for credential in change.credentials:
        click.echo(f"  {credential.role}: TILEBOX_REDIS_URL={credential.url}")


@team.command("create")
@click.argument("name")
@json_option
@pass_app
def create(app: AppContext, name: str) -> None:
    """Create team NAME's users (developer, runner, auditor) and print their secrets once."""
    change = app.admin_client.teams().create(name)
    _warn_unsaved(change)
    if app.json:
        emit_json(change)
        return
    click.echo(f"created team {name}")
    _show_credentials(change)


@team.command("list")
@json_option
@pass_app
def list_(app: AppContext) -> None:
    """List the teams and their users (2 passwords: a rotation not finished yet)."""
    teams = app.admin_client.teams().all()
    if app.json:
        emit_json(teams)
        return
    rows = [
        [t.team, u.role, u.user, "enabled" if u.enabled else "deleted", u.passwords,
         "yes" if u.in_sync else "NO"]
        for t in teams for u in t.users
    ]  # fmt: skip
    table(["team", "role", "user", "state", "passwords", "in sync"], rows)


@team.command("rotate")
@click.argument("name")
@click.option("--role", "role", required=True, type=click.Choice([r.value for r in ROLES]),
              help="The user whose secret to replace.")  # fmt: skip
@click.option("--finish", is_flag=True,
              help="End the overlap: only the newest secret works from now on.")  # fmt: skip
@json_option
@pass_app
def rotate(app: AppContext, name: str, role: str, finish: bool) -> None:
    """Give team NAME's ROLE user a new secret; the previous one works until --finish (or the
    next rotation)."""
    change = app.admin_client.teams().rotate(name, role, finish=finish)
    _warn_unsaved(change)
    if app.json:
        emit_json(change)
        return
    [user] = change.users
    if finish:
        click.echo(f"rotation of {user} finished: only its newest secret works now")
        return
    click.echo(f"new secret for {user}")
    _show_credentials(change)
    click.echo(
        f"the previous secret works until 'tilebox team rotate {name} --role {role} --finish' "
        "(or the next rotation)"
    )


@team.command("delete")
@click.argument("name")
@yes_option
@json_option
@pass_app
def delete(app: AppContext, name: str, yes: bool) -> None:
    """Disable team NAME's users and close their connections; the team's data is kept."""
    teams = app.admin_client.teams()
    if app.asks(yes):
        teams.find(name)  # an unknown team is refused before the question
        app.confirm(f"Disable every user of team {name} (its data is kept)?")
    change = teams.delete(name)
    _warn_unsaved(change)
    if app.json:
        emit_json(change)
        return
    click.echo(f"deleted team {name}: disabled {', '.join(change.users)}; its data is kept")


@team.command("retention")
@click.argument("duration", required=False)
@json_option
@pass_app
def retention(app: AppContext, duration: str | None) -> None:
    """Show or set how long the team's jobs stay in Redis once they ended (e.g. 7d, 12h, 30m;
    0 removes them as soon as they end). It applies to jobs submitted from now on; a job's own
    retention is given at submit (job submit --retention). The team is --team / TILEBOX_TEAM;
    its developer credential is enough."""
    jobs = app.client.jobs()
    if duration is None:
        app.reading()
        current = jobs.retention()
    else:
        current = jobs.set_retention(parse_duration(duration))
    if app.json:
        emit_json({"team": app.client.team, "retention": format_duration(current),
                   "seconds": int(current.total_seconds())})  # fmt: skip
        return
    verb = "is" if duration is None else "set to"
    click.echo(f"retention of team {app.client.team} {verb} {format_duration(current)}")


def register(cli: click.Group) -> None:
    cli.add_command(team)
