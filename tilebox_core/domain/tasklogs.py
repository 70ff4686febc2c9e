"""What tasks log, as kept per job: the lines, and the bound on what one execution keeps. Pure."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

# What one task execution keeps of what it logs; the rest is counted, as dropped.
MAX_LINES = 1000
MAX_BYTES = 64 * 1024  # of messages and their fields, as stored


class TaskLogLine(msgspec.Struct, frozen=True):
    """A line a task logged (``context.logger``), or, with ``dropped``, a note that this many
    more lines of the execution were dropped (it logged more than MAX_LINES or MAX_BYTES)."""

    task_id: str
    attempt: int  # 1 for the task's first run
    at: dt.datetime
    level: str
    message: str
    fields: dict[str, Any] = {}
    runner_id: str = ""
    dropped: int = 0


class LogBound:
    """How much of one execution's logging is kept: lines are kept while both bounds hold, and
    counted as dropped after."""

    def __init__(self, max_lines: int = MAX_LINES, max_bytes: int = MAX_BYTES) -> None:
        self.max_lines, self.max_bytes = max_lines, max_bytes
        self.lines = self.bytes = self.dropped = 0

    def admit(self, size: int) -> bool:
        """Whether a line of ``size`` bytes is kept (and counted); else it is counted dropped."""
        if self.lines < self.max_lines and self.bytes + size <= self.max_bytes:
            self.lines += 1
            self.bytes += size
            return True
        self.dropped += 1
        return False
