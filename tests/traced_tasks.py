"""Tasks of the tracing tests (importable by runner subprocesses)."""

from __future__ import annotations

from tilebox_core import ExecutionContext, Task


class Survey(Task):
    """The root: two subtasks, and a span of its own around some of its work."""

    scenes: int

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "trace.Survey", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        with context.tracer.start_as_current_span("plan") as span:
            span.set_attribute("scenes", self.scenes)
            context.submit_subtasks([Scene(i) for i in range(self.scenes)])
        context.submit_subtask(Flaky(), max_retries=1)


class Scene(Task):
    index: int

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "trace.Scene", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        pass


class Flaky(Task):
    """Fails its first run; the second submits a subtask."""

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "trace.Flaky", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        if context.current_task.attempt == 1:
            raise RuntimeError("first run fails")
        context.submit_subtask(Scene(99))


TASKS = [Survey, Scene, Flaky]
