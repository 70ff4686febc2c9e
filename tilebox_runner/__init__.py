"""Release runners: ``tilebox runner start``, the runtime processes it starts, and the build's
discovery child. ``Runner`` (the registry a workflow project exports) and ``TaskRunner`` (the
claim loop) are the library's, re-exported here for workflow code."""

from tilebox_core.execution.registry import Runner
from tilebox_core.execution.worker import TaskRunner

__all__ = ["Runner", "TaskRunner"]
