"""Task classes of ``tasks_bench.py``, importable by its runner processes (``import noop_tasks``)."""

from __future__ import annotations

from tilebox_core import ExecutionContext, Task


class Noop(Task):
    """Does nothing: what is measured is the task plane's own overhead."""

    i: int

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "bench.Noop", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        pass


class FanOut(Task):
    """A root task that submits ``n`` no-op subtasks in one call."""

    n: int

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "bench.FanOut", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        context.submit_subtasks([Noop(i) for i in range(self.n)])


TASKS = [Noop, FanOut]
