"""The Tilebox workflow documentation's examples, run as written but for their imports
(``from tilebox.workflows import ...`` -> ``from tilebox_core import ...``), on a real server with
a direct runner; each asserts what the docs say the job ends with.

``Client()`` is called as in the docs: it finds the test's server and team in the environment
(TILEBOX_REDIS_URL, TILEBOX_TEAM), as a user's shell would give them. Each example defines its
task classes inside its test, as the docs' snippet does, so examples with the same class names
do not meet.

The examples of the progress, dependencies and optional-tasks sections live in tests/tilebox_docs/,
one module per docs page (their tests run some with runner-registered variants of the docs'
classes, as their docstrings say).
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.servers import ServerProcess
from tests.tilebox_docs import dependencies, optional_tasks, progress
from tilebox_core import Client, Job, JobState, TaskState


@pytest.fixture
def tilebox_env(server: ServerProcess, team: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment in which the docs' ``Client()`` reaches this test's server and team."""
    monkeypatch.setenv("TILEBOX_REDIS_URL", server.url)
    monkeypatch.setenv("TILEBOX_TEAM", team)


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """What tasks log through ``context.logger``, as structlog event dicts."""
    with structlog.testing.capture_logs() as captured:
        yield captured


def events(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


def test_docs_first_workflow(tilebox_env: None, logs: list[dict[str, Any]]) -> None:
    """guides/workflows/run-your-first-workflow: "The script submits a job, starts a direct
    runner, executes the root task and subtask, and exits after the queued work is complete."""
    from tilebox_core import Client, ExecutionContext, Runner, Task

    class HelloWorkflow(Task):
        name: str

        def execute(self, context: ExecutionContext) -> None:
            context.logger.info("Running root task", name=self.name)
            context.submit_subtask(WriteGreeting(name=self.name))

    class WriteGreeting(Task):
        name: str

        def execute(self, context: ExecutionContext) -> None:
            context.logger.info("Hello from Tilebox", name=self.name)

    client = Client()
    runner = Runner(tasks=[HelloWorkflow, WriteGreeting])

    job = client.jobs().submit(
        "hello-workflow",
        HelloWorkflow(name="Earth"),
    )
    print(f"Submitted job: {job.id}")

    runner.connect_to(client).run_all()

    with client:
        found = client.jobs().find(job.id)
    assert found.state is JobState.COMPLETED
    assert sorted((t.name, t.state) for t in found.tasks) == [
        ("HelloWorkflow", TaskState.COMPUTED), ("WriteGreeting", TaskState.COMPUTED),
    ]  # fmt: skip
    assert [e["name"] for e in events(logs, "Running root task")] == ["Earth"]
    assert [e["name"] for e in events(logs, "Hello from Tilebox")] == ["Earth"]
    assert {e["job_id"] for e in events(logs, "Hello from Tilebox")} == {job.id}


def test_docs_map_reduce_with_a_cache(tilebox_env: None, logs: list[dict[str, Any]]) -> None:
    """workflows/concepts/tasks#map-reduce-pattern: "Computed sum of squares result=336448"."""
    from tilebox_core import ExecutionContext, Task

    class SumOfSquares(Task):
        numbers: list[int]

        def execute(self, context: ExecutionContext) -> None:
            # 1. Map
            square_tasks = context.submit_subtasks([Square(num) for num in self.numbers])
            # 2. Reduce
            sum_task = context.submit_subtask(Sum(), depends_on=square_tasks)  # noqa: F841

    class Square(Task):  # The map step
        num: int

        def execute(self, context: ExecutionContext) -> None:
            result = self.num**2
            # typically the output of a task is a large dataset,
            # so we save individual results into a shared cache
            context.job_cache.group("squares")[str(self.num)] = str(result).encode()
            context.current_task.display = f"Square({self.num})"

    class Sum(Task):  # The reduce step
        def execute(self, context: ExecutionContext) -> None:
            result = 0
            # access our cached results from the map step
            squares = context.job_cache.group("squares")
            for key in squares:
                result += int(squares[key].decode())
            context.logger.info("Computed sum of squares", result=result)

    from tilebox_core import Client
    from tilebox_core.cache import InMemoryCache

    client = Client()
    jobs = client.jobs()
    job = jobs.submit(
        "sum-of-squares",
        SumOfSquares([12, 345, 453, 21, 45, 98]),
    )

    client.runner(tasks=[SumOfSquares, Square, Sum], cache=InMemoryCache()).run_all()
    # The docs then call jobs.display(job), which needs a notebook (IPython); outside one the
    # docs point to visualize, which returns the same diagram as SVG text.
    svg = jobs.visualize(job)

    with client:
        found = jobs.find(job)
    assert found.state is JobState.COMPLETED
    assert found.execution_stats.tasks_by_state == {TaskState.COMPUTED: 8}
    assert [e["result"] for e in events(logs, "Computed sum of squares")] == [336448]
    ElementTree.fromstring(svg)
    assert "SumOfSquares" in svg


def test_docs_cache_storing_and_retrieving(
    tilebox_env: None, logs: list[dict[str, Any]], tmp_path: Path
) -> None:
    """workflows/run-and-inspect/caches#storing-and-retrieving-data:
    "Read data from cache data=my_binary_data_to_store"."""
    from tilebox_core import ExecutionContext, Task

    class ProducerTask(Task):
        def execute(self, context: ExecutionContext) -> None:
            # store data in the cache
            context.job_cache["data"] = b"my_binary_data_to_store"
            context.submit_subtask(ConsumerTask())

    class ConsumerTask(Task):
        def execute(self, context: ExecutionContext) -> None:
            data = context.job_cache["data"]
            context.logger.info("Read data from cache", data=data.decode())

    from tilebox_core import Client
    from tilebox_core.cache import LocalFileSystemCache

    client = Client()
    # submit a job to test our workflow
    job_client = client.jobs()
    job = job_client.submit("testing-cache-access", ProducerTask())

    # start a runner to execute it (the docs' run_forever: served in the background until the
    # job is done, then stopped)
    runner = client.runner(
        tasks=[ProducerTask, ConsumerTask],
        cache=LocalFileSystemCache(tmp_path / "cache"),
    )
    with runner:
        assert job_client.wait(job, timeout=60).state is JobState.COMPLETED
    client.close()
    assert [e["data"] for e in events(logs, "Read data from cache")] == ["my_binary_data_to_store"]
    assert (tmp_path / "cache" / job.id / "data").read_bytes() == b"my_binary_data_to_store"


def test_docs_cache_groups(tilebox_env: None, logs: list[dict[str, Any]], tmp_path: Path) -> None:
    """workflows/run-and-inspect/caches#groups-and-hierarchical-keys: PrintSum "doesn't know how
    many numbers were produced, instead it iterates over all keys in the cache group" and logs
    "Computed sum of all numbers total=..." (random numbers: the docs show 284)."""
    import random

    from tilebox_core import ExecutionContext, Task

    class CacheGroupDemo(Task):
        n: int

        def execute(self, context: ExecutionContext):
            # define a cache group key for subtasks
            group_key = "random_numbers"
            produce_numbers = context.submit_subtask(ProduceRandomNumbers(self.n, group_key))
            sum_task = context.submit_subtask(  # noqa: F841
                PrintSum(group_key),
                depends_on=[produce_numbers],
            )

    class ProduceRandomNumbers(Task):
        n: int
        group_key: str

        def execute(self, context: ExecutionContext):
            for i in range(self.n):
                context.submit_subtask(ProduceRandomNumber(i, self.group_key))

    class ProduceRandomNumber(Task):
        index: int
        group_key: str

        def execute(self, context: ExecutionContext) -> None:
            number = random.randint(0, 100)
            group = context.job_cache.group(self.group_key)
            group[f"key_{self.index}"] = str(number).encode()

    class PrintSum(Task):
        group_key: str

        def execute(self, context: ExecutionContext) -> None:
            group = context.job_cache.group(self.group_key)

            # PrintSum doesn't know how many numbers were produced,
            # instead it iterates over all keys in the cache group
            numbers = []
            for key in group:  # iterate over all stored numbers
                number = group[key]  # read data from cache
                numbers.append(int(number.decode()))  # convert bytes back to int

            context.logger.info("Computed sum of all numbers", total=sum(numbers))

    from tilebox_core import Client
    from tilebox_core.cache import LocalFileSystemCache

    client = Client()
    # submit a job to test our workflow
    job_client = client.jobs()
    job = job_client.submit("cache-groups", CacheGroupDemo(5))

    # start a runner to execute it (run_forever, in the background until the job is done)
    runner = client.runner(
        tasks=[CacheGroupDemo, ProduceRandomNumbers, ProduceRandomNumber, PrintSum],
        cache=LocalFileSystemCache(tmp_path / "cache"),
    )
    with runner:
        assert job_client.wait(job, timeout=60).state is JobState.COMPLETED
    client.close()

    stored = tmp_path / "cache" / job.id / "random_numbers"
    numbers = {p.name: int(p.read_text()) for p in stored.iterdir()}
    assert sorted(numbers) == [f"key_{i}" for i in range(5)]
    assert all(0 <= n <= 100 for n in numbers.values())
    # PrintSum ran after every number was stored, and summed them all
    assert [e["total"] for e in events(logs, "Computed sum of all numbers")] == [
        sum(numbers.values())
    ]


# --- workflows/run-and-inspect/progress.mdx -------------------------------------------------------


@pytest.mark.cluster
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


@pytest.mark.cluster
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


@pytest.mark.cluster
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


@pytest.mark.cluster
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


@pytest.mark.cluster
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


@pytest.mark.cluster
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


@pytest.mark.cluster
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


@pytest.mark.cluster
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


@pytest.mark.cluster
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


@pytest.mark.cluster
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
