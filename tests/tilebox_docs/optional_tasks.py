"""workflows/concepts/tasks.mdx: "Optional Tasks" ("Submitting Optional Tasks", "Nested Optional
Tasks"), as in the docs but for the imports.

The docs' tasks only say that they "may fail"; tests/test_tilebox_docs.py makes them fail the way
Tilebox itself does: a runner registers, for a task's identifier, the class it runs
(``FailingFlakyTask`` for ``FlakyTask``, ``Step1WithSubtasks`` for ``Step1``, ...), so the docs'
own classes are submitted unchanged. ``Step1WithSubtasks`` is the docs' Go version of ``Step1``
(it submits Step1A, Step1B, Step1C), which their text and diagram describe; their Python
``Step1`` raises at once instead.
"""

from __future__ import annotations

from tilebox_core import ExecutionContext, Task

# --- Submitting Optional Tasks -------------------------------------------------------------------


class RootTask(Task):
    def execute(self, context: ExecutionContext) -> None:
        required_step = context.submit_subtask(
            RequiredTask(),
        )
        optional_step = context.submit_subtask(FlakyTask(), optional=True)
        context.submit_subtask(FinalTask(), depends_on=[required_step, optional_step])


class RequiredTask(Task):
    def execute(self, context: ExecutionContext) -> None:
        # this task may fail, but the job will continue regardless
        context.logger.info("Required task completed")


class FlakyTask(Task):
    def execute(self, context: ExecutionContext) -> None:
        # this task may fail, but the job will continue regardless
        context.logger.info("Attempting flaky operation")


class FinalTask(Task):
    def execute(self, context: ExecutionContext) -> None:
        # this task runs even if FlakyTask failed
        context.logger.info("Running final step")


# --- Nested Optional Tasks -----------------------------------------------------------------------


class Pipeline(Task):
    def execute(self, context: ExecutionContext) -> None:
        context.submit_subtask(OptionalProcessing(), optional=True)
        context.submit_subtask(AlwaysRuns())


class OptionalProcessing(Task):
    def execute(self, context: ExecutionContext) -> None:
        first = context.submit_subtask(Step1())
        context.submit_subtask(Step2(), depends_on=[first])


class Step1(Task):
    def execute(self, context: ExecutionContext) -> None:
        raise ValueError("something went wrong")


class Step1A(Task):
    def execute(self, context: ExecutionContext) -> None:
        context.logger.info("Step1A executed successfully")


class Step1B(Task):
    def execute(self, context: ExecutionContext) -> None:
        raise ValueError("something went wrong")


class Step1C(Task):
    def execute(self, context: ExecutionContext) -> None:
        context.logger.info("This will be skipped because Step1B failed")


class Step2(Task):
    def execute(self, context: ExecutionContext) -> None:
        context.logger.info("This will be skipped because Step1B failed")


class AlwaysRuns(Task):
    def execute(self, context: ExecutionContext) -> None:
        context.logger.info("This runs regardless")


# --- what the docs' text describes, run for their tasks' identifiers -----------------------------


class FailingFlakyTask(Task):
    """``FlakyTask`` on a day it fails."""

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "FlakyTask", "v0.0"

    def execute(self, context: ExecutionContext) -> None:
        context.logger.info("Attempting flaky operation")
        raise ConnectionError("the flaky service is down")


class Step1WithSubtasks(Task):
    """``Step1`` as the docs' Go version writes it (their diagram's): three subtasks."""

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "Step1", "v0.0"

    def execute(self, context: ExecutionContext) -> None:
        context.submit_subtask(Step1A())
        context.submit_subtask(Step1B())
        context.submit_subtask(Step1C())


class Step1WithOptionalStep1B(Task):
    """``Step1`` of "If instead Step1B was also marked as optional"."""

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "Step1", "v0.0"

    def execute(self, context: ExecutionContext) -> None:
        context.submit_subtask(Step1A())
        context.submit_subtask(Step1B(), optional=True)
        context.submit_subtask(Step1C())
