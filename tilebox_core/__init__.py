"""tilebox_core: workflow releases, cluster deployments and jobs, event-sourced on Redis Streams."""

from .cache import JobCache
from .client import Client, Clusters, Deployments, History, PublishResult, Workflows, position_time
from .domain.control import DeployChange, DeployPlan
from .domain.diagram import job_diagram
from .domain.errors import (
    ArtifactError,
    ConcurrencyError,
    Conflict,
    Incompatible,
    InvalidInput,
    NotFound,
    StoreUnavailable,
    TileboxError,
)
from .domain.events import Event, ReleaseTask
from .domain.identifiers import TaskIdentifier
from .domain.jobs import Job, Progress, TaskInfo
from .domain.projection import Cluster, Release, Workflow
from .domain.tasklogs import TaskLogLine
from .domain.tasks import JobState, TaskState
from .jobs import Jobs
from .redis.server import EmbeddedServer, ServerStatus
from .settings import Settings
from .task import ExecutionContext, FutureTask, ProgressIndicator, Task

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
    "Event",
    "ExecutionContext",
    "FutureTask",
    "History",
    "Incompatible",
    "InvalidInput",
    "Job",
    "JobCache",
    "JobState",
    "Jobs",
    "NotFound",
    "Progress",
    "ProgressIndicator",
    "PublishResult",
    "Release",
    "ReleaseTask",
    "ServerStatus",
    "Settings",
    "StoreUnavailable",
    "Task",
    "TaskIdentifier",
    "TaskInfo",
    "TaskLogLine",
    "TaskState",
    "TileboxError",
    "Workflow",
    "Workflows",
    "job_diagram",
    "position_time",
]
