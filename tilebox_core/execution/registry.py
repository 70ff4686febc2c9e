"""``Runner``: the set of task classes a workflow project provides; what ``tilebox.workflow.toml`` names."""

from __future__ import annotations

from collections.abc import Iterable

from tilebox_core.domain.identifiers import TaskIdentifier, duplicate_identifier
from tilebox_core.task import Task, check_executable, task_identifier


class Runner:
    """A registry of task classes, keyed by identifier; duplicate identifiers are refused."""

    def __init__(self, tasks: Iterable[type[Task]] = ()) -> None:
        self.tasks: dict[TaskIdentifier, type[Task]] = {}
        for task_class in tasks:
            self.register(task_class)

    def register(self, task_class: type[Task]) -> None:
        """Add a task class; it must define ``execute`` (a stub cannot run), and its identifier
        must not be registered yet."""
        identifier = task_identifier(check_executable(task_class))
        other = self.tasks.get(identifier)
        if other is not None:
            detail = f": {other.__qualname__} and {task_class.__qualname__}"
            raise duplicate_identifier(identifier, detail)
        self.tasks[identifier] = task_class

    def identifiers(self) -> list[TaskIdentifier]:
        return sorted(self.tasks)

    def __repr__(self) -> str:
        return f"Runner(tasks={[str(i) for i in self.identifiers()]})"
