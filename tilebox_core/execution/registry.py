"""``Runner``: the task classes a workflow project provides, with the job cache and runner context
they run with; what ``tilebox.workflow.toml`` names, and what ``connect_to`` makes a direct
runner of (as Tilebox's ``tilebox.workflows.Runner``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar

from tilebox_core.cache import JobCache
from tilebox_core.domain.identifiers import TaskIdentifier, duplicate_identifier
from tilebox_core.task import RunnerContext, Task, check_executable, task_identifier

R = TypeVar("R", covariant=True)


class RunnerFactory(Protocol[R]):
    """What ``connect_to`` connects to: a ``Client`` (typed here without importing it)."""

    def runner(self, cluster: str | None = None, *, runner: Runner | None = None) -> R: ...


class Runner:
    """A registry of task classes, keyed by identifier; duplicate identifiers are refused.

    ``cache`` and ``context`` are what runners made from it use (``connect_to`` for a direct
    runner; a release runner for the release that names it): the job cache, and the
    ``RunnerContext`` subclass of which each runner makes its one instance.
    """

    def __init__(
        self,
        tasks: Iterable[type[Task]] = (),
        *,
        cache: JobCache | None = None,
        context: type[RunnerContext] | None = None,
    ) -> None:
        if context is not None and not (
            isinstance(context, type) and issubclass(context, RunnerContext)
        ):
            raise TypeError(
                f"context must be a subclass of tilebox_core.RunnerContext (the class, not an "
                f"instance), got {context!r}"
            )
        self.tasks: dict[TaskIdentifier, type[Task]] = {}
        self.cache = cache
        self.context = context
        for task_class in tasks or ():
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

    @property
    def task_identifiers(self) -> list[TaskIdentifier]:
        """As Tilebox's ``Runner.task_identifiers``."""
        return self.identifiers()

    def connect_to(self, client: RunnerFactory[R], cluster: str | None = None) -> R:
        """A direct runner of these tasks (with this cache and context) on ``client``'s
        ``cluster`` (default: the client's); ``.run_all()`` or ``.run_forever()`` it."""
        return client.runner(cluster, runner=self)

    def __repr__(self) -> str:
        return f"Runner(tasks={[str(i) for i in self.identifiers()]})"
