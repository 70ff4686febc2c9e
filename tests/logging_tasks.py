"""Tasks of the task-log tests (importable by runner subprocesses)."""

from __future__ import annotations

import pathlib
import time

from tilebox_core import ExecutionContext, Task


class Chatty(Task):
    """Logs ``lines`` lines of ``size`` characters each, then submits a quiet subtask."""

    lines: int
    size: int = 8

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "logs.Chatty", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        context.logger.info("starting", lines=self.lines, scene={"id": 42, "bands": ["B04"]})
        for i in range(self.lines):
            context.logger.debug("x" * self.size, i=i)
        try:
            raise ValueError("no such band")
        except ValueError:
            context.logger.exception("band lookup failed", band="B13")
        context.logger.warning("done", path=pathlib.Path("/tmp/out"))
        context.submit_subtask(Quiet())


class Quiet(Task):
    @staticmethod
    def identifier() -> tuple[str, str]:
        return "logs.Quiet", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        pass


class Shaky(Task):
    """Its first run logs and fails; the second logs and completes."""

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "logs.Shaky", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        context.logger.info("trying", attempt=context.current_task.attempt)
        if context.current_task.attempt == 1:
            raise RuntimeError("flaky download")


class Gated(Task):
    """Logs, waits for the file ``gate``, logs again."""

    gate: str

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "logs.Gated", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        context.logger.info("waiting at the gate")
        while not pathlib.Path(self.gate).exists():
            time.sleep(0.02)
        context.logger.info("through the gate")


TASKS = [Chatty, Quiet, Shaky, Gated]
