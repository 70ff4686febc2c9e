"""``Client``: the library's entry point for clusters, workflows, releases, deployments and history.

Each write reads the current projection, asks a pure rule in ``control`` for the events, and
appends them with the projection's version; a concurrent writer makes the append fail and the
whole decision is retried on fresh state, so decisions are never made on stale data.
"""

from __future__ import annotations

import datetime as dt
import getpass
import heapq
import os
import random
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import structlog

from . import control
from .artifact import MAX_ARTIFACT_BYTES, digest_of
from .connection import connect, resolve_url
from .errors import ArtifactError, ConcurrencyError, InvalidInput
from .events import ALL_EVENTS, Event, ReleaseTask
from .ids import new_id, utcnow
from .jobs import Jobs
from .keys import DEFAULT_PREFIX, Keys
from .liveness import RunnerInfo, RunnerRegistry
from .projection import Cluster, ControlState, Release, Workflow, fold
from .store import CONTROL, EventStore, Stored
from .task import Task
from .taskstore import TASKS, TaskStore

if TYPE_CHECKING:
    from tilebox_runner.registry import Runner
    from tilebox_runner.worker import TaskRunner

log = structlog.get_logger(__name__)

T = TypeVar("T")
KNOWN_TYPES = frozenset(cls.__name__ for cls in ALL_EVENTS)
MAX_ATTEMPTS = 200


def default_actor() -> str:
    actor = os.environ.get("TILEBOX_ACTOR")
    if actor:
        return actor
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"user:{user}@{socket.gethostname()}"


class PublishResult(NamedTuple):
    release: Release
    created: bool  # False: identical content was published before; that release is returned
    uploaded: bool  # False: the artifact was already stored (or nothing was published)


class Client:
    """A connection to one team's state. ``Client()`` uses ``TILEBOX_REDIS_URL`` or the embedded server."""

    def __init__(
        self,
        url: str | None = None,
        *,
        team: str | None = None,
        prefix: str | None = None,
        actor: str | None = None,
        home: Path | None = None,
        retries: int = 3,
    ) -> None:
        self.team = team or os.environ.get("TILEBOX_TEAM") or "default"
        keys = Keys(prefix or os.environ.get("TILEBOX_PREFIX") or DEFAULT_PREFIX, self.team)
        self.url = resolve_url(url, home)
        self.prefix = keys.prefix
        self.redis = connect(self.url, retries=retries)
        self.store = EventStore(self.redis, keys)
        self.tasks = TaskStore(self.store)
        self.actor = actor or default_actor()
        self._state = ControlState()

    def close(self) -> None:
        self.redis.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    def runner(
        self,
        cluster: str | None = None,
        tasks: Iterable[type[Task]] | Runner = (),
        **options: Any,
    ) -> TaskRunner:
        """A direct runner executing ``tasks`` from ``cluster`` (see ``TaskRunner`` options)."""
        from tilebox_runner.worker import TaskRunner

        return TaskRunner(self, cluster, tasks, **options)

    # --- state and decisions --------------------------------------------------------------------

    def state(self) -> ControlState:
        """The control-plane projection, caught up incrementally from the last position seen."""
        return fold(self.store.replay(CONTROL, after=self._state.position), self._state)

    def cached_state(self) -> ControlState:
        """The projection as last caught up, without reading the log (may be behind)."""
        return self._state

    def watch(self, block_ms: int) -> list[Stored]:
        """Block up to ``block_ms`` for new control-plane events and fold them into the state."""
        new = self.store.wait(CONTROL, self._state.position, block_ms)
        fold(new, self._state)
        return new

    def origin(self) -> control.Origin:
        return control.Origin(self.team, self.actor, utcnow(), new_id)

    def decide(
        self,
        rule: Callable[[ControlState, control.Origin], tuple[T, list[Event]]],
        before_append: Callable[[T], None] | None = None,
    ) -> T:
        """Run ``rule`` on fresh state and append its events; retry on a concurrent append."""
        for attempt in range(MAX_ATTEMPTS):
            state = self.state()
            result, events = rule(state, self.origin())
            if not events:
                return result
            if before_append is not None:
                before_append(result)
            try:
                self.store.append(
                    CONTROL, events, state.version, projection=control.deployment_ops(events)
                )
            except ConcurrencyError:
                # Another writer got in first: back off a little (jittered) and decide again.
                time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
                continue
            self.state()
            return result
        raise ConcurrencyError(f"gave up after {MAX_ATTEMPTS} concurrent-write retries")


class Clusters:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, name: str, slug: str | None = None) -> Cluster:
        def rule(state: ControlState, origin: control.Origin) -> tuple[str, list[Event]]:
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
        return RunnerRegistry(self._client.store).live(slug)

    def delete(self, slug: str) -> None:
        self._client.decide(lambda state, origin: (None, control.delete_cluster(state, origin, slug)))


class Workflows:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, name: str, slug: str | None = None) -> Workflow:
        def rule(state: ControlState, origin: control.Origin) -> tuple[str, list[Event]]:
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

        def rule(state: ControlState, origin: control.Origin) -> tuple[str, list[Event]]:
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

        def rule(state: ControlState, origin: control.Origin) -> tuple[control.DeployPlan, list]:
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
        def rule(state: ControlState, origin: control.Origin) -> tuple[control.DeployPlan, list]:
            plan = control.undeploy(
                state, origin, workflow=workflow, clusters=clusters, target=target
            )
            return plan, [] if dry_run else plan.events

        return self._client.decide(rule)


class Deployments:
    """cluster -> workflow -> release, now (the projection) or at any past time (a replay)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def current(self) -> dict[str, dict[str, str]]:
        return self._client.state().mapping()

    def as_of(self, when: dt.datetime) -> dict[str, dict[str, str]]:
        return self.state_as_of(when).mapping()

    def state_as_of(self, when: dt.datetime) -> ControlState:
        return fold(self._client.store.replay(CONTROL, until=str(position_ms(when))))

    def materialised(self) -> dict[str, dict[str, str]]:
        """The hash the append script maintains; equal to ``current()`` by construction."""
        result: dict[str, dict[str, str]] = {}
        for (cluster, workflow), release in sorted(self._client.store.deployments().items()):
            result.setdefault(cluster, {})[workflow] = release
        return result


class History:
    """The auditor's view: every event, in log order, with time and actor."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(
        self,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        types: Sequence[str] = (),
    ) -> Iterator[Stored]:
        after = f"{position_ms(since) - 1}-18446744073709551615" if since else "0-0"
        end = str(position_ms(until)) if until else "+"
        wanted = set(types)
        if wanted - KNOWN_TYPES:
            unknown = ", ".join(sorted(wanted - KNOWN_TYPES))
            raise InvalidInput(
                f"unknown event type {unknown}; known: {', '.join(sorted(KNOWN_TYPES))}"
            )
        logs = [self._client.store.replay(name, after=after, until=end) for name in (CONTROL, TASKS)]
        for stored in heapq.merge(*logs, key=lambda s: _order(s.position)):
            if not wanted or stored.event.type in wanted:
                yield stored


def _order(position: str) -> tuple[int, int]:
    ms, seq = position.split("-", 1)
    return int(ms), int(seq)


def position_ms(when: dt.datetime) -> int:
    """A datetime as a stream-id millisecond timestamp (naive datetimes are taken as UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp() * 1000)


def position_time(position: str) -> dt.datetime:
    """The server time at which the event at ``position`` was appended."""
    ms = int(position.split("-", 1)[0])
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)
