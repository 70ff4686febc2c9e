"""Task classes used by the job tests (importable by runner subprocesses)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from tilebox_core import ExecutionContext, Task


def _record(name: str) -> None:
    """Append to the order file named by TILEBOX_TEST_TRACE (shared by runner processes)."""
    trace = os.environ.get("TILEBOX_TEST_TRACE")
    if trace:
        with open(trace, "a") as handle:
            handle.write(f"{name}\n")


class Root(Task):
    n: int

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "test.Root", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        _record("root")
        first = context.submit_subtask(Step("a"))
        second = context.submit_subtask(Step("b"), depends_on=[first])
        context.submit_subtask(Step("c"), depends_on=[first, second])
        context.progress("steps").add(3)


class Step(Task):
    label: str

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "test.Step", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        _record(self.label)
        context.progress("steps").done(1)
        if self.label == "a":
            context.submit_subtask(Leaf("a.1"))
            context.submit_subtask(Leaf("a.2"))


class Leaf(Task):
    label: str

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "test.Leaf", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        _record(self.label)


class FanOut(Task):
    count: int

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "test.FanOut", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        context.submit_subtasks([Sleep(i) for i in range(self.count)])


class Sleep(Task):
    i: int
    seconds: float = 0.0

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "test.Sleep", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        _record(f"sleep-{self.i}")
        if self.seconds:
            time.sleep(self.seconds)
        marker = os.environ.get("TILEBOX_TEST_MARKER")
        if marker:
            Path(marker).touch()


class Flaky(Task):
    """v1.0: always raises (the bug)."""

    name: str

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "test.Flaky", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        _record(f"flaky-{self.name}")
        raise RuntimeError(f"bug while processing {self.name}")


class FlakyFixed(Task):
    """v1.1: the compatible fix (same name and major, higher minor, same input)."""

    name: str

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "test.Flaky", "v1.1"

    def execute(self, context: ExecutionContext) -> None:
        _record(f"fixed-{self.name}")


class Pipeline(Task):
    """Two steps that succeed and one flaky step after them."""

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "test.Pipeline", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        _record("pipeline")
        a = context.submit_subtask(Leaf("ok-1"))
        b = context.submit_subtask(Leaf("ok-2"))
        context.submit_subtask(Flaky("x"), depends_on=[a, b], max_retries=2)


class Crash(Task):
    """Kills the process that runs it (a poison task)."""

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "test.Crash", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        os._exit(42)


class Busy(Task):
    """Burns CPU (holding the GIL most of the time) for a while."""

    seconds: float

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "test.Busy", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        deadline = time.monotonic() + self.seconds
        x = 0
        while time.monotonic() < deadline:
            x += sum(range(1000))
        _record("busy-done")


class Twice(Task):
    """Names the same dependency twice."""

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "test.Twice", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        first = context.submit_subtask(Leaf("first"))
        context.submit_subtask(Leaf("second"), depends_on=[first, first])


class Wide(Task):
    """A parent of many leaves: they complete in batches, and the parent only after all of them."""

    count: int

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "test.Wide", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        context.submit_subtasks([Leaf(f"leaf-{i}") for i in range(self.count)])


class Top(Task):
    """A wide subtree, and a step that may run only once that whole subtree is complete."""

    count: int

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "test.Top", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        wide = context.submit_subtask(Wide(self.count))
        context.submit_subtask(Leaf("after"), depends_on=wide)


class Rendezvous(Task):
    """Finishes only once ``count`` of its kind run at the same time (10 s at most, then fails):
    proof that a runner executes tasks concurrently."""

    i: int
    count: int

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "test.Rendezvous", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        place = Path(os.environ["TILEBOX_TEST_RENDEZVOUS"])
        (place / str(self.i)).touch()
        _within_10_s(lambda: len(list(place.iterdir())) >= self.count,
                     "the other tasks never ran alongside this one")  # fmt: skip


class Gate(Task):
    """Runs until the test removes the file it creates at ``path`` (10 s at most, then fails)."""

    path: str

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "test.Gate", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        gate = Path(self.path)
        gate.touch()
        _within_10_s(lambda: not gate.exists(), "the gate was never opened")


def _within_10_s(condition: Callable[[], bool], failure: str) -> None:
    """Wait for ``condition``; fail the task with ``failure`` after 10 s."""
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(failure)
        time.sleep(0.01)
