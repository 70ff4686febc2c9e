"""The workflow examples of the Tilebox documentation, run on a real server by a direct runner,
each asserting what the docs say the job ends with. The examples live in tests/tilebox_docs/, one
module per docs page, written as the docs write them but for their imports.

Each docs page has its own section (and test functions) here."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tilebox_docs import progress
from tilebox_core import Client

pytestmark = pytest.mark.cluster


# --- workflows/run-and-inspect/progress.mdx -------------------------------------------------------


def test_docs_progress_tracking_progress(client: Client, tmp_path: Path) -> None:
    """ "Tracking Progress": the root adds n to the total, each of its n subtasks marks one done;
    the job's (default) indicator sums them."""
    jobs = client.jobs()
    job = jobs.submit("progress", progress.ProgressRootTask(10))
    client.runner(tasks=[progress.ProgressRootTask, progress.ProgressSubTask],
                  cache_root=tmp_path).run_all()  # fmt: skip
    done = jobs.find(job.id)
    assert done.state == "completed"
    assert [(p.label, p.total, p.done) for p in done.progress] == [(None, 10, 10)]


def test_docs_progress_multiple_progress_indicators(
    client: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ "Multiple Progress Indicators" and "Querying Progress": the docs print the job's indicators
    of a run with n = 4 as their "Output" block shows."""
    job_client = client.jobs()
    job = job_client.submit("multi-progress", progress.MultiProgressWorkflowRoot(4))
    tasks = [progress.MultiProgressWorkflowRoot, progress.Process, progress.Step1,
             progress.Step2, progress.Cleanup]  # fmt: skip
    client.runner(tasks=tasks, cache_root=tmp_path).run_all()
    capsys.readouterr()

    job_id = job.id
    job = job_client.find(job_id)
    for indicator in job.progress:
        print(f"{indicator.label}: {indicator.done}/{indicator.total}")

    assert capsys.readouterr().out.splitlines() == ["finalize: 1/1", "step1: 4/4", "step2: 4/4"]
    assert job.state == "completed" and job.total_tasks == 11


def test_docs_progress_querying_progress_while_the_job_runs(client: Client, tmp_path: Path) -> None:
    """ "At any time during a job's execution, you can query the current progress": the root's
    total is there before its subtasks have run."""
    job_client = client.jobs()
    job = job_client.submit("progress", progress.ProgressRootTask(3))
    runner = client.runner(tasks=[progress.ProgressRootTask], cache_root=tmp_path)
    runner.run_all()  # the root only: nothing here runs its subtasks yet
    running = job_client.find(job.id)
    assert running.state == "running"
    assert [(p.label, p.total, p.done) for p in running.progress] == [(None, 3, 0)]
    client.runner(tasks=[progress.ProgressSubTask], cache_root=tmp_path).run_all()
    assert [(p.total, p.done) for p in job_client.find(job.id).progress] == [(3, 3)]
