"""``tilebox archive run`` and ``tilebox archive status``: the event logs' archive."""

from __future__ import annotations

import signal
import threading

import click

from tilebox_core.archiver import Archiver, archive_status
from tilebox_core.client import position_time
from tilebox_core.domain.archive import INTERVAL_SECONDS, NONE
from tilebox_core.domain.errors import InvalidInput
from tilebox_core.domain.retention import parse_duration
from tilebox_core.logs import configure_logging

from .context import AppContext, json_option, pass_app
from .output import emit_json, table, when


class DurationType(click.ParamType):  # type: ignore[type-arg]
    """A duration as milliseconds: ``0``, ``15m``, ``7d``, ``1d12h`` (domain.retention)."""

    name = "DURATION"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        try:
            return int(parse_duration(str(value)).total_seconds() * 1000)
        except InvalidInput as exc:
            self.fail(str(exc), param, ctx)


@click.group("archive")
def archive() -> None:
    """The archive of the event logs: where their oldest entries go before Redis trims them."""


@archive.command("run")
@click.option(
    "--once", is_flag=True, help="One pass, then exit (default: until Ctrl-C or SIGTERM)."
)
@click.option("--retention", type=DurationType(), default=None,
              help="How long the logs' entries stay live in Redis at most: the control log's, "
                   "and a task log's also while a job of theirs is still there (default: the "
                   "team's retention, tilebox team retention).")  # fmt: skip
@click.option("--interval", type=click.FloatRange(min=0.1), default=INTERVAL_SECONDS,
              show_default=True, help="Seconds between passes.")  # fmt: skip
@json_option
@pass_app
def run(app: AppContext, once: bool, retention: int | None, interval: float) -> None:
    """Remove the team's expired jobs, archive its logs up to their trim points, then trim them
    (one archiver per team: the others wait for its lease)."""
    archiver = Archiver(app.client, retention_ms=retention)
    if not once:
        configure_logging(app.log_level or "info", "json" if app.json else app.log_format)
        stop = threading.Event()
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            archiver.run(stop, interval)
        except KeyboardInterrupt:
            archiver.release()
        finally:
            signal.signal(signal.SIGTERM, previous)
        return
    try:
        done = archiver.run_once()
    finally:
        archiver.release()
    if app.json:
        emit_json(done)
        return
    rows = [
        [p.log, p.segments, p.entries, p.events, p.bytes, p.trimmed, p.skipped or "-"] for p in done
    ]
    table(["log", "segments", "entries", "events", "bytes", "trimmed", "skipped"], rows)


@archive.command("status")
@json_option
@pass_app
def status(app: AppContext) -> None:
    """Per log: archived up to, segments, entries and bytes archived, entries live in Redis."""
    found = archive_status(app.client)
    if app.json:
        emit_json(found)
        return
    click.echo(f"archive: {app.client.archive.location}")
    rows = [
        [
            s.log, "-" if s.archived_to == NONE else when(position_time(s.archived_to)),
            s.segments, s.entries, s.bytes, s.live_entries, s.pending or "-",
        ]
        for s in found
    ]  # fmt: skip
    table(["log", "archived to", "segments", "entries", "bytes", "live entries", "pending"], rows)


def register(cli: click.Group) -> None:
    cli.add_command(archive)
