"""Control-plane decisions: pure functions from (state, request, origin) to the events to append.

No I/O here. The clock and new ids arrive in ``Origin``, so every rule is testable with plain values.
A decision that changes nothing returns no events; a refused one raises from ``tilebox_core.domain.errors``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from .compat import release_incompatibilities
from .entrypoint import check_entrypoint
from .errors import Conflict, Incompatible, InvalidInput, NotFound
from .events import (
    ClusterCreated,
    ClusterDeleted,
    DeploymentRemoved,
    DeploymentSet,
    Event,
    Origin,
    ReleasePublished,
    ReleaseTask,
    WorkflowCreated,
)
from .identifiers import check_identifiers, slugify, validate_name, validate_slug
from .projection import DEFAULT_CLUSTER, ControlState, Release

LATEST = "latest"


@dataclass(frozen=True)
class DeployChange:
    cluster: str
    workflow: str
    previous_release_id: str | None
    release_id: str | None  # None when undeployed
    changed: bool


@dataclass(frozen=True)
class DeployPlan:
    release: Release | None
    changes: list[DeployChange]
    events: list[Event] = field(default_factory=list)
    incompatibilities: list[str] = field(default_factory=list)


# --- clusters -------------------------------------------------------------------------------------


def create_cluster(
    state: ControlState, origin: Origin, name: str, slug: str | None = None
) -> list[Event]:
    validate_name(name, "cluster name")
    slug = validate_slug(slug, "cluster slug") if slug else slugify(name)
    if slug in state.clusters:
        raise Conflict(f"cluster {slug!r} already exists; choose another name or pass --slug")
    return [ClusterCreated(**origin.stamp(), slug=slug, name=name)]


def delete_cluster(
    state: ControlState, origin: Origin, slug: str, *, force: bool = False, unfinished_jobs: int = 0
) -> list[Event]:
    """The events deleting cluster ``slug`` and its deployments.

    A cluster that still has deployments or unfinished (queued or running) jobs is only deleted
    with ``force``: its runners stop serving it and its queued jobs will not run.
    """
    if slug == DEFAULT_CLUSTER:
        raise Conflict("the default cluster cannot be deleted; every team keeps one")
    require_cluster(state, slug)
    deployed = deployed_on(state, slug)
    if (deployed or unfinished_jobs) and not force:
        raise Conflict(
            f"cluster {slug!r} {cluster_contents(deployed, unfinished_jobs)}; pass --force to "
            "delete it with them (its runners stop, its queued jobs will not run)"
        )
    removed: list[Event] = [
        DeploymentRemoved(
            **origin.stamp(), workflow=d.workflow, cluster=slug, release_id=d.release_id
        )
        for d in state.deployments.get(slug, {}).values()
    ]
    return [*removed, ClusterDeleted(**origin.stamp(), slug=slug)]


def deployed_on(state: ControlState, slug: str) -> dict[str, str]:
    """workflow -> release id deployed on cluster ``slug``."""
    return {w: d.release_id for w, d in sorted(state.deployments.get(slug, {}).items())}


def cluster_contents(deployed: dict[str, str], unfinished_jobs: int) -> str:
    """What deleting a cluster removes, as "has deployments (w: r) and N unfinished jobs"."""
    parts = []
    if deployed:
        listed = ", ".join(f"{w}: {r}" for w, r in deployed.items())
        parts.append(f"deployment{'s' if len(deployed) != 1 else ''} ({listed})")
    if unfinished_jobs:
        plural = "s" if unfinished_jobs != 1 else ""
        parts.append(f"{unfinished_jobs} unfinished job{plural} (queued or running)")
    return "has " + " and ".join(parts) if parts else "is empty"


def require_cluster(state: ControlState, slug: str) -> None:
    if slug not in state.clusters:
        known = ", ".join(sorted(state.clusters))
        raise NotFound(
            f"unknown cluster {slug!r} (known: {known}); create it with 'tilebox cluster create'"
        )


# --- workflows and releases -------------------------------------------------------------------------


def create_workflow(
    state: ControlState, origin: Origin, name: str, slug: str | None = None
) -> list[Event]:
    validate_name(name, "workflow name")
    slug = validate_slug(slug, "workflow slug") if slug else slugify(name)
    if slug in state.workflows:
        raise Conflict(f"workflow {slug!r} already exists; choose another name or pass --slug")
    return [WorkflowCreated(**origin.stamp(), slug=slug, name=name)]


def require_workflow(state: ControlState, slug: str) -> None:
    if slug not in state.workflows:
        raise NotFound(
            f"unknown workflow {slug!r}; create it with 'tilebox workflow create' "
            "or fix [workflow] slug in tilebox.workflow.toml"
        )


def require_release(state: ControlState, release_id: str) -> Release:
    release = state.releases.get(release_id)
    if release is None:
        raise NotFound(
            f"unknown release {release_id!r}; list releases with 'tilebox workflow releases'"
        )
    return release


def publish_release(
    state: ControlState,
    origin: Origin,
    *,
    workflow: str,
    digest: str,
    size: int,
    tasks: Sequence[ReleaseTask],
    runner: str | None,
    command: list[str] | None,
    fingerprint: str,
    force: bool = False,
) -> tuple[str, list[Event]]:
    """The release id for this content and the events to append (none if it already exists).

    Identical content (same fingerprint) returns the existing release, so publishing is idempotent.
    A task whose (name, major) is deployed anywhere must keep a compatible input schema, unless
    ``force`` (which is recorded).
    """
    require_workflow(state, workflow)
    check_entrypoint(runner, command)
    check_identifiers((task.name, task.version) for task in tasks)
    existing = state.by_fingerprint.get((workflow, fingerprint))
    if existing is not None:
        return existing, []
    deployed = [
        task
        for cluster in state.deployments.values()
        if (d := cluster.get(workflow)) is not None
        for task in state.releases[d.release_id].tasks
    ]
    problems = release_incompatibilities(deployed, list(tasks))
    if problems and not force:
        raise Incompatible(_incompatible_message(problems), problems)
    release_id = origin.ids()
    event = ReleasePublished(
        **origin.stamp(), release_id=release_id, workflow=workflow, digest=digest, size=size,
        tasks=list(tasks), runner=runner, command=command, fingerprint=fingerprint,
        forced=bool(problems), incompatibilities=problems,
    )  # fmt: skip
    return release_id, [event]


def _incompatible_message(problems: list[str]) -> str:
    return (
        f"incompatible with the deployed release: {'; '.join(problems)}. "
        "Bump the task's major version (and submit new jobs), or pass --force"
    )


def release_fingerprint(
    workflow: str,
    digest: str,
    runner: str | None,
    command: Sequence[str] | None,
    tasks: Sequence[ReleaseTask],
) -> str:
    """A stable identity of release content (key order and task order do not matter).

    Equal fingerprints publish as the same release; the build prints it before anything is sent.
    """
    document = {
        "workflow": workflow,
        "digest": digest,
        "runner": runner,
        "command": list(command) if command is not None else None,
        "tasks": [
            [t.name, t.version, t.input_schema]
            for t in sorted(tasks, key=lambda t: (t.name, t.version))
        ],
    }
    return "sha256:" + hashlib.sha256(msgspec.json.encode(document, order="sorted")).hexdigest()


# --- deployments --------------------------------------------------------------------------------------


def resolve_release(state: ControlState, release_id: str | None, latest_of: str | None) -> Release:
    """The release asked for: an explicit id, or the latest release of a workflow."""
    if (release_id is None) == (latest_of is None):
        raise InvalidInput("give exactly one of --release ID or --latest")
    if release_id is not None:
        return require_release(state, release_id)
    assert latest_of is not None
    require_workflow(state, latest_of)
    release = state.latest_release(latest_of)
    if release is None:
        raise NotFound(
            f"workflow {latest_of!r} has no releases yet; publish one with "
            "'tilebox workflow publish-release'"
        )
    return release


def deploy(
    state: ControlState,
    origin: Origin,
    *,
    clusters: Sequence[str],
    release_id: str | None = None,
    latest_of: str | None = None,
    workflow: str | None = None,
    target: str | None = None,
    force: bool = False,
) -> DeployPlan:
    """Make one release the active one of its workflow on each of ``clusters``."""
    release = resolve_release(state, release_id, latest_of)
    if workflow is not None and release.workflow != workflow:
        raise Conflict(
            f"release {release.id} belongs to workflow {release.workflow!r}, not {workflow!r}; "
            "deploy a release of that workflow"
        )
    targets = _clusters(state, clusters)
    changes: list[DeployChange] = []
    events: list[Event] = []
    problems: list[str] = []
    for cluster in targets:
        previous = state.deployed_release(cluster, release.workflow)
        changed = previous != release.id
        changes.append(DeployChange(cluster, release.workflow, previous, release.id, changed))
        if previous is not None and changed:
            found = release_incompatibilities(state.releases[previous].tasks, release.tasks)
            problems += [f"{cluster}: {p}" for p in found]
    if problems and not force:
        raise Incompatible(_incompatible_message(problems), problems)
    for change in changes:
        if change.changed:
            events.append(
                DeploymentSet(
                    **origin.stamp(),
                    workflow=release.workflow,
                    cluster=change.cluster,
                    release_id=release.id,
                    requested=release_id or LATEST,
                    previous_release_id=change.previous_release_id,
                    target=target,
                    forced=bool(problems),
                    incompatibilities=problems,
                )
            )
    return DeployPlan(release, changes, events, problems)


def undeploy(
    state: ControlState,
    origin: Origin,
    *,
    workflow: str,
    clusters: Sequence[str],
    target: str | None = None,
) -> DeployPlan:
    """Remove the active release of ``workflow`` from each of ``clusters``."""
    require_workflow(state, workflow)
    changes: list[DeployChange] = []
    events: list[Event] = []
    for cluster in _clusters(state, clusters):
        previous = state.deployed_release(cluster, workflow)
        changes.append(DeployChange(cluster, workflow, previous, None, previous is not None))
        if previous is not None:
            events.append(
                DeploymentRemoved(
                    **origin.stamp(),
                    workflow=workflow,
                    cluster=cluster,
                    release_id=previous,
                    target=target,
                )
            )
    return DeployPlan(None, changes, events)  # no events: not deployed there, nothing to change


def _clusters(state: ControlState, clusters: Sequence[str]) -> list[str]:
    """Validated, de-duplicated clusters in the given order; none means the default cluster."""
    result = list(dict.fromkeys(clusters)) or [DEFAULT_CLUSTER]
    for cluster in result:
        require_cluster(state, cluster)
    return result


def deployment_ops(events: Sequence[Event]) -> list[tuple[str, str, str]]:
    """Updates of the materialised ``<cluster>/<workflow> -> release`` hash for these events."""
    ops: list[tuple[str, str, str]] = []
    for event in events:
        if isinstance(event, DeploymentSet):
            ops.append(("HSET", f"{event.cluster}/{event.workflow}", event.release_id))
        elif isinstance(event, DeploymentRemoved):
            ops.append(("HDEL", f"{event.cluster}/{event.workflow}", ""))
    return ops
