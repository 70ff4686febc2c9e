"""Rendering for the CLI: JSON for machines (``--json``), aligned tables and lines for people."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import click
import msgspec


def emit_json(value: Any) -> None:
    click.echo(msgspec.json.encode(msgspec.to_builtins(value)).decode())


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths)).rstrip())
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dt.datetime):
        return when(value)
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "-"
    return str(value)


class TerminalProgress:
    """``progress(stage, done, total)`` drawn on one stderr line, only on a terminal and not in --json."""

    def __init__(self, enabled: bool) -> None:
        import sys

        self.enabled = enabled and sys.stderr.isatty()
        self._drawn = False

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        percent = f"{100 * done // total:3d}%" if total else ""
        click.echo(f"\r{stage:<10} {done}/{total} {percent}".ljust(60), nl=False, err=True)
        self._drawn = True

    def upload(self, done: int, total: int) -> None:
        self("upload", done, total)

    def close(self) -> None:
        if self._drawn:
            click.echo("\r".ljust(61) + "\r", nl=False, err=True)
            self._drawn = False
