"""The runners' ``ExecutionContext``: what a running task submits, reports and logs."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from tilebox_core.cache import JobCache, LocalFileSystemCache
from tilebox_core.domain.errors import InvalidInput
from tilebox_core.domain.ids import subtask_id
from tilebox_core.task import (
    CurrentTask,
    ExecutionContext,
    FutureTask,
    ProgressIndicator,
    RunnerContext,
    Task,
    task_identifier,
)
from tilebox_core.tracing import current_tracer

from .tasklogs import TaskLogs

# Indicators one task may report to, as Tilebox limits them: each is a field of the job's hash.
MAX_PROGRESS_INDICATORS = 1000


class SubtaskRequest:
    def __init__(
        self, handle: FutureTask, depends_on: list[str], cluster: str | None,
        max_retries: int, optional: bool,
    ) -> None:  # fmt: skip
        self.handle = handle
        self.depends_on = depends_on
        self.cluster = cluster
        self.max_retries = max_retries
        self.optional = optional


class TaskContext(ExecutionContext):
    """The context of one execution of one task; collects its subtasks and progress."""

    def __init__(
        self, current_task: CurrentTask, cache: JobCache | Path, runner_id: str = "",
        runner_context: RunnerContext | None = None, logs: TaskLogs | None = None,
    ) -> None:  # fmt: skip
        self.current_task = current_task
        self._logs = logs  # where what it logs is kept (its job's task log), if anywhere
        # the runner's cache (a Path: a local cache there); the job's group is made on first use
        self._cache = LocalFileSystemCache(cache) if isinstance(cache, Path) else cache
        self._runner_id = runner_id
        self._runner_context = runner_context
        self._subtasks: list[SubtaskRequest] = []
        self._progress: dict[str, ProgressIndicator] = {}

    @functools.cached_property
    def job_cache(self) -> JobCache:
        """This job's group of the runner's cache; built on first use, like ``logger``."""
        return self._cache.group(self.current_task.job_id)

    @property
    def runner_context(self) -> RunnerContext:
        if self._runner_context is None:  # a context made outside a runner (tests)
            self._runner_context = RunnerContext()
        return self._runner_context

    @functools.cached_property
    def logger(self) -> Any:
        """Built on first use: most tasks never log, and binding costs more than a no-op task."""
        task = self.current_task
        if self._logs is not None:
            return self._logs.logger(task, self._runner_id)
        return structlog.get_logger("tilebox.task").bind(
            job_id=task.job_id, task_id=task.id, task=task.name, runner_id=self._runner_id
        )

    @property
    def tracer(self) -> Any:
        """The tracer of the runner executing this task (a no-op one when it does not trace)."""
        return current_tracer()

    def submit_subtask(
        self,
        task: Task,
        depends_on: Sequence[FutureTask] | FutureTask | None = None,
        cluster: str | None = None,
        max_retries: int = 0,
        optional: bool = False,
    ) -> FutureTask:
        return self.submit_subtasks([task], depends_on, cluster, max_retries, optional)[0]

    def submit_subtasks(
        self,
        tasks: Sequence[Task],
        depends_on: Sequence[FutureTask] | FutureTask | None = None,
        cluster: str | None = None,
        max_retries: int = 0,
        optional: bool = False,
    ) -> list[FutureTask]:
        """Several subtasks sharing the same options (checked once, not per task)."""
        for task_class in {type(t) for t in tasks}:
            task_identifier(
                task_class
            )  # validates the class and its identifier now, not at the end
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise InvalidInput(f"max_retries must be an int >= 0, got {max_retries!r}")
        deps = [depends_on] if isinstance(depends_on, FutureTask) else list(depends_on or [])
        for dep in deps:
            if not isinstance(dep, FutureTask) or dep._owner is not self:
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

    def progress(self, label: str | None = None) -> ProgressIndicator:
        key = label or ""  # None and "" are the default indicator, as in Tilebox
        indicator = self._progress.get(key)
        if indicator is None:
            if not isinstance(key, str):
                raise TypeError(f"a progress label is a str, got {label!r}")
            if len(self._progress) >= MAX_PROGRESS_INDICATORS:
                raise InvalidInput(
                    f"a task reports to at most {MAX_PROGRESS_INDICATORS} progress indicators"
                )
            indicator = self._progress[key] = ProgressIndicator(label or None)
        return indicator

    @property
    def subtasks(self) -> list[SubtaskRequest]:
        return list(self._subtasks)

    def progress_deltas(self) -> dict[str, list[int]]:
        """label ("" for the default) -> [done, total] added by this run, where not both 0."""
        return {
            label: [p._done, p._total] for label, p in self._progress.items() if p._done or p._total
        }
