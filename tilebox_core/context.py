"""What a running task sees: ``ExecutionContext`` (subtasks, progress, logger, job cache)."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import structlog

from .errors import InvalidInput
from .ids import subtask_id
from .task import Task, task_identifier


class FutureTask:
    """Handle of a subtask submitted in this ``execute`` call, for use in ``depends_on``."""

    def __init__(self, context: ExecutionContext, index: int, task_id: str, task: Task) -> None:
        self._context = context
        self.index = index
        self.id = task_id
        self.task = task

    def __repr__(self) -> str:
        return f"FutureTask({type(self.task).__name__}, id={self.id})"


class SubtaskRequest:
    def __init__(
        self, handle: FutureTask, depends_on: list[str], cluster: str | None,
        max_retries: int | None, optional: bool,
    ) -> None:  # fmt: skip
        self.handle = handle
        self.depends_on = depends_on
        self.cluster = cluster
        self.max_retries = max_retries
        self.optional = optional


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


class JobCache:
    """Bytes shared by the tasks of one job; on the local filesystem by default."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if not key or key.startswith(("/", ".")) or ".." in key.split("/"):
            raise InvalidInput(f"invalid job cache key {key!r}: use a relative name like 'scene/42'")
        return self.root / key

    def __setitem__(self, key: str, value: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(value)
        tmp.replace(path)  # atomic: concurrent readers never see half a value

    def __getitem__(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._path(key).is_file()

    def __iter__(self) -> Iterator[str]:
        if not self.root.exists():
            return iter(())
        return iter(
            sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file()
                   and not p.name.endswith(".tmp"))
        )  # fmt: skip

    def group(self, name: str) -> JobCache:
        return JobCache(self._path(name))


class CurrentTask:
    def __init__(self, task_id: str, job_id: str, name: str, version: str, attempt: int) -> None:
        self.id = task_id
        self.job_id = job_id
        self.name = name
        self.version = version
        self.attempt = attempt


class ExecutionContext:
    """Passed to ``Task.execute``. Subtasks are only submitted if ``execute`` returns normally."""

    def __init__(
        self, current_task: CurrentTask, cache_root: Path, max_retries: int = 0,
        runner_id: str = "",
    ) -> None:  # fmt: skip
        self.current_task = current_task
        self._cache_root = cache_root
        self._runner_id = runner_id
        self._max_retries = max_retries
        self._subtasks: list[SubtaskRequest] = []
        self._progress: dict[str, ProgressIndicator] = {}

    @functools.cached_property
    def job_cache(self) -> JobCache:
        """Bytes shared by the tasks of this job (built on first use, like ``logger``)."""
        return JobCache(self._cache_root / self.current_task.job_id)

    @functools.cached_property
    def logger(self) -> Any:
        """A structlog logger bound to the job, task and runner (built on first use: most tasks
        never log, and binding costs more than a no-op task)."""
        task = self.current_task
        return structlog.get_logger("tilebox.task").bind(
            job_id=task.job_id, task_id=task.id, task=task.name, runner_id=self._runner_id
        )

    def submit_subtask(
        self,
        task: Task,
        depends_on: Sequence[FutureTask] | FutureTask | None = None,
        cluster: str | None = None,
        max_retries: int | None = None,
        optional: bool = False,
    ) -> FutureTask:
        return self.submit_subtasks([task], depends_on, cluster, max_retries, optional)[0]

    def submit_subtasks(
        self,
        tasks: Sequence[Task],
        depends_on: Sequence[FutureTask] | FutureTask | None = None,
        cluster: str | None = None,
        max_retries: int | None = None,
        optional: bool = False,
    ) -> list[FutureTask]:
        """Submit several subtasks sharing the same options (checked once, not per task)."""
        for task_class in {type(t) for t in tasks}:
            task_identifier(task_class)  # validates the class and its identifier now, not at the end
        if max_retries is not None and max_retries < 0:
            raise InvalidInput(f"max_retries must be >= 0, got {max_retries}")
        deps = [depends_on] if isinstance(depends_on, FutureTask) else list(depends_on or [])
        for dep in deps:
            if not isinstance(dep, FutureTask) or dep._context is not self:
                names = ", ".join(sorted({type(t).__name__ for t in tasks}))
                raise InvalidInput(
                    f"depends_on of {names} must name subtasks submitted earlier in the same "
                    "execute call"
                )
        dep_ids = [d.id for d in deps]
        handles = []
        for task in tasks:
            index = len(self._subtasks)
            handle = FutureTask(self, index, subtask_id(self.current_task.id, index), task)
            self._subtasks.append(SubtaskRequest(handle, dep_ids, cluster, max_retries, optional))
            handles.append(handle)
        return handles

    def progress(self, label: str = "") -> ProgressIndicator:
        if label not in self._progress:
            self._progress[label] = ProgressIndicator(label)
        return self._progress[label]

    @property
    def subtasks(self) -> list[SubtaskRequest]:
        return list(self._subtasks)

    def progress_deltas(self) -> dict[str, list[int]]:
        return {p.label: [p.done, p.total] for p in self._progress.values() if p.done or p.total}

    @property
    def default_max_retries(self) -> int:
        return self._max_retries
