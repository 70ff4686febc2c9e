"""The release cache trusts only what it verified: a cached release is compared with its artifact
before it is reused, and caches are per team."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tilebox_core import Client
from tilebox_core.build.artifact import artifact_manifest, pack, tree_mismatch
from tilebox_core.domain.events import ReleaseTask
from tilebox_core.domain.projection import Release
from tilebox_runner.release_cache import ReleaseCache

FILES = {
    "scenes/__init__.py": b"",
    "scenes/runner.py": b"VALUE = 'genuine'\n",
    "bin/run": b"#!/bin/sh\n",
}


@pytest.fixture
def release(client: Client, tmp_path: Path) -> Release:
    source = tmp_path / "src"
    for name, content in FILES.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(content)
    (source / "bin/run").chmod(0o755)
    artifact = pack(source, sorted(FILES)).data
    client.workflows().create("scenes")
    return (
        client.workflows()
        .publish_release(
            "scenes", artifact, [ReleaseTask("scenes.T", "v1.0")], runner="scenes.runner:runner"
        )
        .release
    )


def tampered(cache: ReleaseCache, client: Client, release: Release) -> list[dict[str, object]]:
    """The log of preparing ``release`` again (after the test tampered with it)."""
    with capture_logs() as logs:
        path = cache.prepare(client.store, release)
    assert (path / "scenes/runner.py").read_bytes() == FILES["scenes/runner.py"]
    assert tree_mismatch(path, artifact_manifest(client.store.get_artifact(release.digest))) is None
    return [entry for entry in logs if entry["log_level"] == "warning"]


def test_an_unchanged_cache_is_reused(client: Client, release: Release, tmp_path: Path) -> None:
    cache = ReleaseCache(tmp_path / "releases", client.prefix, client.team)
    first = cache.prepare(client.store, release)
    inode = first.stat().st_ino
    assert cache.prepare(client.store, release) == first and first.stat().st_ino == inode


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: (d / "scenes/runner.py").write_text("VALUE = 'evil'\n"),
        lambda d: (d / "scenes/evil.py").write_text("import os\n"),
        lambda d: (
            (d / "scenes/__pycache__").mkdir()
            or (d / "scenes/__pycache__/runner.pyc").write_bytes(b"x")
        ),
        lambda d: (d / "scenes/runner.py").unlink(),
        lambda d: (d / "bin/run").chmod(0o644),
        lambda d: (
            (d / "scenes/runner.py").unlink() or os.symlink("/etc/hostname", d / "scenes/runner.py")
        ),
    ],
    ids=["changed", "added", "bytecode", "removed", "mode", "link"],
)
def test_a_tampered_cache_is_not_reused(
    client: Client, release: Release, tmp_path: Path, tamper: object
) -> None:
    cache = ReleaseCache(tmp_path / "releases", client.prefix, client.team)
    path = cache.prepare(client.store, release)
    tamper(path)  # type: ignore[operator]
    [warning] = tampered(cache, client, release)
    assert warning["event"] == "release cache modified since it was extracted; extracting it again"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # the copy was removed


def test_caches_are_per_team(client: Client, release: Release, tmp_path: Path) -> None:
    ours = ReleaseCache(tmp_path / "releases", client.prefix, client.team)
    theirs = ReleaseCache(tmp_path / "releases", client.prefix, "another-team")
    assert ours.path(release.digest) != theirs.path(release.digest)
    assert ours.prepare(client.store, release).is_relative_to(
        tmp_path / "releases" / "tilebox" / client.team
    )
