"""Identifiers and the clock, kept in one place so that pure rules can take them as arguments."""

from __future__ import annotations

import datetime as _dt

from uuid_utils import uuid7


def new_id() -> str:
    """A time-ordered UUIDv7 as text: sortable, unique across processes and machines."""
    return str(uuid7())


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)
