"""``RunnerHooks``: what observes a runner's work (metrics, tracing, task logs) without being part of
the claim loop.

The worker calls them at a few points only: around each task's execution, when it takes expired
leases over, when the store is unavailable, before it records a batch of results, and when a run
ends. Each observer is one subclass;
``combined`` chains several. A runner with nothing that wraps executions runs each task directly:
the hooks then cost an attribute test per task.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tilebox_core.domain.tasks import ClaimedTask, Finish

Execute = Callable[[ClaimedTask], Finish]


class RunnerHooks:
    """The no-op observer; subclasses override what they observe."""

    # Whether ``execute`` does more than call ``run``: the worker calls ``run`` directly otherwise.
    wraps_execution = False

    def execute(self, task: ClaimedTask, run: Execute) -> Finish:
        """Run ``task`` with ``run`` (the runner's own execution) and return its result."""
        return run(task)

    def took_over(self, count: int) -> None:
        """``count`` deliveries whose leases expired were taken over from other runners."""

    def store_error(self) -> None:
        """A call to the store failed for want of a server (it is retried)."""

    def recording(self) -> None:
        """Results are about to be recorded (the recorder thread): what must be stored before
        them is written now."""

    def run_ended(self) -> None:
        """A run is over (every result recorded): write out what is buffered. Never raises."""


class CombinedHooks(RunnerHooks):
    """Several observers; executions are wrapped by each, the first outermost."""

    def __init__(self, hooks: Sequence[RunnerHooks]) -> None:
        self.hooks = list(hooks)
        self._wrapping = [h for h in self.hooks if h.wraps_execution]
        self.wraps_execution = bool(self._wrapping)
        run: Callable[[ClaimedTask, Execute], Finish] | None = None
        for hook in reversed(self._wrapping):
            run = _chain(hook, run)
        self._execute = run

    def execute(self, task: ClaimedTask, run: Execute) -> Finish:
        return self._execute(task, run) if self._execute is not None else run(task)

    def took_over(self, count: int) -> None:
        for hook in self.hooks:
            hook.took_over(count)

    def store_error(self) -> None:
        for hook in self.hooks:
            hook.store_error()

    def recording(self) -> None:
        for hook in self.hooks:
            hook.recording()

    def run_ended(self) -> None:
        for hook in self.hooks:
            hook.run_ended()


def _chain(
    hook: RunnerHooks, inner: Callable[[ClaimedTask, Execute], Finish] | None
) -> Callable[[ClaimedTask, Execute], Finish]:
    if inner is None:
        return hook.execute

    def execute(task: ClaimedTask, run: Execute) -> Finish:
        return hook.execute(task, lambda t: inner(t, run))

    return execute


def combined(*hooks: RunnerHooks | None) -> RunnerHooks:
    """One observer of ``hooks`` (None left out)."""
    present = [h for h in hooks if h is not None]
    if len(present) == 1:
        return present[0]
    return CombinedHooks(present)
