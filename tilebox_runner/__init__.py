"""Task runners: the ``Runner`` registry a workflow project exports, and the processes that execute tasks."""

from .registry import Runner
from .worker import TaskRunner

__all__ = ["Runner", "TaskRunner"]
