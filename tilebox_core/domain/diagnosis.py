"""Why is a job still queued? Pure answers from the control state and the live runners."""

from __future__ import annotations

from collections.abc import Sequence

from .identifiers import TaskIdentifier, can_run, parse_version
from .jobs import Job
from .projection import ControlState
from .runners import RunnerInfo


def why_queued(job: Job, state: ControlState, runners: Sequence[RunnerInfo]) -> list[str]:
    """One reason per distinct identifier of the job's queued tasks that nothing will run."""
    reasons: list[str] = []
    queued = sorted({TaskIdentifier(t.name, t.version) for t in job.tasks if t.state == "queued"})
    for wanted in queued:
        reason = _reason(wanted, job.cluster, state, runners)
        if reason:
            reasons.append(reason)
    return reasons


def _reason(
    wanted: TaskIdentifier, cluster: str, state: ControlState, runners: Sequence[RunnerInfo]
) -> str:
    deployed = state.deployments.get(cluster, {})
    same_name = [
        (d.release_id, TaskIdentifier(t.name, t.version))
        for d in deployed.values()
        for t in state.releases[d.release_id].tasks
        if t.name == wanted.name
    ]
    if not same_name:
        return (
            f"{wanted}: no release deployed on cluster {cluster!r} provides task {wanted.name!r}; "
            "deploy one with 'tilebox workflow deploy-release'"
        )
    compatible = [release for release, provided in same_name if can_run(provided, wanted)]
    if not compatible:
        versions = ", ".join(sorted({p.version for _, p in same_name}))
        major, minor = parse_version(wanted.version)
        return (
            f"{wanted}: only incompatible versions are deployed on cluster {cluster!r} ({versions}); "
            f"it needs v{major}.x with x >= {minor}"
        )
    if not runners:
        return (
            f"{wanted}: no live runner serves cluster {cluster!r}; start one with "
            f"'tilebox runner start --cluster {cluster}'"
        )
    statuses = [s for r in runners for s in r.releases if s.release_id in compatible]
    if not any(s.status == "running" for s in statuses):
        detail = "; ".join(f"{s.release_id}: {s.status} {s.error}".strip() for s in statuses)
        return (
            f"{wanted}: release {', '.join(compatible)} is deployed but not running on any runner"
            + (f" ({detail})" if detail else " yet")
        )
    return ""
