"""``Runner``: the set of task classes a workflow project provides; what ``tilebox.workflow.toml`` names."""

from __future__ import annotations

from collections.abc import Iterable

from tilebox_core.domain.errors import InvalidInput
from tilebox_core.domain.identifiers import TaskIdentifier
from tilebox_core.task import Task, task_identifier


class Runner:
    """A registry of task classes, keyed by identifier; duplicate identifiers are refused."""

    def __init__(self, tasks: Iterable[type[Task]] = ()) -> None:
        self.tasks: dict[TaskIdentifier, type[Task]] = {}
        for task_class in tasks:
            self.register(task_class)

    def register(self, task_class: type[Task]) -> None:
        """Add a task class; its identifier must not be registered yet."""
        identifier = task_identifier(task_class)
        other = self.tasks.get(identifier)
        if other is not None:
            raise InvalidInput(
                f"duplicate task identifier {identifier}: {other.__qualname__} and "
                f"{task_class.__qualname__}; give each task its own name or version"
            )
        self.tasks[identifier] = task_class

    def identifiers(self) -> list[TaskIdentifier]:
        return sorted(self.tasks)

    def __repr__(self) -> str:
        return f"Runner(tasks={[str(i) for i in self.identifiers()]})"
