"""A task whose behaviour is its input, for the property test of the task-plane projection: it
fails its first runs, cancels its own job, runs slowly, submits a tree of subtasks with
dependencies, retries and optional ones, as its fields say."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

import msgspec

from tilebox_core import ExecutionContext, Task

# Set by the test: runs of each task id so far, and how a task cancels its job.
RUNS: collections.Counter[str] = collections.Counter()
CANCEL: list[Callable[[str], None]] = []


class Child(msgspec.Struct, frozen=True):
    node: Node
    after: list[int] = []  # indices of earlier siblings it depends on
    optional: bool = False
    max_retries: int = 0


class Node(Task):
    fail: int = 0  # its first this many runs fail
    cancel: bool = False  # cancels its job while it runs
    seconds: float = 0.0
    children: list[Child] = msgspec.field(default_factory=list)

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "prop.Node", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        task_id = context.current_task.id
        RUNS[task_id] += 1
        if self.cancel:
            CANCEL[0](context.current_task.job_id)
        if self.seconds:
            time.sleep(self.seconds)
        if RUNS[task_id] <= self.fail:
            raise RuntimeError(f"run {RUNS[task_id]} of {self.fail} failing runs")
        handles = []
        for child in self.children:
            handles.append(
                context.submit_subtask(
                    child.node,
                    depends_on=[handles[i] for i in child.after],
                    optional=child.optional,
                    max_retries=child.max_retries,
                )
            )
