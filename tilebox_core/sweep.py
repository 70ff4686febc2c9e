"""``Sweeper``: the background duty that removes a team's expired jobs (``Jobs.expire``).

Release runners run it on an interval (``tilebox runner start --sweep-interval``); a lease in the
team's control slot (``Keys.sweep_lease``) makes one runner of the team do it at a time, and
passes to another when that runner stops renewing it. This is the sweep's one call site: the
archiver, once it exists, owns it (the sweep itself is safe anywhere, any number of times).
"""

from __future__ import annotations

import math
import time

import structlog

from tilebox_core.domain.errors import TileboxError

from .redis.archivelog import ArchiveLog
from .session import Session

log = structlog.get_logger(__name__)

SWEEP_SECONDS = 60.0  # how often a runner sweeps
# Jobs removed per tick at most (about a quarter of a second's work): a runner's loop is not held
# up for long. A tick that removed this many sweeps again on the next turn of the loop instead of
# an interval later, so a busy team's runners keep up with a backlog.
SWEEP_LIMIT = 10_000


class Sweeper:
    def __init__(
        self, client: Session, owner: str, interval: float = SWEEP_SECONDS,
        limit: int = SWEEP_LIMIT,
    ) -> None:  # fmt: skip
        self.client = client
        self.owner = owner
        self.interval = interval
        self.limit = limit
        # held a little longer than between two sweeps, so it does not lapse while its holder
        # lives; a holder that died lets another runner take over after it
        self.lease_ms = max(1, math.ceil(3 * interval)) * 1000
        self._next = 0.0

    def tick(self) -> int:
        """Sweep if one is due and this runner holds (or takes) the lease; how many jobs were
        removed. A failure is logged, not raised: the next tick tries again."""
        now = time.monotonic()
        if self.interval <= 0 or now < self._next:
            return 0
        self._next = now + self.interval
        from .jobs import Jobs  # (jobs imports session; a sweeper is made by runners)

        try:
            lease = self.client.store.keys.sweep_lease
            if not ArchiveLog(self.client.store).take_lease(lease, self.owner, self.lease_ms):
                return 0
            removed = Jobs(self.client).expire(limit=self.limit)
        except TileboxError as exc:
            log.warning("sweep failed", error=str(exc))
            return 0
        if removed:
            log.info("expired jobs removed", jobs=removed)
        if removed >= self.limit:  # a backlog: on with it at the next tick
            self._next = time.monotonic()
        return removed
