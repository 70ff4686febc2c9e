"""tilebox_core: workflow releases, cluster deployments and jobs, event-sourced on Redis Streams."""

from .client import Client, Clusters, Deployments, History, PublishResult, Workflows
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
    "Event",
    "History",
    "Incompatible",
    "InvalidInput",
    "NotFound",
    "PublishResult",
    "Release",
    "ReleaseTask",
    "StoreUnavailable",
    "Task",
    "TaskIdentifier",
    "TileboxError",
    "Workflow",
    "Workflows",
]
