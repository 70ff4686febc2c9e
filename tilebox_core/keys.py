"""Every Redis key name, in one place.

All keys of a team live under ``<prefix>:{<team>}:`` — one hash tag per team, so every multi-key
script touches a single Redis Cluster slot and one ACL key pattern (``<prefix>:{<team>}:*``) covers
a team. Scripts never build key names; they receive them in KEYS from here.
"""

from __future__ import annotations

from .identifiers import validate_slug

DEFAULT_PREFIX = "tilebox"


class Keys:
    def __init__(self, prefix: str, team: str) -> None:
        validate_slug(team, "team name")
        if not prefix or any(c in prefix for c in "{}: "):
            raise ValueError(f"invalid key prefix {prefix!r}")
        self.prefix = prefix
        self.team = team
        self.base = f"{prefix}:{{{team}}}:"

    # --- event logs ---------------------------------------------------------------------------

    def log(self, name: str) -> str:
        """An append-only event log stream: ``control`` or ``tasks``."""
        return f"{self.base}log:{name}"

    def dedup(self, name: str) -> str:
        """Hash: first event id of each appended batch -> stream id (idempotent appends)."""
        return f"{self.base}log:{name}:dedup"

    def checkpoint(self, name: str) -> str:
        return f"{self.base}checkpoint:{name}"

    # --- materialised projections ---------------------------------------------------------------

    @property
    def deployments(self) -> str:
        """Hash ``<cluster>/<workflow>`` -> release id, maintained by the append script."""
        return f"{self.base}deployments"

    # --- artifacts (content addressed) ------------------------------------------------------------

    def artifact(self, digest: str) -> str:
        """List of chunks of a stored artifact."""
        return f"{self.base}artifact:{digest}"

    def artifact_upload(self, digest: str, upload_id: str) -> str:
        return f"{self.base}artifact:{digest}:upload:{upload_id}"
