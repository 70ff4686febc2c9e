"""The project's error family.

Everything the library raises on purpose derives from ``TileboxError``; driver errors are translated
where they enter (the store adapter), so callers and the CLI never see a ``redis`` exception. The
message of a user-facing error is one line: what is wrong, where, and how to fix it.

Each class has a stable ``code`` (``tilebox --json`` prints it with the message); a subclass keeps
its parent's code unless it names its own, and a code never changes meaning.
"""

from __future__ import annotations


class TileboxError(Exception):
    """Base of every error the library raises deliberately."""

    code = "error"


class InvalidInput(TileboxError):
    """The caller gave something malformed (a slug, a version, a JSON document, a config file)."""

    code = "invalid_input"


class NotFound(TileboxError):
    """A cluster, workflow, release, job or target that does not exist."""

    code = "not_found"


class Conflict(TileboxError):
    """The request contradicts current state (already exists, wrong workflow, cannot delete)."""

    code = "conflict"


class Incompatible(Conflict):
    """A new release breaks the input schema of a task that is deployed with the same major."""

    code = "incompatible"

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems


class ConcurrencyError(TileboxError):
    """An append expected a stream version that another writer has moved past; re-read and retry."""

    code = "concurrency"


class StoreUnavailable(TileboxError):
    """Redis/Valkey cannot be reached, refused authentication, or is too old."""

    code = "store_unavailable"


class ArtifactError(TileboxError):
    """An artifact is too large, corrupt, does not match its digest, or contains hostile entries."""

    code = "artifact"


class PermissionDenied(TileboxError):
    """The server refused a command to the connected user (its ACL): another team's keys, or
    what the user's role may not do (a runner publishing, an auditor writing)."""

    code = "permission_denied"
