"""Release caches and ``--env uv`` environments pruned to a bound, least recently used first,
never one in use or used lately by another runner (real files)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tilebox_core import InvalidInput
from tilebox_runner.pruning import entries, parse_size, prune, touch


def entry(root: Path, name: str, size: int, used: float) -> Path:
    path = root / name
    (path / "pkg").mkdir(parents=True)
    (path / "pkg" / "data.bin").write_bytes(b"x" * size)
    os.utime(path, (used, used))
    return path


@pytest.mark.parametrize(
    ("text", "size"),
    [("10000", 10000), ("500MB", 500_000_000), ("2GiB", 2 * 1024**3), ("1.5G", 1_500_000_000),
     ("64kib", 65536), ("3 T", 3 * 1000**4)],
)  # fmt: skip
def test_sizes_parse(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1GB", "2 GiBs", "1e9"])
def test_bad_sizes_say_how_to_write_one(text: str) -> None:
    with pytest.raises(InvalidInput, match=r"invalid size .* like 500MB, 2GiB or 10G"):
        parse_size(text)


def test_least_recently_used_go_first_and_what_runs_stays(tmp_path: Path) -> None:
    releases, envs = tmp_path / "releases", tmp_path / "envs"
    now = time.time()
    hour = 3600.0
    oldest = entry(releases, "a" * 64, 1000, now - 5 * hour)
    running = entry(releases, "b" * 64, 1000, now - 4 * hour)  # old, but a release runs from it
    old_env = entry(envs, "e1", 3000, now - 3 * hour)
    recent = entry(releases, "c" * 64, 1000, now - 2 * hour)
    lately = entry(envs, "e2", 1000, now - 60)  # used a minute ago (another runner: kept)
    (releases / ".partial-x").mkdir()  # being made: not an entry
    assert {e.path for e in entries([releases, envs])} == {oldest, running, old_env, recent, lately}
    removed = prune([releases, envs], max_bytes=3500, in_use=[running], now=now)
    assert removed == [oldest, old_env]  # 7000 -> 3000 bytes: the two least recently used
    assert not oldest.exists() and not old_env.exists()
    assert running.exists() and recent.exists() and lately.exists()
    assert not [p for p in releases.iterdir() if ".pruned-" in p.name]  # moved aside, deleted
    # over the bound with only what must stay: nothing more goes
    assert prune([releases, envs], max_bytes=0, in_use=[running, recent], now=now) == []
    touch([running])  # used now: the newest
    assert prune([releases, envs], max_bytes=1000, now=now + 2 * hour) == [recent, lately]
    assert prune([tmp_path / "missing"], max_bytes=0) == []
