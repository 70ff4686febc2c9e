"""Template filters: how times, sizes, ids and counts read on the console's pages."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any


def when(value: dt.datetime | None) -> str:
    """UTC, to the second: every time on the console is in one zone, as in the CLI."""
    if value is None:
        return "-"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def iso(value: dt.datetime | None) -> str:
    """The time as the filters take it back (``?as_of=``, ``?until=``): ISO 8601, UTC, in ms."""
    if value is None:
        return ""
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ago(value: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """``3 min ago``: how long before ``now``, coarsely."""
    if value is None:
        return ""
    seconds = ((now or dt.datetime.now(dt.UTC)) - value).total_seconds()
    if seconds < 0:
        return "just now" if seconds > -5 else "in the future"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def size(value: int | None) -> str:
    if value is None:
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB"):
        if amount < 1024 or unit == "MiB":
            return f"{amount:,.0f} {unit}" if unit == "B" else f"{amount:,.1f} {unit}"
        amount /= 1024
    return f"{amount:,.1f} MiB"  # pragma: no cover - the loop returns at MiB


def seconds(value: float) -> str:
    if 0 < value < 0.001:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.2f} s"
    return f"{value / 60:.1f} min"


def short(value: str | None, keep: int = 8) -> str:
    """An id shortened to its last ``keep`` characters: a UUIDv7 starts with its time, so the
    end is what tells two ids of the same minute apart."""
    if not value:
        return "-"
    return value if len(value) <= keep + 1 else "…" + value[-keep:]


def digest(value: str) -> str:
    algorithm, _, hexdigest = value.partition(":")
    return f"{algorithm}:{hexdigest[:12]}…" if hexdigest else value


def number(value: int) -> str:
    return f"{value:,}"


def plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def state_label(state: str) -> str:
    return state.replace("_", " ")


FILTERS: dict[str, Callable[..., Any]] = {
    "when": when, "iso": iso, "ago": ago, "size": size, "seconds": seconds, "short": short,
    "digest": digest, "number": number, "plural": plural, "state_label": state_label,
}  # fmt: skip
