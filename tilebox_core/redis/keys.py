"""Every Redis key name, in one place.

A team's control plane (its control log, projections, artifacts, runner records and the number of
its task-plane shards) lives under ``<prefix>:{<team>}:``. Its task plane (task log, jobs, tasks,
lanes) is spread over S shards, each under a hash tag of its own, so that on Redis Cluster every
shard is one slot (every script touches one slot) and the shards of a team spread over the masters.
With S = 1 the only shard is the control plane's tag itself: the single-node layout, unchanged.
A few ACL key patterns (``acl_patterns``) cover a team. Scripts never build key names; they
receive them in KEYS from here.

Each log stream ``<base>log:<name>`` has beside it, in its hash tag: ``:head`` (its hash chain's
last hash), ``:archive`` (its archive record: how far it is archived in the object store, the
last segment's digest, a pending segment) and, for the control log, ``:archive:snapshot`` (the
control projection at an archived position). The team's archiver leases are
``<prefix>:{<team>}:archiver:control`` and ``...:archiver:tasks``.

Actor keys, ``<prefix>:{<tag>}:@<user>``, one per user in each hash tag, are never stored: a
script that records events writes (an empty SETRANGE) the actor key of the actor it records, and
only that user's ACL (and an admin's) may write it, so an event's recorded actor is the user the
server authenticated (see lua/actor.lua).
No team pattern covers them: the character after ``}:`` is ``@`` in an actor key and never in
another key.
"""

from __future__ import annotations

import binascii
import urllib.parse
import zlib
from typing import NamedTuple

from tilebox_core.domain.errors import InvalidInput
from tilebox_core.domain.identifiers import validate_slug
from tilebox_core.domain.tenancy import TeamPatterns

DEFAULT_PREFIX = "tilebox"
SLOTS = 16384  # Redis Cluster hash slots
MAX_SHARDS = 1024
_GLOB = str.maketrans({c: "\\" + c for c in "*?[]\\"})


def check_prefix(prefix: str) -> str:
    """A key prefix: it must not open a hash tag or look like a key separator."""
    if not prefix or any(c in prefix for c in "{}: "):
        raise InvalidInput(
            f"invalid key prefix {prefix!r}: use a word without braces, colons or spaces, "
            "e.g. 'tilebox'"
        )
    return prefix


def key_part(text: str) -> str:
    """``text`` as a part of a key name: percent-encoded (UTF-8) but for letters, digits and
    ``_ . - ~ : / @``. Task names may hold any character (braces, which would open a hash tag on
    Redis Cluster if a key began with one, spaces, newlines); the names of earlier versions, made
    of those characters only, give the same keys as before. Encoding ``%`` keeps it one-to-one."""
    return urllib.parse.quote(text, safe=":/@")


def key_slot(tag: str) -> int:
    """The Redis Cluster slot of a key whose hash tag is ``tag`` (CRC16/XMODEM, as the server
    computes it)."""
    return binascii.crc_hqx(tag.encode(), 0) % SLOTS


def shard_of(job_id: str, shards: int) -> int:
    """The shard a job lives in: a stable hash of its id (CRC32: the same in every process and
    version), so any reader finds a job from its id alone."""
    return zlib.crc32(job_id.encode()) % shards if shards > 1 else 0


def shard_tag(team: str, index: int, shards: int) -> str:
    """The hash tag of shard ``index`` of ``shards``: ``<team>`` when there is one shard (the
    single-node layout), else ``<team>/<index>``, suffixed ``.<k>`` with the smallest k that puts
    its slot in the index-th of ``shards`` equal slot ranges.

    That suffix is what spreads a team evenly over the masters: a cluster's slots are dealt in
    contiguous ranges (``--cluster create`` gives each of N masters 1/N of them), so shards laid
    out evenly over the slot space fall evenly on the masters, where plain ``<team>/<index>`` tags
    land on random slots and 16 of them would leave one of 3 masters with half of the team's work
    about one time in five. It depends only on (team, index, shards), never on the topology.
    """
    if shards == 1:
        return team
    low, high = index * SLOTS // shards, (index + 1) * SLOTS // shards
    tag, k = f"{team}/{index}", 0
    while not low <= key_slot(tag) < high:
        k += 1
        tag = f"{team}/{index}.{k}"
    return tag


def chain_head(log: str) -> str:
    """The key beside log stream ``log`` that holds the hash of its last entry (domain.chain),
    written by the script that appends it. The task scripts find it by this name among their
    KEYS (tasklib.lua): keep the two in step."""
    return f"{log}:head"


def expiring_of(log: str) -> str:
    """The expiring-jobs index (``TaskKeys.expiring``) of the shard whose task log is ``log``:
    the key TaskStore passes the task scripts before the chain head (tasklib.lua finds it by
    this name)."""
    return log.removesuffix("log:tasks") + "jobs:expiring"


def archive_record(log: str) -> str:
    """Hash beside log stream ``log`` (in its hash tag): its archive record (domain.archive's
    ``ArchiveRecord`` fields: the last archived position, the last segment's digest, the chain
    hash it ends with, totals, a segment being put), changed only by archive_record.lua (a
    compare-and-set on the last digest); the trim script trims the stream only up to the
    position it names. Under ``log:tasks*`` for a task log, which a runner may write."""
    return f"{log}:archive"


def archive_snapshot(log: str) -> str:
    """String beside the control log ``log``: the control-plane projection at its archived
    position (domain.projection's ``encode_state``), written with the record, so that a reader
    folds only the live log after it."""
    return f"{log}:archive:snapshot"


def parse_log(stream: str) -> tuple[str, str]:
    """(hash tag, log name) of a log stream key made by ``TaskKeys.log``."""
    tag = stream[stream.index("{") + 1 : stream.index("}")]
    return tag, stream[stream.index("}") + 1 :].removeprefix(":log:")


def actor_key(key: str, user: str) -> str:
    """The actor key of ``user`` in the hash tag of ``key`` (a key, or a tag's base
    ``<prefix>:{<tag>}:``): the last KEY of every script that records events, which records
    ``user`` as their actor (see lua/actor.lua; TaskStore adds it)."""
    return f"{key[: key.index('}:') + 2]}@{user}"


class TaskKeys:
    """The keys of one task-plane shard of a team (all under one hash tag): its task log, jobs,
    tasks and lanes. A job and every task of it live in the shard ``shard_of(job id)``."""

    def __init__(self, prefix: str, team: str, index: int = 0, shards: int = 1) -> None:
        self.prefix = prefix
        self.team = team
        self.index = index
        self.tag = shard_tag(team, index, shards)
        self.base = f"{prefix}:{{{self.tag}}}:"

    @property
    def slot(self) -> int:
        return key_slot(self.tag)

    # --- event logs ---------------------------------------------------------------------------

    def log(self, name: str) -> str:
        """An append-only event log stream: ``control`` (of the team) or ``tasks`` (of a shard)."""
        return f"{self.base}log:{name}"

    def actor(self, user: str) -> str:
        """The actor key of ``user`` in this hash tag (see the module's docstring)."""
        return actor_key(self.base, user)

    def log_head(self, name: str) -> str:
        """String: the hash chain's head of log ``name`` (see ``chain_head``)."""
        return chain_head(self.log(name))

    def dedup(self, name: str) -> str:
        """Hash: first event id of each batch appended lately -> stream id (idempotent appends),
        and ``~since``, when it was started (ms, server time); ``dedup_previous`` holds the
        generation before it (see append.lua)."""
        return f"{self.base}log:{name}:dedup"

    def dedup_previous(self, name: str) -> str:
        return f"{self.base}log:{name}:dedup:previous"

    # --- task plane ---------------------------------------------------------------------------------

    def job(self, job_id: str) -> str:
        """Hash (materialised by the task scripts): ``info``, the job's description as JSON
        (name, cluster, submitter, root task ids, ...); ``open``, its root tasks not yet complete
        (0: completed); ``failed``; ``computed`` and ``skipped``, results counted while it runs,
        which tell a running job from a queued one (a call that completes the job does not
        count its own); ``started``; ``cancelled``, the job's gate: "1" cancelled, "failed"
        held by a failure until a retry (see gate_of in tasklib.lua); ``retention``, how long
        it stays once ended (ms, written at submit: job_ended in tasklib.lua reads it); and
        ``progress:<label>:done|total``."""
        return f"{self.base}job:{job_id}"

    def job_tasks(self, job_id: str) -> str:
        """List of the ids of the tasks a job's tasks submitted, in submission order (its root
        tasks are named by its description; jobs submitted before that have them here too)."""
        return f"{self.base}job:{job_id}:tasks"

    @property
    def jobs(self) -> str:
        """Sorted set of the shard's job ids scored by when the server took them in (ms, its
        clock: submit.lua), which the archiver's trim point of the task log relies on."""
        return f"{self.base}jobs"

    @property
    def expiring(self) -> str:
        """Sorted set of the shard's ended jobs (completed, failed until retried, cancelled),
        scored by when they are to be removed (ms, server time): when they ended plus their
        retention. The one index a task script writes when it ends a job (``job_ended`` in
        tasklib.lua; a retry takes the job out); the sweep removes those due (remove.lua)."""
        return f"{self.base}jobs:expiring"

    def task(self, task_id: str) -> str:
        """Hash: one task's state, input, lane entry, owner and dependency bookkeeping."""
        return f"{self.base}task:{task_id}"

    def lane(self, cluster: str, name: str, major: int, minor: int) -> str:
        """Task queue stream of one (cluster, task name, version) in this shard; one consumer
        group ``runners``. (Earlier versions also kept a set of each cluster's lanes,
        ``lanes:<cluster>``, that nothing read; it is no longer written.)"""
        return f"{self.base}lane:{cluster}:v{major}.{minor}:{key_part(name)}"

    def job_logs(self, job_id: str) -> str:
        """Stream of what a job's tasks logged, an entry per line (``redis.tasklogs``): a key per
        job, in the job's shard, so that it goes with the job."""
        return f"{self.base}job:{job_id}:logs"


class LaneName(NamedTuple):
    """What a lane key names (see ``TaskKeys.lane``)."""

    tag: str  # the shard's hash tag
    cluster: str
    version: str  # vMAJOR.MINOR
    task: str


def parse_lane(key: str) -> LaneName:
    """The parts of a lane key made by ``TaskKeys.lane`` (a task name may contain colons)."""
    tag = key[key.index("{") + 1 : key.index("}")]
    rest = key[key.index("}") + 1 :].removeprefix(":lane:")
    cluster, version, task = rest.split(":", 2)
    return LaneName(tag, cluster, version, task)


class Keys(TaskKeys):
    """A team's control-plane keys; as ``TaskKeys``, its only shard when it has one (S = 1)."""

    def __init__(self, prefix: str, team: str) -> None:
        validate_slug(team, "team name")
        super().__init__(check_prefix(prefix), team)

    def checkpoint(self, name: str) -> str:
        return f"{self.base}checkpoint:{name}"

    @property
    def shards(self) -> str:
        """String: the team's number of task-plane shards, set once (SET NX) when it is first
        used and never changed (a job's shard is its id's hash modulo it)."""
        return f"{self.base}shards"

    def shard(self, index: int, shards: int) -> TaskKeys:
        """Shard ``index`` of the team's ``shards`` task-plane shards."""
        return TaskKeys(self.prefix, self.team, index, shards)

    def acl_patterns(self, user: str) -> TeamPatterns:
        """ACL key patterns of the team and of its user ``user`` (see ``domain.tenancy``).

        The team's keys are under its control tag ``{<team>}`` and its shard tags
        ``{<team>/...}``: team ``a``'s patterns match no key of team ``ab``, as the character after
        the team name must be ``}`` or ``/``, neither of which a slug contains. ``[^@]`` after
        ``}:`` leaves the actor keys out. A runner writes the task plane of every shard (on one
        shard, in the control tag): the task log, job hashes and lists, tasks and lanes, the
        expiring-jobs index (``jobs:*``), but not the jobs index (it submits no jobs: ZADD there
        is refused), which it may only ZREM from (``index``: the sweep removes expired jobs);
        and the runner registry, the sweep's lease and the number of shards (``fix_shards``);
        nothing else.
        """
        glob = self.prefix.translate(_GLOB)
        control, shards = f"{glob}:{{{self.team}}}:", f"{glob}:{{{self.team}/*}}:"
        own = "@" + user.translate(_GLOB)
        # what claiming and finishing write (not the jobs index: a runner submits no jobs)
        tasks = ["log:tasks*", "job:*", "task:*", "lane:*", "jobs:*"]  # the log, its chain head
        return TeamPatterns(
            team=[f"{control}[^@]*", f"{shards}[^@]*"],
            task_plane=[base + name for base in (control, shards) for name in tasks]
            + [
                f"{control}runner*",
                f"{control}sweep*",
                f"{control}shards",
                f"{control}archiver:tasks",
            ],
            actor=[control + own, shards + own],
            index=[control + "jobs", shards + "jobs"],
        )

    # --- the archive ------------------------------------------------------------------------------

    def archiver_lease(self, kind: str) -> str:
        """String: who archives the team's logs of ``kind`` (``control``, or ``tasks``: every
        shard's task log), with a TTL (SET NX PX, renewed by its holder; archive_lease.lua). Two
        leases, so that a runner (which may archive only the task logs) and a developer's
        ``tilebox archive run`` each hold what their role may do."""
        return f"{self.base}archiver:{kind}"

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

    # --- runners ----------------------------------------------------------------------------------

    @property
    def sweep_lease(self) -> str:
        """String: the runner that sweeps the team's expired jobs (``retention.Sweeper``), with
        a time to live: one runner of the team does it at a time."""
        return f"{self.base}sweep:lease"

    def runners(self, cluster: str) -> str:
        """Sorted set: runner id -> last heartbeat (ms) of the runners serving a cluster."""
        return f"{self.base}runners:{cluster}"

    def runner(self, runner_id: str) -> str:
        """Hash: a runner's host, cluster, loaded releases and status."""
        return f"{self.base}runner:{runner_id}"
