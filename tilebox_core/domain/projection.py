"""The control-plane projection: clusters, workflows, releases and deployments, folded from events.

``apply`` is the fold step. It mutates the state it is given (copying dicts per event would make a
replay of a million events needlessly slow) and returns it; rebuilding from the first event and
catching up incrementally give the same state, which the property tests check.
"""

from __future__ import annotations

import datetime as dt
import gc
from typing import Any

import msgspec

from .events import (
    ClusterCreated,
    ClusterDeleted,
    DeploymentRemoved,
    DeploymentSet,
    Event,
    ReleasePublished,
    ReleaseTask,
    RetentionSet,
    UnknownEvent,
    WorkflowCreated,
)

DEFAULT_CLUSTER = "default"
DEFAULT_RETENTION_SECONDS = 7 * 24 * 3600  # of a team that never set one (RetentionSet)


class Cluster(msgspec.Struct, frozen=True):
    slug: str
    name: str
    created_at: dt.datetime | None = None  # None: the built-in default cluster
    created_by: str | None = None
    # The id of its ClusterCreated event: a cluster deleted and created again under the same slug
    # is another cluster (a runner started on the first one does not serve the second).
    id: str | None = None


ClusterLike = Cluster | str
"""A cluster, or its slug: what the API takes wherever it names a cluster (Tilebox's
``ClusterSlugLike``)."""


def cluster_slug(cluster: ClusterLike) -> str:
    return cluster.slug if isinstance(cluster, Cluster) else cluster


class Workflow(msgspec.Struct, frozen=True):
    slug: str
    name: str
    created_at: dt.datetime
    created_by: str


class Release(msgspec.Struct, frozen=True):
    id: str
    workflow: str
    digest: str
    size: int
    tasks: list[ReleaseTask]
    runner: str | None
    command: list[str] | None
    fingerprint: str
    published_at: dt.datetime
    published_by: str
    forced: bool = False


class Deployment(msgspec.Struct, frozen=True):
    cluster: str
    workflow: str
    release_id: str
    deployed_at: dt.datetime
    deployed_by: str
    requested: str


class ControlState:
    """Current control-plane state of one team. Every team has the ``default`` cluster."""

    def __init__(self) -> None:
        # The position of the last event folded: what an append expects the log's last entry to be.
        self.position = "0-0"
        self.clusters: dict[str, Cluster] = {
            DEFAULT_CLUSTER: Cluster(DEFAULT_CLUSTER, "Default"),
        }
        self.workflows: dict[str, Workflow] = {}
        self.releases: dict[str, Release] = {}  # in publish order
        self.by_fingerprint: dict[tuple[str, str], str] = {}
        self.deployments: dict[str, dict[str, Deployment]] = {}  # cluster -> workflow -> deployment
        self.retention_seconds = DEFAULT_RETENTION_SECONDS  # of the jobs submitted from now on

    def releases_of(self, workflow: str) -> list[Release]:
        return [r for r in self.releases.values() if r.workflow == workflow]

    def latest_release(self, workflow: str) -> Release | None:
        releases = self.releases_of(workflow)
        return releases[-1] if releases else None

    def deployed_release(self, cluster: str, workflow: str) -> str | None:
        deployment = self.deployments.get(cluster, {}).get(workflow)
        return deployment.release_id if deployment else None

    def clusters_of_release(self, release_id: str) -> list[str]:
        return sorted(
            cluster
            for cluster, by_workflow in self.deployments.items()
            for d in by_workflow.values()
            if d.release_id == release_id
        )

    def mapping(self) -> dict[str, dict[str, str]]:
        """cluster -> workflow -> release id, for display and comparison."""
        return {
            cluster: {w: d.release_id for w, d in sorted(by_workflow.items())}
            for cluster, by_workflow in sorted(self.deployments.items())
            if by_workflow
        }

    def snapshot(self) -> dict[str, Any]:
        """Everything but the position, as plain data (used to compare two states)."""
        return msgspec.to_builtins(  # type: ignore[no-any-return]
            {
                "clusters": self.clusters,
                "workflows": self.workflows,
                "releases": self.releases,
                "deployments": self.deployments,
                "retention_seconds": self.retention_seconds,
            }
        )


def apply(state: ControlState, event: Event | UnknownEvent, position: str = "") -> ControlState:
    """Fold one event into ``state``. Unknown and task-plane events only advance the position."""
    if position:
        state.position = position
    if isinstance(event, DeploymentSet):
        # Nearly every event of a long log, so handled before ``match``: its class patterns add
        # ~0.1 us per event (~0.1 s to a million-event replay).
        by_workflow = state.deployments.get(event.cluster)
        if by_workflow is None:
            by_workflow = state.deployments[event.cluster] = {}
        by_workflow[event.workflow] = Deployment(
            event.cluster, event.workflow, event.release_id, event.at, event.actor, event.requested
        )
        return state
    match event:
        case DeploymentRemoved():
            state.deployments.get(event.cluster, {}).pop(event.workflow, None)
        case ReleasePublished():
            state.releases[event.release_id] = Release(
                event.release_id, event.workflow, event.digest, event.size, event.tasks,
                event.runner, event.command, event.fingerprint, event.at, event.actor, event.forced,
            )  # fmt: skip
            state.by_fingerprint[(event.workflow, event.fingerprint)] = event.release_id
        case ClusterCreated():
            state.clusters[event.slug] = Cluster(
                event.slug, event.name, event.at, event.actor, event.id
            )
        case ClusterDeleted():
            state.clusters.pop(event.slug, None)
            state.deployments.pop(event.slug, None)
        case WorkflowCreated():
            state.workflows[event.slug] = Workflow(event.slug, event.name, event.at, event.actor)
        case RetentionSet():
            state.retention_seconds = event.seconds
    return state


def fold(events: Any, state: ControlState | None = None) -> ControlState:
    """Fold an iterable of ``Stored`` (position, event) pairs into ``state`` (or a new one)."""
    state = state if state is not None else ControlState()
    # A replay allocates millions of short-lived objects and creates no reference cycles; with the
    # cyclic collector running, they trigger full collections over the growing projection
    # (10-20% of a million-event replay, measured with benchmarks/store_bench.py).
    collecting = gc.isenabled()
    gc.disable()
    try:
        for position, event in events:
            apply(state, event, position)
    finally:
        if collecting:
            gc.enable()
    return state


class _Snapshot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A ``ControlState`` as stored (the control log's archive keeps one at its trim point)."""

    position: str
    clusters: list[Cluster]
    workflows: list[Workflow]
    releases: list[Release]  # in publish order
    by_fingerprint: list[tuple[str, str, str]]  # (workflow, fingerprint, release id)
    deployments: list[tuple[str, list[Deployment]]]  # by cluster, as folded


_snapshot_decoder = msgspec.msgpack.Decoder(_Snapshot)


def encode_state(state: ControlState) -> bytes:
    """``state`` as bytes, for ``decode_state`` to give it back: the projection up to its
    position, so that a reader folds only what comes after."""
    return msgspec.msgpack.encode(
        _Snapshot(
            state.position, list(state.clusters.values()), list(state.workflows.values()),
            list(state.releases.values()),
            [(w, f, r) for (w, f), r in state.by_fingerprint.items()],
            [(c, list(by_workflow.values())) for c, by_workflow in state.deployments.items()],
        )
    )  # fmt: skip


def decode_state(data: bytes) -> ControlState:
    snapshot = _snapshot_decoder.decode(data)
    state = ControlState()
    state.position = snapshot.position
    state.clusters = {c.slug: c for c in snapshot.clusters}
    state.workflows = {w.slug: w for w in snapshot.workflows}
    state.releases = {r.id: r for r in snapshot.releases}
    state.by_fingerprint = {(w, f): r for w, f, r in snapshot.by_fingerprint}
    state.deployments = {c: {d.workflow: d for d in ds} for c, ds in snapshot.deployments}
    return state
