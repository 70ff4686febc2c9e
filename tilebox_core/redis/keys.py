"""Every Redis key name, in one place.

All keys of a team live under ``<prefix>:{<team>}:`` — one hash tag per team, so every multi-key
script touches a single Redis Cluster slot and one ACL key pattern (``<prefix>:{<team>}:*``) covers
a team. Scripts never build key names; they receive them in KEYS from here.
"""

from __future__ import annotations

from tilebox_core.domain.errors import InvalidInput
from tilebox_core.domain.identifiers import validate_slug

DEFAULT_PREFIX = "tilebox"


def check_prefix(prefix: str) -> str:
    """A key prefix: it must not open a hash tag or look like a key separator."""
    if not prefix or any(c in prefix for c in "{}: "):
        raise InvalidInput(
            f"invalid key prefix {prefix!r}: use a word without braces, colons or spaces, "
            "e.g. 'tilebox'"
        )
    return prefix


class Keys:
    def __init__(self, prefix: str, team: str) -> None:
        validate_slug(team, "team name")
        self.prefix = check_prefix(prefix)
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

    # --- task plane ---------------------------------------------------------------------------------

    def job(self, job_id: str) -> str:
        """Hash (materialised by the task scripts): ``info``, the job's description as JSON
        (name, cluster, submitter, root task ids, ...); ``open``, its root tasks not yet complete
        (0: completed); ``failed``; ``computed`` and ``skipped``, results counted while it runs,
        which tell a running job from a queued one (a call that completes the job does not
        count its own); ``started``, ``cancelled``; and ``progress:<label>:done|total``."""
        return f"{self.base}job:{job_id}"

    def job_tasks(self, job_id: str) -> str:
        """List of the ids of the tasks a job's tasks submitted, in submission order (its root
        tasks are named by its description; jobs submitted before that have them here too)."""
        return f"{self.base}job:{job_id}:tasks"

    @property
    def jobs(self) -> str:
        """Sorted set of job ids scored by submission time (ms)."""
        return f"{self.base}jobs"

    def task(self, task_id: str) -> str:
        """Hash: one task's state, input, lane entry, owner and dependency bookkeeping."""
        return f"{self.base}task:{task_id}"

    def lane(self, cluster: str, name: str, major: int, minor: int) -> str:
        """Task queue stream of one (cluster, task name, version); one consumer group ``runners``.
        (Earlier versions also kept a set of each cluster's lanes, ``lanes:<cluster>``, that
        nothing read; it is no longer written.)"""
        return f"{self.base}lane:{cluster}:v{major}.{minor}:{name}"

    def runners(self, cluster: str) -> str:
        """Sorted set: runner id -> last heartbeat (ms) of the runners serving a cluster."""
        return f"{self.base}runners:{cluster}"

    def runner(self, runner_id: str) -> str:
        """Hash: a runner's host, cluster, loaded releases and status."""
        return f"{self.base}runner:{runner_id}"
