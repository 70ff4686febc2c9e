"""tilebox_core: workflow releases, cluster deployments and jobs, event-sourced on Redis Streams."""

from .client import Client, Clusters, Deployments, History, PublishResult, Workflows
from .context import ExecutionContext, FutureTask, JobCache, ProgressIndicator
from .control import DeployChange, DeployPlan
from .errors import (
    ArtifactError,
    ConcurrencyError,
    Conflict,
    Incompatible,
    InvalidInput,
    NotFound,
    StoreUnavailable,
    TileboxError,
)
from .events import Event, ReleaseTask
from .identifiers import TaskIdentifier
from .jobs import Job, Jobs, Progress, TaskInfo
from .projection import Cluster, Release, Workflow
from .server import EmbeddedServer
from .task import Task

__all__ = [
    "ArtifactError",
    "Client",
    "Cluster",
    "Clusters",
    "ConcurrencyError",
    "Conflict",
    "DeployChange",
    "DeployPlan",
    "Deployments",
    "EmbeddedServer",
    "ExecutionContext",
    "FutureTask",
    "Event",
    "History",
    "Incompatible",
    "InvalidInput",
    "Job",
    "JobCache",
    "Jobs",
    "NotFound",
    "Progress",
    "ProgressIndicator",
    "PublishResult",
    "Release",
    "ReleaseTask",
    "StoreUnavailable",
    "Task",
    "TaskInfo",
    "TaskIdentifier",
    "TileboxError",
    "Workflow",
    "Workflows",
]
