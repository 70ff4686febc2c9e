"""A direct runner's lifecycle: ``with runner:`` serves in the background until the block is left,
and an error in any of its threads stops it and is raised to whoever runs it."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from tests.tasks_fixture import FanOut, Leaf, Sleep
from tests.waiting import wait_for
from tilebox_core import Client, ExecutionContext, Task, TileboxError


class Exits(Task):
    """Calls sys.exit, as library code sometimes does: not a failure of the task, an end of the
    process."""

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "life.Exits", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        sys.exit(3)


class Unrecordable(Task):
    """Reports progress under a label that is no text (a file name decoded with surrogateescape):
    its result cannot be encoded, so the recorder thread fails."""

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "life.Unrecordable", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        context.progress("scene-\udcff").add(1)


def runner_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("tilebox-")]


def test_a_with_block_serves_in_the_background_until_it_is_left(
    client: Client, tmp_path: Path
) -> None:
    runner = client.runner(tasks=[FanOut, Sleep, Leaf], cache_root=tmp_path)
    with runner:
        assert runner.running
        job = client.jobs().submit("in the block", FanOut(20))
        assert client.jobs().wait(job.id, timeout=30).state == "completed"
        with pytest.raises(TileboxError, match="running already"):
            runner.run_all()
    assert not runner.running and runner_threads() == []
    later = client.jobs().submit("after the block", Leaf("x"))
    runner.run_all()  # the runner can run again
    assert client.jobs().find(later.id).state == "completed"


def test_leaving_a_with_block_by_an_error_stops_the_runner_and_keeps_the_error(
    client: Client, tmp_path: Path
) -> None:
    runner = client.runner(tasks=[Leaf], cache_root=tmp_path)
    with pytest.raises(ValueError, match="in the block"), runner:
        client.jobs().submit("x", Leaf("x"))
        raise ValueError("in the block")
    assert not runner.running and runner_threads() == []


@pytest.mark.parametrize("concurrency", [1, 2])
def test_an_error_in_a_worker_thread_stops_the_runner_and_is_raised(
    client: Client, tmp_path: Path, concurrency: int
) -> None:
    jobs = client.jobs().submit_many([("exits", Exits()), *((f"leaf-{i}", Leaf(str(i)))
                                                           for i in range(3))])  # fmt: skip
    runner = client.runner(tasks=[Exits, Leaf], concurrency=concurrency, cache_root=tmp_path)
    with pytest.raises(SystemExit) as raised:
        runner.run_all()
    assert raised.value.code == 3
    assert not runner.running and runner_threads() == []
    assert client.jobs().find(jobs[0].id).state != "completed"


def test_an_error_in_the_recorder_thread_stops_the_runner_and_is_raised(
    client: Client, tmp_path: Path
) -> None:
    job = client.jobs().submit("unrecordable", Unrecordable())
    others = client.jobs().submit_many((f"leaf-{i}", Leaf(str(i))) for i in range(200))
    runner = client.runner(tasks=[Unrecordable, Leaf], cache_root=tmp_path)
    with pytest.raises(UnicodeEncodeError, match="surrogates not allowed"):
        runner.run_all()
    assert not runner.running and runner_threads() == []
    assert client.jobs().find(job.id).tasks[0].state != "computed"  # nothing recorded
    # stopped, not served to the end: most of the other jobs still wait
    states = [client.jobs().find(j.id, with_tasks=False).state for j in others]
    assert states.count("queued") > 100


def test_an_error_in_a_with_blocks_runner_is_raised_when_the_block_is_left(
    client: Client, tmp_path: Path
) -> None:
    runner = client.runner(tasks=[Unrecordable], cache_root=tmp_path)
    with pytest.raises(UnicodeEncodeError), runner:
        client.jobs().submit("unrecordable", Unrecordable())
        wait_for(lambda: not runner.running, timeout=30)  # it stopped on its own
    assert runner_threads() == []
