"""Local cache of extracted release artifacts, keyed by digest (shared by every runner on a host)."""

from __future__ import annotations

from pathlib import Path

import structlog

from tilebox_core.build.artifact import digest_hex, extract_artifact, verify_digest
from tilebox_core.domain.errors import Conflict
from tilebox_core.domain.projection import Release
from tilebox_core.redis.eventstore import EventStore

log = structlog.get_logger(__name__)


class ReleaseCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, digest: str) -> Path:
        return self.root / digest_hex(digest)

    def prepare(self, store: EventStore, release: Release) -> Path:
        """The extracted code of ``release``: downloaded, digest-checked and unpacked if not cached.

        Raises ``ArtifactError`` for a missing, corrupt or hostile artifact; nothing is left behind.
        """
        target = self.path(release.digest)
        if target.is_dir():
            return target
        data = store.get_artifact(release.digest)
        verify_digest(data, release.digest)
        try:
            extract_artifact(data, target)
        except Conflict:
            if not target.is_dir():  # pragma: no cover - a file in the way, not a racing runner
                raise
        log.info("release extracted", release_id=release.id, path=str(target), bytes=len(data))
        return target
