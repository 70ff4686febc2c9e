"""Local cache of extracted release artifacts: one directory per team, a release's code in it
keyed by digest (shared by the runners of that team on a host).

A runner runs only code it verified. Before it reuses an extracted release it downloads the
artifact, checks its digest (the one the release event recorded) and compares every file of the
directory with it: a file changed, added (a ``__pycache__`` too: bytecode runs as well), removed,
made a link or given another mode makes it extract the release again, and a fresh extraction
that does not match is refused. Caches are per team (``<root>/<prefix>/<team>``): a team's
runtime processes run in their release's directory and can write there, so another team's code
is never what this team reuses.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import structlog

from tilebox_core.build.artifact import (
    artifact_manifest,
    digest_hex,
    extract_artifact,
    tree_mismatch,
    verify_digest,
)
from tilebox_core.domain.errors import ArtifactError, Conflict
from tilebox_core.domain.projection import Release
from tilebox_core.redis.eventstore import EventStore

log = structlog.get_logger(__name__)


class ReleaseCache:
    def __init__(self, root: Path, prefix: str, team: str) -> None:
        self.root = root / prefix / team

    def path(self, digest: str) -> Path:
        return self.root / digest_hex(digest)

    def prepare(self, store: EventStore, release: Release) -> Path:
        """The extracted code of ``release``, checked against its artifact: downloaded, digest-
        checked and unpacked if not cached or if the cached copy was modified.

        Raises ``ArtifactError`` for a missing, corrupt or hostile artifact, or an extraction that
        does not match it; nothing is left behind.
        """
        data = store.get_artifact(release.digest)
        verify_digest(data, release.digest)
        manifest = artifact_manifest(data)
        target = self.path(release.digest)
        if target.exists():
            problem = tree_mismatch(target, manifest)
            if problem is None:
                return target
            log.warning("release cache modified since it was extracted; extracting it again",
                        release_id=release.id, path=str(target), problem=problem)  # fmt: skip
            _discard(target)
        try:
            extract_artifact(data, target)
        except Conflict:
            if not target.is_dir():  # pragma: no cover - a file in the way, not a racing runner
                raise
        problem = tree_mismatch(target, manifest)  # a racing runner's, or a disk that lies
        if problem is not None:
            raise ArtifactError(
                f"release {release.id}: its code in {target} does not match its artifact after "
                f"extraction ({problem}); remove {target} and check who writes there"
            )
        log.info("release extracted", release_id=release.id, path=str(target), bytes=len(data))
        return target


def _discard(target: Path) -> None:
    """Move ``target`` aside (processes running in it keep their working directory; a new
    extraction takes its name at once), then delete it."""
    aside = target.with_name(f".{target.name}.modified-{os.getpid()}-{time.monotonic_ns()}")
    os.rename(target, aside)
    shutil.rmtree(aside, ignore_errors=True)
