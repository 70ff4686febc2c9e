"""Driver errors, translated where they enter: each redis-py exception class becomes one of the
project's errors, with one line that says what happened and what to do.

redis-py parses the first word of an error reply into an exception class and strips it from the
message (``OOM command not allowed ...`` arrives as ``OutOfMemoryError("command not allowed ...")``),
so the class, not the text, says what the server meant.
"""

from __future__ import annotations

import re
from urllib.parse import urlparse

import redis
from redis import exceptions as rex

from tilebox_core.domain.errors import (
    ConcurrencyError,
    PermissionDenied,
    StoreUnavailable,
    TileboxError,
)
from tilebox_core.domain.tenancy import Identity, denied

URL_ENV = "TILEBOX_REDIS_URL"

# A script's own command refused by the ACL comes back as a plain ERR reply without the NOPERM
# code; Valkey and Redis 7 word it differently.
_SCRIPT_ACL = (
    "ACL failure in script",
    "The user executing the script can't run this command",
    "The user executing the script can't access at least one of the keys",  # Redis 7.0
)
# Replies of a Redis Cluster node to a command for a slot it does not serve (or cannot serve now).
_REDIRECTED = (rex.AskError, rex.ClusterCrossSlotError)
# ... and of a cluster that cannot serve a slot now: failing over, or slots unassigned.
_CLUSTER_DOWN = (rex.ClusterDownError, rex.TryAgainError)
# Errors of the cluster client itself (not RedisError subclasses): no node serves a slot, the
# topology cannot be read.
DriverError = (redis.RedisError, rex.RedisClusterException, OSError)
# What the store methods that a role may be refused do, for a refusal's message (by method name).
OPERATIONS = {
    "append": "appending to the control log",
    "put_artifact": "uploading an artifact",
    "submit_jobs": "submitting jobs",
    "fix_shards": "writing the task plane",
    "ensure_lanes": "creating task lanes",
    "claim": "claiming tasks",
    "finish_many": "finishing tasks",
    "_stage": "creating subtasks",
    "retry": "retrying a job",
    "cancel": "cancelling a job",
    "renew": "renewing task leases",
    "heartbeat": "recording a runner's heartbeat",
    "remove": "removing a runner's record",
    "remove_jobs": "removing jobs",
    "due": "reading the jobs due for removal",
    "removals": "reading jobs",
    "save_checkpoint": "saving a checkpoint",
    "read_begin": "reading task lanes",
    "receive": "reading task lanes",
    "take_over": "taking over expired tasks",
    "_xrange": "reading an event log",
    "last_position_of": "reading an event log",
    "wait": "waiting for events",
    "wait_streams": "waiting for events",
    "deployments": "reading the deployments",
    "has_artifact": "reading an artifact",
    "get_artifact": "downloading an artifact",
    "jobs": "reading jobs",
    "job_ids": "listing jobs",
    "tasks": "reading tasks",
    "task_ids_of": "reading a job's tasks",
    "live": "reading the runners",
    "_live_page": "reading an event log",
    "record": "reading the archive records",
    "snapshot": "reading the control log's archived snapshot",
    "intend": "recording an archive segment",
    "commit": "recording an archive segment",
    "trim": "trimming an archived log",
    "take_lease": "taking the archiver's lease",
    "release_lease": "giving up the archiver's lease",
}


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def translated(
    exc: redis.RedisError | rex.RedisClusterException | OSError,
    url: str | None = None,
    *,
    connecting: bool = False,
    identity: Identity | None = None,
    operation: str | None = None,
) -> TileboxError:
    """The project's error for driver error ``exc``; ``url`` (if known) names the server, and
    ``connecting`` says the server was never reached (rather than lost). A refusal by the ACL
    names ``identity`` (who the session is connected as) and ``operation`` (what was refused)
    when they are known."""
    where = f"Redis at {redacted(url)}" if url else "Redis"
    text = str(exc)
    if isinstance(exc, rex.ResponseError):
        if text.startswith("CONCURRENCY "):  # our own scripts' refusal of a stale writer
            return ConcurrencyError(text.removeprefix("CONCURRENCY "))
        if isinstance(exc, rex.OutOfMemoryError):
            return StoreUnavailable(
                f"{where} is out of memory and refuses writes (maxmemory reached, policy "
                "noeviction): raise maxmemory or free memory on the server, then retry"
            )
        if isinstance(exc, rex.NoPermissionError) or text.startswith(_SCRIPT_ACL):
            if identity is not None and identity.member is not None:
                return PermissionDenied(f"{where}: {denied(identity, operation or 'this')}")
            return PermissionDenied(
                f"{where} refuses this to the connected user ({text}): grant that user the team's "
                f"keys and commands in its ACL, or connect as another user in {URL_ENV}"
            )
        if isinstance(exc, rex.ReadOnlyError):
            return StoreUnavailable(
                f"{where} is a read-only replica: point {URL_ENV} at its primary"
            )
        if isinstance(exc, _CLUSTER_DOWN):
            return StoreUnavailable(
                f"{where}: the cluster cannot serve this key now ({text}): a master is failing "
                "over or slots are unassigned; retry in a moment"
            )
        if isinstance(exc, _REDIRECTED):
            return StoreUnavailable(
                f"{where} redirected the command to another node ({text}): this is a Redis "
                "Cluster: connect with a cluster URL"
            )
        if isinstance(exc, rex.NoScriptError):
            return StoreUnavailable(
                f"{where} no longer has a script this command needs (flushed, or restarted "
                "without persistence): retry the command"
            )
        return StoreUnavailable(f"{where} answered an error: {text}")
    if isinstance(exc, rex.RedisClusterException):
        return StoreUnavailable(
            f"{where}: the cluster cannot serve this now ({text or type(exc).__name__}): a master "
            "is failing over or slots are unassigned; retry in a moment"
        )
    if isinstance(exc, rex.BusyLoadingError):
        return StoreUnavailable(f"{where} is loading its data into memory: retry in a moment")
    if isinstance(exc, (rex.AuthenticationError, rex.AuthorizationError)):
        if url is not None and urlparse(url).password is None:
            return StoreUnavailable(
                f"{where} requires authentication: put the password in {URL_ENV}, "
                "e.g. redis://:PASSWORD@host:6379"
            )
        return StoreUnavailable(
            f"{where} refused authentication: check the user and password in {URL_ENV}"
        )
    if connecting:
        return StoreUnavailable(f"cannot reach {where} ({text}): start it, or fix {URL_ENV}")
    return StoreUnavailable(
        f"lost the connection to {where}: {text}; check that the server runs and is reachable"
    )
