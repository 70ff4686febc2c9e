"""``Runner``: the set of task classes a workflow project provides; what ``tilebox.workflow.toml`` names."""

from __future__ import annotations

from collections.abc import Iterable

from tilebox_core.errors import InvalidInput
from tilebox_core.identifiers import TaskIdentifier
from tilebox_core.task import Task, task_identifier


class Runner:
    """A registry of task classes, keyed by identifier; duplicate identifiers are refused."""

    def __init__(self, tasks: Iterable[type[Task]]) -> None:
        by_identifier: dict[TaskIdentifier, type[Task]] = {}
        for task_class in tasks:
            identifier = task_identifier(task_class)
            if identifier in by_identifier:
                other = by_identifier[identifier]
                raise InvalidInput(
                    f"duplicate task identifier {identifier}: {other.__qualname__} and "
                    f"{task_class.__qualname__}; give each task its own name or version"
                )
            by_identifier[identifier] = task_class
        self.tasks: dict[TaskIdentifier, type[Task]] = by_identifier

    def identifiers(self) -> list[TaskIdentifier]:
        return sorted(self.tasks)

    def __repr__(self) -> str:
        return f"Runner(tasks={[str(i) for i in self.identifiers()]})"
