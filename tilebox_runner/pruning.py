"""Bounded local caches: extracted releases and ``--env uv`` environments, pruned least recently
used first (``tilebox runner start --cache-max-bytes``).

A runner marks what it uses (``touch``): a release directory when it loads or reuses it, an
environment when it starts processes with it, and both again on every heartbeat while they run,
so the modification time of an entry's directory is when a runner last used it. ``prune`` removes
the least recently used entries until the caches fit, and never one that is ``in_use`` (this
runner's running and draining releases) nor one touched within ``grace`` (another runner on the
host, sharing the caches, uses it: it touches them every few seconds).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import structlog

from tilebox_core.domain.errors import InvalidInput

log = structlog.get_logger(__name__)

DEFAULT_CACHE_MAX_BYTES = 10 * 1024**3
GRACE_SECONDS = 15 * 60.0
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)$")
_FACTORS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def parse_size(text: str) -> int:
    """Bytes from ``2GiB``, ``500MB``, ``1.5G``, ``10000`` (k, M, G, T: powers of 1000; with
    ``i``, of 1024)."""
    match = _SIZE.match(text.strip().lower())
    if match is None:
        raise InvalidInput(
            f"invalid size {text!r}: use a number of bytes with an optional unit, like 500MB, "
            "2GiB or 10G"
        )
    number, unit = float(match[1]), match[2].rstrip("b")
    factor = 1024 ** ("kmgt".index(unit[0]) + 1) if unit.endswith("i") else _FACTORS[unit]
    return int(number * factor)


class Entry(NamedTuple):
    path: Path
    used: float  # when a runner last used it (its directory's modification time)
    size: int


def touch(paths: Iterable[Path]) -> None:
    """Mark ``paths`` used now (a path that is gone, or not ours to change, is left alone)."""
    for path in paths:
        try:
            os.utime(path)
        except OSError:
            continue


def entries(roots: Iterable[Path]) -> list[Entry]:
    """The cache entries under ``roots``: their directories, but those being made or moved
    aside (names starting with ``.``)."""
    found = []
    for root in roots:
        try:
            children = [c for c in root.iterdir() if c.is_dir() and not c.name.startswith(".")]
        except OSError:
            continue
        for child in children:
            try:
                found.append(Entry(child, child.stat().st_mtime, _size(child)))
            except OSError:
                continue
    return found


def prune(
    roots: Iterable[Path], max_bytes: int, in_use: Iterable[Path] = (),
    grace: float = GRACE_SECONDS, now: float | None = None,
) -> list[Path]:  # fmt: skip
    """Remove the least recently used entries under ``roots`` until they hold at most
    ``max_bytes`` (or only entries that must stay are left); the paths removed."""
    now = time.time() if now is None else now
    keep = {Path(p) for p in in_use}
    found = sorted(entries(roots), key=lambda e: e.used)
    total = sum(e.size for e in found)
    removed = []
    for entry in found:
        if total <= max_bytes:
            break
        if entry.path in keep or now - entry.used < grace:
            continue
        _remove(entry.path)
        total -= entry.size
        removed.append(entry.path)
    if removed:
        log.info("caches pruned", removed=[str(p) for p in removed], bytes=total)
    return removed


def _size(path: Path) -> int:
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                continue
    return total


def _remove(path: Path) -> None:
    """Move ``path`` aside first (a runner that picks it meanwhile makes it again), then delete."""
    aside = path.with_name(f".{path.name}.pruned-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.rename(path, aside)
    except OSError:
        return
    shutil.rmtree(aside, ignore_errors=True)
