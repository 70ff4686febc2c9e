"""What a failed task keeps of its error: type, message and the end of its traceback, without the
runner's own frames (which every failure shares and no task author needs)."""

from __future__ import annotations

import asyncio
import traceback
from pathlib import Path

from tilebox_core.domain.tasks import MAX_ERROR_MESSAGE, TaskError, bounded_traceback

# Frames of these directories are the runner's, not the task's: left out of tracebacks.
_RUNNER = str(Path(__file__).resolve().parent)
_ASYNCIO = str(Path(asyncio.__file__).resolve().parent)


def task_error(exc: BaseException) -> TaskError:
    """The TaskError of ``exc``, raised by a task's ``execute``."""
    kind = type(exc)
    module = kind.__module__
    name = (
        kind.__qualname__ if module in ("builtins", "__main__") else f"{module}.{kind.__qualname__}"
    )
    return TaskError(name, str(exc)[:MAX_ERROR_MESSAGE], bounded_traceback(_traceback(exc)))


def _traceback(exc: BaseException) -> str:
    summary = traceback.TracebackException.from_exception(exc)
    summary.stack = traceback.StackSummary.from_list(
        [frame for frame in summary.stack if not frame.filename.startswith((_RUNNER, _ASYNCIO))]
    )
    return "".join(summary.format()).rstrip("\n")
