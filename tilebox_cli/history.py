"""The auditor's commands: ``tilebox deployments [--as-of]`` and ``tilebox events list``."""

from __future__ import annotations

import datetime as dt
import re
import signal
from collections.abc import Iterator
from typing import Any

import click
import msgspec

from tilebox_core.client import Stored, position_time
from tilebox_core.domain.events import UnknownEvent

from .context import AppContext, json_option, pass_app
from .output import emit_json, table, when

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class TimeType(click.ParamType):  # type: ignore[type-arg]
    """ISO 8601 (``2026-11-21T14:02:00Z``; no zone means UTC) or a duration ago (``15m``, ``2h``)."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, dt.datetime):
            return value
        text = str(value).strip()
        now = dt.datetime.now(dt.UTC)
        if text == "now":
            return now
        match = _RELATIVE.match(text)
        if match:
            return now - dt.timedelta(**{_UNITS[match[2]]: int(match[1])})
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            self.fail(
                f"{text!r} is not a time: use ISO 8601 like 2026-11-21T14:02:00Z, or 15m / 2h / 3d",
                param,
                ctx,
            )
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


TIME = TimeType()


@click.command("deployments")
@click.option("--as-of", type=TIME, help="Answer for a past time (replays the log up to it).")
@json_option
@pass_app
def deployments(app: AppContext, as_of: dt.datetime | None) -> None:
    """cluster -> workflow -> release, now or at any past time."""
    app.reading()
    view = app.client.deployments()
    mapping = view.as_of(as_of) if as_of else view.current()
    if app.json:
        emit_json(mapping)
        return
    if as_of:
        click.echo(f"as of {when(as_of)}")
    rows = [[c, w, r] for c, by_wf in mapping.items() for w, r in by_wf.items()]
    if rows:
        table(["cluster", "workflow", "release"], rows)
    else:
        click.echo("nothing deployed")


@click.group("events")
def events() -> None:
    """The event history."""


@events.command("list")
@click.option("--since", type=TIME, help="Only events at or after this time.")
@click.option("--until", type=TIME, help="Only events at or before this time.")
@click.option("--type", "types", multiple=True, help="Only events of this type (repeatable).")
@click.option("--job", "job_id", help="Only events of this job.")
@click.option("--actor", help="Only events by this actor (user:... or a runner id).")
@click.option("--limit", type=click.IntRange(min=1), help="Only the last N matching events.")
@click.option("--follow", "-f", is_flag=True,
              help="Then print new events as they are appended, until Ctrl-C or SIGTERM.")  # fmt: skip
@json_option
@pass_app
def list_(
    app: AppContext, since: dt.datetime | None, until: dt.datetime | None, types: tuple[str, ...],
    job_id: str | None, actor: str | None, limit: int | None, follow: bool,
) -> None:  # fmt: skip
    """Every event with its time and actor, oldest first (--json --follow: one object a line)."""
    app.reading()
    history = app.client.events()
    if follow:
        if until is not None:
            raise click.UsageError("--follow tails new events: it cannot stop --until a time")
        _follow(app, history.follow(since, types, job=job_id, actor=actor, limit=limit))
        return
    found = history.list(since, until, types, job=job_id, actor=actor, limit=limit)
    if app.json:
        emit_json([_event_dict(s.position, s.event) for s in found])
        return
    table(["time", "type", "actor", "details"], [_row(stored) for stored in found])


def _follow(app: AppContext, events: Iterator[Stored]) -> None:
    """Print ``events`` as they come; Ctrl-C or SIGTERM ends it, with exit code 0."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        for stored in events:
            if app.json:
                emit_json(_event_dict(stored.position, stored.event))
            else:
                click.echo("  ".join(_row(stored)))
    except KeyboardInterrupt:
        return
    finally:
        signal.signal(signal.SIGTERM, previous)


def _row(stored: Stored) -> list[str]:
    event = stored.event
    return [when(position_time(stored.position)), event.type, event.actor, _summary(event)]


_COMMON = {"id", "at", "actor", "team", "type", "input_schema", "tasks", "raw"}


def _event_dict(position: str, event: Any) -> dict[str, Any]:
    if isinstance(event, UnknownEvent):
        data = {"type": event.type, "unknown": True, **msgspec.to_builtins(event.raw)}
    else:
        data = {"type": event.type, **msgspec.to_builtins(event)}
    return {"position": position, **data}


def _summary(event: Any) -> str:
    if isinstance(event, UnknownEvent):
        return f"unknown event type {event.type!r} (written by a newer version?)"
    fields = msgspec.structs.asdict(event)
    parts = [
        f"{k}={v}" for k, v in fields.items() if k not in _COMMON and v not in (None, [], "", False)
    ]
    if "tasks" in fields:
        parts.append("tasks=" + ",".join(f"{t.name}@{t.version}" for t in fields["tasks"]))
    return " ".join(parts)


def register(cli: click.Group) -> None:
    cli.add_command(deployments)
    cli.add_command(events)
