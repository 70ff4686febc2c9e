"""Rendering for the CLI: JSON for machines (``--json``), aligned tables and lines for people.

On a terminal, states are coloured (unless ``NO_COLOR`` or ``--no-color``) and output longer
than the screen goes through a pager; off a terminal the output is plain, byte for byte.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sys
from collections.abc import Sequence
from typing import Any

import click
import msgspec

from tilebox_core.domain.identifiers import is_control as _is_control

STATE_COLOURS = {
    "completed": "green",
    "computed": "green",
    "running": "yellow",
    "loading": "yellow",
    "draining": "yellow",
    "queued": "cyan",
    "waiting": "cyan",
    "failed": "red",
    "failed_optional": "magenta",
    "cancelled": "bright_black",
    "skipped": "bright_black",
    "idle": "bright_black",
}


class State(str):
    """A job, task or release state: coloured in a table on a terminal."""


def emit_json(value: Any) -> None:
    click.echo(msgspec.json.encode(msgspec.to_builtins(value)).decode())


def colour_enabled() -> bool:
    """Colour for this command's stdout: a terminal, and neither NO_COLOR nor --no-color."""
    ctx = click.get_current_context(silent=True)
    wanted = ctx.meta.get("tilebox.color", True) if ctx is not None else True
    return bool(wanted) and sys.stdout.isatty()


def coloured(value: str) -> str:
    """``value`` coloured for its state when colour is on."""
    colour = STATE_COLOURS.get(value)
    return click.style(value, fg=colour) if colour and colour_enabled() else value


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for row, raw in zip(cells, rows):
        padded = [_painted(c.ljust(w), v) for c, w, v in zip(row, widths, raw)]
        lines.append("  ".join(padded).rstrip())
    page(lines)


def _painted(padded: str, value: Any) -> str:
    """A padded cell, its text coloured if it is a state (the padding is not: escape codes must
    not count towards the column width)."""
    if not isinstance(value, State):
        return padded
    text = padded.rstrip()
    return coloured(text) + padded[len(text) :]


def page(lines: Sequence[str]) -> None:
    """Print ``lines``; through a pager when stdout is a terminal that they would overflow."""
    if sys.stdout.isatty() and len(lines) >= shutil.get_terminal_size().lines:
        click.echo_via_pager("\n".join(lines), color=colour_enabled())
        return
    for line in lines:
        click.echo(line)


def when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dt.datetime):
        return when(value)
    if isinstance(value, (list, tuple)):
        return ",".join(map(printable, map(str, value))) or "-"
    return printable(str(value))


def printable(text: str) -> str:
    """``text`` for one line of a terminal: control characters (newlines, escape sequences, bidi
    overrides) as Python escapes, so a task or job name of any characters neither breaks a table
    nor moves the cursor; other text is unchanged."""
    if not any(_is_control(c) for c in text):
        return text
    return "".join(c.encode("unicode_escape").decode() if _is_control(c) else c for c in text)


class TerminalProgress:
    """``progress(stage, done, total)`` drawn on one stderr line, only on a terminal and not in --json."""

    def __init__(self, enabled: bool) -> None:
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


def warn(message: str) -> None:
    """A line on stderr that does not change the command's result."""
    click.echo(f"warning: {message}", err=True)
