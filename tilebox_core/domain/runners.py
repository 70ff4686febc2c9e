"""Runners as the control plane sees them: who serves a cluster, with which releases."""

from __future__ import annotations

import datetime as dt

import msgspec

HEARTBEAT_SECONDS = 2.0
DEAD_AFTER_SECONDS = 10.0


class ReleaseStatus(msgspec.Struct, frozen=True):
    release_id: str
    workflow: str
    status: str  # loading | running | failed | draining
    error: str = ""
    restarts: int = 0


class RunnerInfo(msgspec.Struct, frozen=True):
    id: str
    host: str
    pid: int
    cluster: str
    started_at: dt.datetime
    last_heartbeat: dt.datetime
    releases: list[ReleaseStatus] = []
