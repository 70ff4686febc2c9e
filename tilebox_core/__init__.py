"""tilebox_core: workflow releases, cluster deployments and jobs, event-sourced on Redis Streams."""

from .cache import (
    AmazonS3Cache,
    AzureBlobStorageCache,
    GoogleStorageCache,
    InMemoryCache,
    JobCache,
    LocalFileSystemCache,
    ObstoreCache,
)
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
    PermissionDenied,
    StoreUnavailable,
    TileboxError,
)
from .domain.events import Event, ReleaseTask
from .domain.identifiers import TaskIdentifier
from .domain.intervals import IDInterval, TimeInterval
from .domain.jobs import ExecutionStats, Job, Progress, TaskInfo
from .domain.projection import Cluster, ClusterLike, Release, Workflow
from .domain.tasklogs import TaskLogLine
from .domain.tasks import JobState, TaskState
from .domain.tenancy import Credential, Role, TeamChange, TeamStatus, UserStatus
from .execution.registry import Runner
from .execution.worker import TaskRunner
from .jobs import JobIDLike, Jobs
from .redis.server import EmbeddedServer, ServerStatus
from .settings import Settings
from .task import (
    ExecutionContext,
    FutureTask,
    ProgressIndicator,
    RunnerContext,
    Task,
    TaskDefinitionError,
)
from .teams import Teams

__all__ = [
    "AmazonS3Cache",
    "ArtifactError",
    "AzureBlobStorageCache",
    "Client",
    "Cluster",
    "ClusterLike",
    "Clusters",
    "ConcurrencyError",
    "Conflict",
    "Credential",
    "DeployChange",
    "DeployPlan",
    "Deployments",
    "EmbeddedServer",
    "Event",
    "ExecutionContext",
    "ExecutionStats",
    "FutureTask",
    "GoogleStorageCache",
    "History",
    "IDInterval",
    "InMemoryCache",
    "Incompatible",
    "InvalidInput",
    "Job",
    "JobCache",
    "JobIDLike",
    "JobState",
    "Jobs",
    "LocalFileSystemCache",
    "NotFound",
    "ObstoreCache",
    "PermissionDenied",
    "Progress",
    "ProgressIndicator",
    "PublishResult",
    "Release",
    "ReleaseTask",
    "Role",
    "Runner",
    "RunnerContext",
    "ServerStatus",
    "Settings",
    "StoreUnavailable",
    "Task",
    "TaskDefinitionError",
    "TaskIdentifier",
    "TaskInfo",
    "TaskLogLine",
    "TaskRunner",
    "TaskState",
    "TeamChange",
    "TeamStatus",
    "Teams",
    "TileboxError",
    "TimeInterval",
    "UserStatus",
    "Workflow",
    "Workflows",
    "job_diagram",
    "position_time",
]
