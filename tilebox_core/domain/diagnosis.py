"""Why is a job still queued, and will a retry fail again? Pure answers from the job view, the
control state and the live runners."""

from __future__ import annotations

from collections.abc import Sequence

from .identifiers import TaskIdentifier, can_run, parse_version
from .jobs import Job
from .projection import ControlState
from .runners import RunnerInfo


def why_queued(job: Job, state: ControlState, runners: Sequence[RunnerInfo]) -> list[str]:
    """One reason per distinct identifier of the job's queued tasks that nothing will run."""
    queued = sorted({TaskIdentifier(t.name, t.version) for t in job.tasks if t.state == "queued"})
    if queued and job.state == "failed":  # held, whoever could run them (task_projection.is_held)
        held = sum(1 for t in job.tasks if t.state == "queued")
        return [
            f"{held} queued task{'s are' if held != 1 else ' is'} held because the job failed: "
            f"fix what failed, then 'tilebox job retry {job.id}' resumes them"
        ]
    if queued and job.cluster not in state.clusters:
        return [
            f"cluster {job.cluster!r} was deleted (cluster deleted): no runner will take its "
            "queued tasks; submit the job again to another cluster"
        ]
    reasons: list[str] = []
    for wanted in queued:
        reason = _reason(wanted, job.cluster, state, runners)
        if reason:
            reasons.append(reason)
    return reasons


def deployment_gap(wanted: TaskIdentifier, cluster: str, state: ControlState) -> str:
    """Why no release deployed on ``cluster`` can run ``wanted`` ("" when one can)."""
    deployed = state.deployments.get(cluster, {})
    same_name = [
        TaskIdentifier(t.name, t.version)
        for d in deployed.values()
        for t in state.releases[d.release_id].tasks
        if t.name == wanted.name
    ]
    if not same_name:
        return (
            f"{wanted}: no release deployed on cluster {cluster!r} provides task {wanted.name!r}; "
            "deploy one with 'tilebox workflow deploy-release'"
        )
    if not any(can_run(provided, wanted) for provided in same_name):
        versions = ", ".join(sorted({p.version for p in same_name}))
        major, minor = parse_version(wanted.version)
        return (
            f"{wanted}: only incompatible versions are deployed on cluster {cluster!r} ({versions}); "
            f"it needs v{major}.x with x >= {minor}"
        )
    return ""


def _reason(
    wanted: TaskIdentifier, cluster: str, state: ControlState, runners: Sequence[RunnerInfo]
) -> str:
    gap = deployment_gap(wanted, cluster, state)
    if gap:
        return gap
    compatible = [
        d.release_id
        for d in state.deployments.get(cluster, {}).values()
        if any(
            can_run(TaskIdentifier(t.name, t.version), wanted)
            for t in state.releases[d.release_id].tasks
        )
    ]
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


def failing_releases_still_deployed(job: Job, state: ControlState) -> list[str]:
    """For each release that ran failed tasks of ``job`` and is still the one deployed for its
    workflow on that task's cluster: a warning that a retry will likely fail the same way."""
    failed: dict[tuple[str, str], list[str]] = {}
    for task in job.tasks:
        if task.state == "failed" and task.release_id:
            failed.setdefault((task.cluster, task.release_id), []).append(task.name)
    warnings = []
    for (cluster, release_id), names in sorted(failed.items()):
        release = state.releases.get(release_id)
        if release is None or state.deployed_release(cluster, release.workflow) != release_id:
            continue
        tasks = ", ".join(sorted(set(names)))
        warnings.append(
            f"release {release_id} that failed {tasks} is still the one deployed for workflow "
            f"{release.workflow!r} on cluster {cluster!r}, so the tasks will likely fail again; "
            "deploy a fixed release first ('tilebox workflow deploy-release')"
        )
    return warnings
