"""The auditor's check of the history itself: ``tilebox audit verify``."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from tilebox_core.domain.chain import Audit, BreakKind, StreamAudit

from .context import AppContext, json_option, pass_app
from .history import TIME
from .output import emit_json


@click.group("audit")
def audit() -> None:
    """Check that the event history was not altered."""


@audit.command("verify")
@click.option("--since", type=TIME, help="Only entries appended at or after this time.")
@json_option
@pass_app
def verify(app: AppContext, since: dt.datetime | None) -> None:
    """Recompute the hash chain of every event log; exit 1 at a break, naming where it is."""
    app.reading()
    found = app.client.events().verify(since)
    if app.json:
        emit_json(_report(found))
    else:
        _print(found)
    if not found.ok:
        click.get_current_context().exit(1)


def _print(found: Audit) -> None:
    word = "OK" if found.ok else "BROKEN"
    click.echo(
        f"{word}: {len(found.streams)} logs, {_count(found.entries, 'entry', 'entries')}, "
        f"{_count(found.events, 'event', 'events')}"
    )
    for log in found.streams:
        result = log.result
        line = (
            f"  {log.log}: {_count(result.entries, 'entry', 'entries')}, "
            f"{_count(result.events, 'event', 'events')}"
        )
        if log.segments:
            line += f" ({_count(log.segments, 'archive segment', 'archive segments')} and live)"
        if log.anchor is not None:
            line += f", taken up after {log.anchor}"
        elif result.start is not None and result.unchained:
            line += (
                f", chained from {result.start} ({result.unchained:,} entries before it unchained)"
            )
        elif result.entries and result.start is None and result.ok:
            line += ", none chained (appended before the chain existed)"
        click.echo(line)
        if result.broken is not None:
            b = result.broken
            if b.kind == BreakKind.SEGMENT:
                where = f"in the archive, at segment {b.number:,}: {b.position}"
            elif b.kind != BreakKind.HEAD:
                where = f"at entry {b.number:,}, position {b.position}"
            elif b.number:
                where = f"at its end, after entry {b.number:,}, position {b.position}"
            else:
                where = "at its end: it has no entries"
            click.echo(f"    broken: {log.stream}, {where}")
            click.echo(f"    {b.kind}: {b.detail}")


def _count(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def _report(found: Audit) -> dict[str, Any]:
    return {
        "ok": found.ok,
        "entries": found.entries,
        "events": found.events,
        "logs": [_log(log) for log in found.streams],
    }


def _log(log: StreamAudit) -> dict[str, Any]:
    result, broken = log.result, log.result.broken
    return {
        "log": log.log,
        "stream": log.stream,
        "anchor": log.anchor,
        "segments": log.segments,
        "entries": result.entries,
        "events": result.events,
        "unchained": result.unchained,
        "start": result.start,
        "broken": None if broken is None else {
            "kind": str(broken.kind), "position": broken.position, "entry": broken.number,
            "detail": broken.detail,
        },
    }  # fmt: skip


def register(cli: click.Group) -> None:
    cli.add_command(audit)
