"""workflows/run-and-inspect/progress.mdx: "Tracking Progress" and "Multiple Progress Indicators".

As in the docs but for the imports. One fix: the docs' Python root submits ``Cleanup()`` but
defines the task that reports "finalize" as ``Finalize``; the Go version of the same example
calls it ``Cleanup``, so it is ``Cleanup`` here (with the body the docs give ``Finalize``).
"""

from __future__ import annotations

from tilebox_core import ExecutionContext, Task

# --- Tracking Progress ---------------------------------------------------------------------------


class ProgressRootTask(Task):
    n: int

    def execute(self, context: ExecutionContext) -> None:
        # report that 10 units of work need to be done
        context.progress().add(self.n)

        for _ in range(self.n):
            context.submit_subtask(ProgressSubTask())


class ProgressSubTask(Task):
    def execute(self, context: ExecutionContext) -> None:
        # report that one unit of work has been completed
        context.progress().done(1)


# --- Multiple Progress Indicators ----------------------------------------------------------------


class MultiProgressWorkflowRoot(Task):
    n: int

    def execute(self, context: ExecutionContext) -> None:
        # initialize a progress indicator for the finalize task
        context.progress("finalize").add(1)

        process = context.submit_subtask(Process(self.n))
        context.submit_subtask(Cleanup(), depends_on=[process])


class Process(Task):
    n: int

    def execute(self, context: ExecutionContext) -> None:
        # initialize two progress indicators for the two steps,
        # with a total work of n for each
        context.progress("step1").add(self.n)
        context.progress("step2").add(self.n)

        # now submit N subtasks for the two steps
        for _ in range(self.n):
            step1 = context.submit_subtask(Step1())
            context.submit_subtask(Step2(), depends_on=[step1])


class Step1(Task):
    def execute(self, context: ExecutionContext) -> None:
        # 1 unit of work for step1 is done
        context.progress("step1").done(1)


class Step2(Task):
    def execute(self, context: ExecutionContext) -> None:
        # 1 unit of work for step2 is done
        context.progress("step2").done(1)


class Cleanup(Task):
    def execute(self, context: ExecutionContext) -> None:
        # finalize is done
        context.progress("finalize").done(1)
