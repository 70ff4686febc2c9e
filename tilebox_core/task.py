"""What task code sees: the ``Task`` base class and the ``ExecutionContext`` interface.

A task's fields are its input (a msgspec Struct, so it has a JSON schema); ``execute`` does the
work. The context is an interface here; runners pass their own implementation
(``tilebox_core.execution.context``), so task code depends on nothing that talks to Redis.
"""

from __future__ import annotations

import abc
import functools
import sys
from collections.abc import Sequence
from typing import Any

import msgspec

from tilebox_core.cache import JobCache
from tilebox_core.domain.errors import InvalidInput
from tilebox_core.domain.identifiers import TaskIdentifier, make_identifier
from tilebox_core.tracing import NOOP_TRACER


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
    try:
        return make_identifier(name, version)
    except InvalidInput as exc:
        raise InvalidInput(
            f"task class {task_class.__qualname__}{_where(task_class)}: {exc}"
        ) from None


def _where(task_class: type) -> str:
    """ " in FILE" of a class's module, as far as it is known."""
    module = sys.modules.get(task_class.__module__)
    path = getattr(module, "__file__", None)
    return f" in {path}" if path else f" of module {task_class.__module__}"


def check_task_class(task_class: object) -> None:
    if not (isinstance(task_class, type) and issubclass(task_class, Task)):
        raise InvalidInput(f"{task_class!r} is not a subclass of tilebox_core.Task")
    if task_class.execute is Task.execute:
        raise InvalidInput(f"task class {task_class.__qualname__} does not define execute(context)")


def input_schema(task_class: type[Task]) -> dict[str, Any]:
    """The JSON schema of a task's input fields (used for validation and compatibility checks)."""
    return msgspec.json.schema(task_class)


class CurrentTask:
    """The task being executed: its id, job, identifier and attempt (1 for the first run)."""

    def __init__(self, task_id: str, job_id: str, name: str, version: str, attempt: int) -> None:
        self.id = task_id
        self.job_id = job_id
        self.name = name
        self.version = version
        self.attempt = attempt


class FutureTask:
    """Handle of a subtask submitted in this ``execute`` call, for use in ``depends_on``."""

    def __init__(self, owner: object, index: int, task_id: str, task: Task) -> None:
        self._owner = owner  # the context that made it: dependencies stay within one call
        self.index = index
        self.id = task_id
        self.task = task

    def __repr__(self) -> str:
        return f"FutureTask({type(self.task).__name__}, id={self.id})"


class ProgressIndicator:
    """A named counter of work done out of a total, summed over all tasks of the job."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.done = 0
        self.total = 0

    def add(self, done: int = 1) -> None:
        self.done += done

    def add_total(self, total: int) -> None:
        self.total += total


class ExecutionContext(abc.ABC):
    """Passed to ``Task.execute``. Subtasks are only submitted if ``execute`` returns normally."""

    current_task: CurrentTask

    @property
    @abc.abstractmethod
    def job_cache(self) -> JobCache:
        """Bytes shared by the tasks of this job."""

    @property
    @abc.abstractmethod
    def logger(self) -> Any:
        """A structlog logger bound to the job, task and runner."""

    @property
    def tracer(self) -> Any:
        """An OpenTelemetry tracer for the task's own spans, children of the span of its execution
        (``with context.tracer.start_as_current_span("download"): ...``); a tracer that does
        nothing when tracing is off."""
        return NOOP_TRACER

    @abc.abstractmethod
    def submit_subtask(
        self,
        task: Task,
        depends_on: Sequence[FutureTask] | FutureTask | None = None,
        cluster: str | None = None,
        max_retries: int | None = None,
        optional: bool = False,
    ) -> FutureTask:
        """Submit a subtask, run once this task has completed (and ``depends_on`` have)."""

    @abc.abstractmethod
    def submit_subtasks(
        self,
        tasks: Sequence[Task],
        depends_on: Sequence[FutureTask] | FutureTask | None = None,
        cluster: str | None = None,
        max_retries: int | None = None,
        optional: bool = False,
    ) -> list[FutureTask]:
        """Submit several subtasks sharing the same options."""

    @abc.abstractmethod
    def progress(self, label: str = "") -> ProgressIndicator:
        """The job's progress indicator ``label``."""
