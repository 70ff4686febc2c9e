"""The Tilebox workflow documentation's examples, run as written but for their imports
(``from tilebox.workflows import ...`` -> ``from tilebox_core import ...``), on a real server with
a direct runner; each asserts what the docs say the job ends with.

``Client()`` is called as in the docs: it finds the test's server and team in the environment
(TILEBOX_REDIS_URL, TILEBOX_TEAM), as a user's shell would give them. Each example defines its
task classes inside its test, as the docs' snippet does, so examples with the same class names
do not meet.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.servers import ServerProcess
from tilebox_core import JobState, TaskState


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
