"""The Task base class users subclass; task input is a msgspec Struct so it has a JSON schema."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import msgspec

from .errors import InvalidInput
from .identifiers import TaskIdentifier, make_identifier

if TYPE_CHECKING:
    from .context import ExecutionContext


class Task(msgspec.Struct):
    """Base class of every task. Fields are the task's input; ``execute`` does the work.

    Override ``identifier()`` (a staticmethod returning ``(name, "vMAJOR.MINOR")``) to version a task;
    without it the identifier is ``(ClassName, "v0.0")``.
    """

    @classmethod
    def identifier(cls) -> tuple[str, str]:
        return cls.__name__, "v0.0"

    def execute(self, context: ExecutionContext) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError


@functools.cache  # asked once per task submitted and run; a class's identifier never changes
def task_identifier(task_class: type[Task]) -> TaskIdentifier:
    """The validated identifier of a task class."""
    check_task_class(task_class)
    name, version = task_class.identifier()
    return make_identifier(name, version)


def check_task_class(task_class: object) -> None:
    if not (isinstance(task_class, type) and issubclass(task_class, Task)):
        raise InvalidInput(f"{task_class!r} is not a subclass of tilebox_core.Task")
    if task_class.execute is Task.execute:
        raise InvalidInput(f"task class {task_class.__qualname__} does not define execute(context)")


def input_schema(task_class: type[Task]) -> dict[str, Any]:
    """The JSON schema of a task's input fields (used for validation and compatibility checks)."""
    return msgspec.json.schema(task_class)
