"""Identifiers and the clock, kept in one place so that pure rules can take them as arguments."""

from __future__ import annotations

import datetime as _dt
import functools

from uuid_utils import NAMESPACE_URL, UUID, uuid5, uuid7


def new_id() -> str:
    """A time-ordered UUIDv7 as text: sortable, unique across processes and machines."""
    return str(uuid7())


def subtask_id(parent_id: str, index: int) -> str:
    """The id of the ``index``-th subtask a run of task ``parent_id`` submits: the same every time
    the parent runs, so a parent run again after its runner died while submitting (see stage.lua)
    creates each subtask once."""
    return str(uuid5(_namespace(parent_id), str(index)))


@functools.lru_cache(maxsize=256)
def _namespace(parent_id: str) -> UUID:
    try:
        return UUID(parent_id)
    except ValueError:  # not a UUID: ids of other origins still derive distinct ids
        return uuid5(NAMESPACE_URL, parent_id)


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def id_time_ms(value: str) -> int | None:
    """The time (ms since the epoch) a UUIDv7 id was made, None if ``value`` is not one."""
    import uuid

    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return None
    return parsed.int >> 80 if parsed.version == 7 else None
