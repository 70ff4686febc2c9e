"""Temporal extents of a job query, as Tilebox's ``jobs().query(temporal_extent)``: a time
interval of submission times, or an interval of job ids (UUIDv7, so also of time). Pure."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from typing import Any, TypeAlias

import msgspec

from .errors import InvalidInput

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class TimeInterval(msgspec.Struct, frozen=True):
    """From ``start`` to ``end``; by default half-open, ``[start, end)``. Naive datetimes are UTC."""

    start: dt.datetime
    end: dt.datetime
    start_exclusive: bool = False
    end_inclusive: bool = False

    def __post_init__(self) -> None:
        for moment in (self.start, self.end):
            if not isinstance(moment, dt.datetime):
                raise InvalidInput(f"a time interval's start and end are datetimes, got {moment!r}")
        if self.start.tzinfo is None:
            msgspec.structs.force_setattr(self, "start", self.start.replace(tzinfo=dt.UTC))
        if self.end.tzinfo is None:
            msgspec.structs.force_setattr(self, "end", self.end.replace(tzinfo=dt.UTC))

    def contains(self, moment: dt.datetime) -> bool:
        after_start = moment > self.start if self.start_exclusive else moment >= self.start
        before_end = moment <= self.end if self.end_inclusive else moment < self.end
        return after_start and before_end

    def bounds_ms(self) -> tuple[float, float]:
        """Whole milliseconds that include every moment of the interval (a superset)."""
        ms = dt.timedelta(milliseconds=1)
        return math.floor((self.start - _EPOCH) / ms), math.ceil((self.end - _EPOCH) / ms)


def between(since: dt.datetime | None, until: dt.datetime | None) -> TimeInterval | None:
    """``[since, until]``, either end open when None; None when both are (any time)."""
    if since is None and until is None:
        return None
    return TimeInterval(
        since or dt.datetime.min.replace(tzinfo=dt.UTC),
        until or dt.datetime.max.replace(tzinfo=dt.UTC),
        end_inclusive=True,
    )


class IDInterval(msgspec.Struct, frozen=True):
    """Job ids from ``start_id`` to ``end_id``; by default both included, as Tilebox's."""

    start_id: uuid.UUID
    end_id: uuid.UUID
    start_exclusive: bool = False
    end_inclusive: bool = True

    def contains(self, job_id: str) -> bool:
        try:
            value = uuid.UUID(job_id)
        except ValueError:
            return False
        after_start = value > self.start_id if self.start_exclusive else value >= self.start_id
        before_end = value <= self.end_id if self.end_inclusive else value < self.end_id
        return after_start and before_end

    def bounds_ms(self) -> tuple[float, float]:
        """Submission-time bounds (ms) of the jobs whose ids are in the interval, when the ids are
        UUIDv7: a job's id is made after its submission time is stamped, by at most the time its
        submit call takes; an hour is a bound no submission nears. Else: no bounds."""
        if self.start_id.version != 7 or self.end_id.version != 7:
            return float("-inf"), float("inf")
        return _v7_ms(self.start_id) - 3_600_000, _v7_ms(self.end_id) + 1


def _v7_ms(value: uuid.UUID) -> int:
    return value.int >> 80  # UUIDv7: the first 48 bits are milliseconds since the epoch


TemporalExtent: TypeAlias = (
    "TimeInterval | IDInterval | dt.datetime | str | tuple[Any, Any] | list[Any]"
)
"""What ``query(temporal_extent=...)`` takes (Tilebox's ``TimeIntervalLike | IDIntervalLike``)."""


def parse_temporal_extent(value: Any) -> TimeInterval | IDInterval:
    """As Tilebox: an interval as it is; a pair of UUIDs, or of strings that are UUIDs, an ID
    interval [start, end]; a pair of datetimes or ISO 8601 strings [start, end); one datetime or
    string, that moment [t, t]."""
    if isinstance(value, TimeInterval | IDInterval):
        return value
    if isinstance(value, tuple | list) and len(value) == 2:
        start, end = value
        if isinstance(start, uuid.UUID) and isinstance(end, uuid.UUID):
            return IDInterval(start, end)
        if isinstance(start, str) and isinstance(end, str):
            try:
                return IDInterval(uuid.UUID(start), uuid.UUID(end))
            except ValueError:
                pass  # not ids: times
        return TimeInterval(_moment(start), _moment(end))
    if isinstance(value, dt.datetime | dt.date | str):
        moment = _moment(value)
        return TimeInterval(moment, moment, end_inclusive=True)
    raise InvalidInput(
        f"cannot use {value!r} as a temporal extent: pass a datetime or ISO 8601 string, a pair "
        "of them (start, end), a pair of job ids, or a TimeInterval or IDInterval"
    )


def _moment(value: Any) -> dt.datetime:
    """A datetime (naive: UTC) from a datetime, a date (its midnight, UTC) or an ISO 8601 string."""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise InvalidInput(
                f"invalid time {value!r}: use ISO 8601, e.g. '2025-01-01' or '2025-01-01T12:00:00Z'"
            ) from None
    else:
        raise InvalidInput(f"invalid time {value!r}: use a datetime or an ISO 8601 string")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)
