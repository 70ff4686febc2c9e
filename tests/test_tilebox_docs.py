"""The workflow examples of the Tilebox documentation, run on a real server by a direct runner,
each asserting what the docs say the job ends with. The examples live in tests/tilebox_docs/, one
module per docs page, written as the docs write them but for their imports.

Each docs page has its own section (and test functions) here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.tilebox_docs import dependencies, optional_tasks, progress
from tilebox_core import Client, Job

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


# --- workflows/concepts/tasks.mdx: Dependencies ---------------------------------------------------


def test_docs_dependencies_run_in_order(client: Client, tmp_path: Path) -> None:
    """ "a dependent task will only execute after the task it relies on has successfully
    completed": first, second, last."""
    job = client.jobs().submit("dependencies", dependencies.RootTask())
    with structlog.testing.capture_logs() as logs:
        client.runner(tasks=[dependencies.RootTask, dependencies.PrintTask],
                      cache_root=tmp_path).run_all()  # fmt: skip
    printed = [log["message"] for log in logs if log["event"] == "Print task executed"]
    assert printed == ["Executing first", "Executing second", "Executing last"]
    assert client.jobs().find(job.id).state == "completed"


def test_docs_dependencies_news_example(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The news workflow: PrintHeadlines and MostFrequentAuthors both depend on FetchNews (and
    not on each other), so both run after it and read what it wrote."""
    monkeypatch.chdir(tmp_path)  # news.json is written to the working directory
    job = client.jobs().submit("news", dependencies.NewsWorkflow("science", 3))
    tasks = [dependencies.NewsWorkflow, dependencies.OfflineFetchNews,
             dependencies.PrintHeadlines, dependencies.MostFrequentAuthors]  # fmt: skip
    with structlog.testing.capture_logs() as logs:
        client.runner(tasks=tasks, cache_root=tmp_path / "cache").run_all()
    events = [log["event"] for log in logs if log["log_level"] == "info" and "job_id" in log]
    assert events.index("Fetched news articles") < min(
        events.index("News headline"), events.index("Author article count")
    )
    headlines = [(log["published_at"], log["title"]) for log in logs
                 if log["event"] == "News headline"]  # fmt: skip
    assert headlines == [("2026-03-01", "Satellite launched"), ("2026-03-02", "Sentinel-2 images"),
                         ("2026-03-03", "Orbit raised")]  # fmt: skip
    authors = [(log["author"], log["count"]) for log in logs
               if log["event"] == "Author article count"]  # fmt: skip
    assert authors == [("Ada", 2), ("Grace", 1)]
    found = client.jobs().find(job.id, with_dependencies=True)
    assert found.state == "completed" and found.total_tasks == 4
    fetch = next(t for t in found.tasks if t.name == "FetchNews")
    assert sorted(t.name for t in found.tasks if t.depends_on == [fetch.id]) == [
        "MostFrequentAuthors", "PrintHeadlines",
    ]  # fmt: skip


# --- workflows/concepts/tasks.mdx: Optional Tasks -------------------------------------------------


def states_by_name(job: Job) -> dict[str, str]:
    return {task.name: task.state.value for task in job.tasks}


def test_docs_optional_tasks_submitting_optional_tasks(client: Client, tmp_path: Path) -> None:
    """ "If it fails, FinalTask still executes because it depends on an optional task. The
    resulting job completes successfully"; FlakyTask is FAILED_OPTIONAL."""
    job = client.jobs().submit("optional-subtask", optional_tasks.RootTask())
    tasks = [optional_tasks.RootTask, optional_tasks.RequiredTask,
             optional_tasks.FailingFlakyTask, optional_tasks.FinalTask]  # fmt: skip
    with structlog.testing.capture_logs() as logs:
        client.runner(tasks=tasks, cache_root=tmp_path).run_all()
    found = client.jobs().find(job.id)
    assert found.state == "completed"
    assert states_by_name(found) == {"RootTask": "computed", "RequiredTask": "computed",
                                     "FlakyTask": "failed_optional", "FinalTask": "computed"}  # fmt: skip
    assert "Running final step" in [log["event"] for log in logs]


def test_docs_optional_tasks_submitting_optional_tasks_that_succeed(
    client: Client, tmp_path: Path
) -> None:
    """ "If it succeeds, the job continues as normal, there is no difference from a regular
    task"."""
    job = client.jobs().submit("optional-subtask", optional_tasks.RootTask())
    tasks = [optional_tasks.RootTask, optional_tasks.RequiredTask, optional_tasks.FlakyTask,
             optional_tasks.FinalTask]  # fmt: skip
    client.runner(tasks=tasks, cache_root=tmp_path).run_all()
    found = client.jobs().find(job.id)
    assert found.state == "completed" and found.tasks_by_state == {"computed": 4}


NESTED = [optional_tasks.Pipeline, optional_tasks.OptionalProcessing, optional_tasks.Step1A,
          optional_tasks.Step1B, optional_tasks.AlwaysRuns]  # fmt: skip


def test_docs_optional_tasks_nested_optional_tasks(client: Client, tmp_path: Path) -> None:
    """The nested example as the docs' Python writes it (Step1 raises): Step1 is inside the
    optional OptionalProcessing, so it ends FAILED_OPTIONAL, its dependant Step2 is skipped,
    AlwaysRuns still runs, and the job completes."""
    job = client.jobs().submit("nested-optional-subtasks", optional_tasks.Pipeline())
    tasks = [*NESTED, optional_tasks.Step1, optional_tasks.Step1C, optional_tasks.Step2]
    with structlog.testing.capture_logs() as logs:
        client.runner(tasks=tasks, cache_root=tmp_path).run_all()
    found = client.jobs().find(job.id)
    assert found.state == "completed"
    assert states_by_name(found) == {
        "Pipeline": "computed", "OptionalProcessing": "computed", "AlwaysRuns": "computed",
        "Step1": "failed_optional", "Step2": "skipped",
    }  # fmt: skip
    ran = [log["event"] for log in logs]
    assert "This runs regardless" in ran
    assert "This will be skipped because Step1B failed" not in ran


def test_docs_optional_tasks_nested_optional_tasks_as_the_diagram_shows(
    client: Client, tmp_path: Path
) -> None:
    """The nested example as the docs' text and diagram describe it: "Step1B fails. Since it's an
    indirect subtask of the optional Processing subtask, both Step1C and Step2 are skipped and
    AlwaysRuns still executes. The job completes successfully." One runner: it receives Step1A,
    Step1B and Step1C together, runs them in turn, and skips Step1C once Step1B failed."""
    job = client.jobs().submit("nested-optional-subtasks", optional_tasks.Pipeline())
    tasks = [*NESTED, optional_tasks.Step1WithSubtasks, optional_tasks.Step1C,
             optional_tasks.Step2]  # fmt: skip
    with structlog.testing.capture_logs() as logs:
        client.runner(tasks=tasks, cache_root=tmp_path).run_all()
    found = client.jobs().find(job.id)
    assert found.state == "completed"
    assert states_by_name(found) == {
        "Pipeline": "computed", "OptionalProcessing": "computed", "Step1": "computed",
        "Step1A": "computed", "Step1B": "failed_optional", "Step1C": "skipped",
        "Step2": "skipped", "AlwaysRuns": "computed",
    }  # fmt: skip
    ran = [log["event"] for log in logs]
    assert "Step1A executed successfully" in ran and "This runs regardless" in ran
    assert "This will be skipped because Step1B failed" not in ran
    step1b = next(t for t in found.tasks if t.name == "Step1B")
    assert step1b.error is not None and step1b.error.message == "something went wrong"


def test_docs_optional_tasks_nested_optional_tasks_recursive(
    client: Client, tmp_path: Path
) -> None:
    """ "If instead Step1B was also marked as optional, Step1C and Step2 would still be executed,
    and only after that AlwaysRuns would execute": nothing is skipped."""
    job = client.jobs().submit("nested-optional-subtasks", optional_tasks.Pipeline())
    tasks: list[Any] = [*NESTED, optional_tasks.Step1WithOptionalStep1B, optional_tasks.Step1C,
                        optional_tasks.Step2]  # fmt: skip
    client.runner(tasks=tasks, cache_root=tmp_path).run_all()
    found = client.jobs().find(job.id)
    assert found.state == "completed"
    assert states_by_name(found) == {
        "Pipeline": "computed", "OptionalProcessing": "computed", "Step1": "computed",
        "Step1A": "computed", "Step1B": "failed_optional", "Step1C": "computed",
        "Step2": "computed", "AlwaysRuns": "computed",
    }  # fmt: skip
