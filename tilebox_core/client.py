"""``Client``: the library's entry point for clusters, workflows, releases, deployments, jobs,
runners and history. Every sub-API works on the client's ``Session``."""

from __future__ import annotations

import collections
import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

from tilebox_core.build.artifact import MAX_ARTIFACT_BYTES, artifact_files, digest_of, verify_digest
from tilebox_core.domain import control
from tilebox_core.domain.archive import NONE, order
from tilebox_core.domain.chain import Audit, Break, BreakKind, StreamAudit, Verification
from tilebox_core.domain.errors import ArtifactError, InvalidInput
from tilebox_core.domain.events import ALL_EVENTS, Event, Origin, ReleaseTask
from tilebox_core.domain.projection import (
    Cluster,
    ClusterLike,
    ControlState,
    Release,
    Workflow,
    cluster_slug,
    fold,
)
from tilebox_core.domain.runners import RunnerInfo
from tilebox_core.domain.segments import verify_segments
from tilebox_core.execution.registry import Runner
from tilebox_core.execution.worker import TaskRunner
from tilebox_core.redis.eventstore import CONTROL
from tilebox_core.redis.eventstore import Stored as Stored  # re-exported: what History yields

from .archiver import team_logs
from .cache import JobCache
from .jobs import Jobs
from .session import Session
from .task import RunnerContext, Task
from .teams import Teams

KNOWN_TYPES = frozenset(cls.__name__ for cls in ALL_EVENTS)
FOLLOW_POLL_MS = 200  # History.follow over several shards: how often it looks at their logs


class PublishResult(NamedTuple):
    release: Release
    created: bool  # False: identical content was published before; that release is returned
    uploaded: bool  # False: the artifact was already stored (or nothing was published)


class Client(Session):
    """The library's entry point: a team's session plus its sub-APIs.

    ``Client()`` uses ``TILEBOX_REDIS_URL`` or the embedded server.
    """

    # --- sub-APIs -------------------------------------------------------------------------------

    def clusters(self) -> Clusters:
        return Clusters(self)

    def workflows(self) -> Workflows:
        return Workflows(self)

    def deployments(self) -> Deployments:
        return Deployments(self)

    def events(self) -> History:
        return History(self)

    def jobs(self) -> Jobs:
        return Jobs(self)

    def teams(self) -> Teams:
        """The server's teams and their users (needs an administrator's credential)."""
        return Teams(self)

    def runner(
        self,
        cluster: ClusterLike | None = None,
        tasks: Iterable[type[Task]] | Runner | None = None,
        cache: JobCache | None = None,
        context: type[RunnerContext] | None = None,
        runner: Runner | None = None,
        **options: Any,
    ) -> TaskRunner:
        """A direct runner executing ``tasks`` from ``cluster`` (default: the client's), as
        Tilebox's ``client.runner``: with ``cache``, the job cache its tasks share, and
        ``context``, the ``RunnerContext`` class of its one runner context; or all three from a
        ``runner`` (``Runner``). Other options: see ``TaskRunner``."""
        if runner is not None:
            if tasks is not None or cache is not None or context is not None:
                raise InvalidInput(
                    "client.runner takes either a runner or tasks, cache and context; "
                    "pass the cache and context to the Runner"
                )
            tasks = runner
        slug = cluster_slug(cluster) if cluster is not None else None
        return TaskRunner(self, slug, tasks or (), cache=cache, context=context, **options)


class ClusterDeletion(NamedTuple):
    slug: str
    deployments: dict[str, str]  # workflow -> release id, removed with the cluster
    unfinished_jobs: int  # queued or running jobs on it; queued ones will not run

    def summary(self) -> str:
        return control.cluster_contents(self.deployments, self.unfinished_jobs)


class Clusters:
    def __init__(self, client: Session) -> None:
        self._client = client

    def create(self, name: str, slug: str | None = None) -> Cluster:
        def rule(state: ControlState, origin: Origin) -> tuple[str, list[Event]]:
            events = control.create_cluster(state, origin, name, slug)
            return events[0].slug, events  # type: ignore[attr-defined]

        return self.find(self._client.decide(rule))

    def all(self) -> list[Cluster]:
        return sorted(self._client.state().clusters.values(), key=lambda c: c.slug)

    def find(self, slug: str) -> Cluster:
        state = self._client.state()
        control.require_cluster(state, slug)
        return state.clusters[slug]

    def runners(self, slug: str) -> list[RunnerInfo]:
        """The live release runners serving ``slug`` and the releases each has loaded."""
        control.require_cluster(self._client.state(), slug)
        return self._client.runners.live(slug)

    def delete(self, slug: str, *, force: bool = False, dry_run: bool = False) -> ClusterDeletion:
        """Delete cluster ``slug``; one with deployments or unfinished jobs only with ``force``.

        Its deployments are removed with it; its jobs stay as they are (queued ones will not run).
        ``dry_run`` checks and reports the same without deleting.
        """
        known = slug in self._client.state().clusters  # else the rule says it is unknown
        unfinished = Jobs(self._client).unfinished_on(slug) if known else 0

        def rule(state: ControlState, origin: Origin) -> tuple[ClusterDeletion, list[Event]]:
            events = control.delete_cluster(
                state, origin, slug, force=force, unfinished_jobs=unfinished
            )
            deletion = ClusterDeletion(slug, control.deployed_on(state, slug), unfinished)
            return deletion, [] if dry_run else events

        return self._client.decide(rule)


class Workflows:
    def __init__(self, client: Session) -> None:
        self._client = client

    def create(self, name: str, slug: str | None = None) -> Workflow:
        def rule(state: ControlState, origin: Origin) -> tuple[str, list[Event]]:
            events = control.create_workflow(state, origin, name, slug)
            return events[0].slug, events  # type: ignore[attr-defined]

        return self.find(self._client.decide(rule))

    def all(self) -> list[Workflow]:
        return sorted(self._client.state().workflows.values(), key=lambda w: w.slug)

    def find(self, slug: str) -> Workflow:
        state = self._client.state()
        control.require_workflow(state, slug)
        return state.workflows[slug]

    def releases(self, slug: str) -> list[Release]:
        state = self._client.state()
        control.require_workflow(state, slug)
        return state.releases_of(slug)

    def release(self, release_id: str) -> Release:
        return control.require_release(self._client.state(), release_id)

    def release_files(self, release_id: str) -> list[tuple[str, int]]:
        """The files of a release's artifact (path, size), from the team's artifact store."""
        release = self.release(release_id)
        data = self._client.store.get_artifact(release.digest)
        verify_digest(data, release.digest)
        return artifact_files(data)

    def publish_release(
        self,
        workflow: str,
        artifact: bytes,
        tasks: Sequence[ReleaseTask],
        *,
        runner: str | None = None,
        command: Sequence[str] | None = None,
        force: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> PublishResult:
        """Publish ``artifact`` as a release of ``workflow``; identical content is not re-published.

        The artifact is uploaded (only if its digest is not stored yet) after the rules accept the
        release and before its event is appended, so a release never points at a missing artifact.
        """
        if len(artifact) > MAX_ARTIFACT_BYTES:
            raise ArtifactError(
                f"artifact is {len(artifact):,} bytes, over the {MAX_ARTIFACT_BYTES:,}-byte limit: "
                "exclude data files in [build] of tilebox.workflow.toml"
            )
        digest = digest_of(artifact)
        command = list(command) if command is not None else None
        fingerprint = control.release_fingerprint(workflow, digest, runner, command, tasks)
        uploaded = False

        def rule(state: ControlState, origin: Origin) -> tuple[str, list[Event]]:
            return control.publish_release(
                state, origin, workflow=workflow, digest=digest, size=len(artifact),
                tasks=list(tasks), runner=runner, command=command, fingerprint=fingerprint,
                force=force,
            )  # fmt: skip

        def upload(_: str) -> None:
            nonlocal uploaded
            uploaded = self._client.store.put_artifact(digest, artifact, progress) or uploaded

        before = set(self._client.state().releases)
        release_id = self._client.decide(rule, before_append=upload)
        return PublishResult(self.release(release_id), release_id not in before, uploaded)

    def deploy_release(
        self,
        release_id: str | None = None,
        *,
        latest_of: str | None = None,
        clusters: Sequence[str] = (),
        target: str | None = None,
        workflow: str | None = None,
        force: bool = False,
        dry_run: bool = False,
    ) -> control.DeployPlan:
        """Make a release (by id, or the latest of ``latest_of``) active on ``clusters``."""

        def rule(state: ControlState, origin: Origin) -> tuple[control.DeployPlan, list[Event]]:
            plan = control.deploy(
                state, origin, clusters=clusters, release_id=release_id, latest_of=latest_of,
                workflow=workflow, target=target, force=force,
            )  # fmt: skip
            return plan, [] if dry_run else plan.events

        return self._client.decide(rule)

    def undeploy_release(
        self,
        workflow: str,
        *,
        clusters: Sequence[str] = (),
        target: str | None = None,
        dry_run: bool = False,
    ) -> control.DeployPlan:
        def rule(state: ControlState, origin: Origin) -> tuple[control.DeployPlan, list[Event]]:
            plan = control.undeploy(
                state, origin, workflow=workflow, clusters=clusters, target=target
            )
            return plan, [] if dry_run else plan.events

        return self._client.decide(rule)


class Deployments:
    """cluster -> workflow -> release, now (the projection) or at any past time (a replay)."""

    def __init__(self, client: Session) -> None:
        self._client = client

    def current(self) -> dict[str, dict[str, str]]:
        return self._client.state().mapping()

    def as_of(self, when: dt.datetime) -> dict[str, dict[str, str]]:
        return self.state_as_of(when).mapping()

    def state_as_of(self, when: dt.datetime) -> ControlState:
        """The projection at ``when``: from the snapshot archived with the control log if it is
        older, else folded from the archive's beginning."""
        until = str(position_ms(when))
        snapshot = self._client.control_snapshot()
        if snapshot is not None and order(snapshot.position) <= order(until):
            return fold(self._client.store.replay(CONTROL, snapshot.position, until), snapshot)
        return fold(self._client.store.replay(CONTROL, until=until))

    def materialised(self) -> dict[str, dict[str, str]]:
        """The hash the append script maintains; equal to ``current()`` by construction."""
        result: dict[str, dict[str, str]] = {}
        for (cluster, workflow), release in sorted(self._client.store.deployments().items()):
            result.setdefault(cluster, {})[workflow] = release
        return result


class History:
    """The auditor's view: every event, in log order, with time and actor."""

    def __init__(self, client: Session) -> None:
        self._client = client

    def list(
        self,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        types: Sequence[str] = (),
        *,
        job: str | None = None,
        actor: str | None = None,
        limit: int | None = None,
    ) -> Iterator[Stored]:
        """Events (of ``types``, of ``job``, by ``actor``) in log order; with ``limit`` only the
        last ``limit`` of them."""
        wanted = _matcher(types, job, actor)
        matching = (s for _, s in self._merged(since, until) if wanted(s))
        return iter(collections.deque(matching, maxlen=limit)) if limit is not None else matching

    def follow(
        self,
        since: dt.datetime | None = None,
        types: Sequence[str] = (),
        *,
        job: str | None = None,
        actor: str | None = None,
        limit: int | None = None,
        block_ms: int = 1000,
    ) -> Iterator[Stored]:
        """``list``, then each matching event as it is appended (a blocking read on the logs);
        never ends: the caller stops iterating.

        A team with one task-plane shard has its logs in one slot: one blocking XREAD waits on
        all of them. With several (on a cluster) a blocking read cannot span them: it waits on
        the control log for at most FOLLOW_POLL_MS, then looks at every shard's log."""
        wanted = _matcher(types, job, actor)
        start = _after(since)
        after: dict[str, str] = dict.fromkeys(self._streams(), start)
        past: collections.deque[Stored] = collections.deque(maxlen=limit)
        for log, stored in self._merged(since, None):
            after[log] = stored.position
            if wanted(stored):
                past.append(stored)
        yield from past
        store = self._client.store
        control, *tasks = after
        while True:
            if len(tasks) == 1:
                found = store.wait_streams(after, block_ms)
            else:
                found = store.wait_streams({control: after[control]}, min(block_ms, FOLLOW_POLL_MS))
                for log in tasks:
                    found += store.wait_streams({log: after[log]}, None)
            for log, stored in sorted(found, key=lambda pair: _order(pair[1].position)):
                after[log] = stored.position
                if wanted(stored):
                    yield stored

    def verify(self, since: dt.datetime | None = None) -> Audit:
        """Recompute the hash chain of every log stream of the team (the control log and each
        shard's task log; domain.chain), across its archive segments (domain.segments) and on
        into its live entries: what ``tilebox audit verify`` reports. ``since``: only the
        entries appended at or after it, the chain taken up from the entry (or segment) before
        (which is not itself checked). Entries appended while it runs are left for the next run."""
        after = _after(since)
        return Audit(
            [self._verify(log, stream, after) for _, log, stream in team_logs(self._client)]
        )

    def _verify(self, log: str, stream: str, after: str) -> StreamAudit:
        store, archive = self._client.store, self._client.archive
        record = self._client.archive_log.record(stream)
        if order(after) >= order(record.position):  # nothing archived, or all of it before
            anchor, result = store.verify_stream(stream, after, record.chain or None)
            if anchor is None and record.position != NONE and after != NONE:
                anchor = record.position  # taken up from the archive's end
            return StreamAudit(log, stream, anchor, result)
        names = [
            n for n in archive.fresh_listing(store.archive_folder(stream))
            # a segment put but not recorded yet is not in the chain yet
            if not (n.digest == record.pending and order(n.first) > order(record.position))
        ]  # fmt: skip
        index = next((i for i, n in enumerate(names) if order(n.last) > order(after)), len(names))
        anchor = names[index - 1].last if index and after != NONE else None
        chosen = names[index:] if after != NONE else names
        paths = {n.digest: n.path for n in chosen}
        check = verify_segments(
            ((n.digest, archive.get(n.path) or b"") for n in chosen),
            names[index - 1].digest if anchor is not None else None,
            anchored=anchor is not None,
        )  # fmt: skip
        problem, at = check.problem, check.at
        if problem is None and check.last != record.digest:
            at = check.last or record.digest
            problem = (
                f"the archive record names segment {record.digest} as the last one archived (up "
                f"to {record.position}), the archive's last is {check.last or 'none'}: segments "
                "were deleted, or added"
            )
        elif problem is None and (check.chain_end or "") != record.chain:
            at, problem = (
                check.last,
                (
                    f"the archive's last segment ends its chain with {check.chain_end}, the archive "
                    f"record with {record.chain}: the record was changed"
                ),
            )
        if problem is not None:
            path = paths.get(at or "", at or "")
            where = path if check.position is None else f"{check.position} in segment {path}"
            broken = Break(BreakKind.SEGMENT, where, check.segments + 1, problem)
            result = Verification(check.entries, check.events, 0, None, "", broken)
            return StreamAudit(log, stream, anchor, result, check.segments)
        _, live = store.verify_stream(stream, record.position, record.chain or None, anchored=False)
        result = live._replace(
            entries=check.entries + live.entries, events=check.events + live.events
        )
        return StreamAudit(log, stream, anchor, result, check.segments)

    def is_empty(self) -> bool:
        """True for a team nothing was ever written to (a mistyped ``--team``, say)."""
        store, records = self._client.store, self._client.archive_log
        return all(
            store.last_position_of(log) == NONE and records.record(log).position == NONE
            for log in self._streams()
        )

    def _merged(
        self, since: dt.datetime | None, until: dt.datetime | None
    ) -> Iterator[tuple[str, Stored]]:
        """The control log and every shard's task log, merged in time order (see
        ``EventStore.replay_merged``)."""
        after = _after(since)
        end = str(position_ms(until)) if until else "+"
        return self._client.store.replay_merged(self._streams(), after, end)

    def _streams(self) -> Sequence[str]:
        """The team's log streams: the control log, then the task log of each shard."""
        return [self._client.store.keys.log(CONTROL), *self._client.tasks.log_streams()]


def _after(since: dt.datetime | None) -> str:
    return f"{position_ms(since) - 1}-18446744073709551615" if since else "0-0"


def _matcher(types: Sequence[str], job: str | None, actor: str | None) -> Callable[[Stored], bool]:
    wanted = set(types)
    if wanted - KNOWN_TYPES:
        unknown = ", ".join(sorted(wanted - KNOWN_TYPES))
        raise InvalidInput(f"unknown event type {unknown}; known: {', '.join(sorted(KNOWN_TYPES))}")

    def matches(stored: Stored) -> bool:
        event = stored.event
        return (
            (not wanted or event.type in wanted)
            and (job is None or getattr(event, "job_id", None) == job)
            and (actor is None or event.actor == actor)
        )

    return matches


def _order(position: str) -> tuple[int, int]:
    ms, seq = position.split("-", 1)
    return int(ms), int(seq)


def position_ms(when: dt.datetime) -> int:
    """A datetime as a stream-id millisecond timestamp (naive datetimes are taken as UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def position_time(position: str) -> dt.datetime:
    """The server time at which the event at ``position`` was appended."""
    ms = int(position.split("-", 1)[0])
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
