"""``Session``: one team's connection, its stores, its actor and its control-plane projection.

Each control-plane write reads the current projection, asks a pure rule in ``domain.control`` for
the events, and appends them with the projection's position; a concurrent writer makes the append
fail and the whole decision is retried on fresh state, so decisions are never made on stale data.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tilebox_core import retries
from tilebox_core.domain import control
from tilebox_core.domain.errors import ConcurrencyError, InvalidInput
from tilebox_core.domain.events import Event, Origin
from tilebox_core.domain.ids import new_id, utcnow
from tilebox_core.domain.projection import ControlState, decode_state, fold
from tilebox_core.domain.tenancy import Identity, Role, parse_user, user_name
from tilebox_core.redis.acl import whoami
from tilebox_core.redis.archivelog import ArchiveLog
from tilebox_core.redis.connection import connect, resolve_url
from tilebox_core.redis.eventstore import CONTROL, EventStore, Stored
from tilebox_core.redis.keys import Keys
from tilebox_core.redis.liveness import RunnerRegistry
from tilebox_core.redis.server import EmbeddedServer
from tilebox_core.redis.taskstore import TaskStore
from tilebox_core.settings import Settings

from .archive import ObjectArchive

T = TypeVar("T")
MAX_RETRIES = 200  # of a decision that lost the race to another writer
CONFLICT_BASE, CONFLICT_CAP = 0.001, 0.05  # seconds: the backoff between those retries
DEFAULT_USER = "default"  # Redis's user of unauthenticated connections: ACLs are off


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"user:{user}@{socket.gethostname()}"


class Session:
    """A connection to one team's state.

    ``settings`` default to ``Settings.from_env()`` (``TILEBOX_REDIS_URL``, else the embedded
    server; team ``TILEBOX_TEAM``, else "default"); the other arguments override single settings.
    ``self.settings`` are those the session runs with, its URL resolved. On the embedded server
    the session logs in as the team's developer when the server has its credentials, else (or
    with ``admin``) as the server's admin; a URL carries its own credentials.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        team: str | None = None,
        prefix: str | None = None,
        actor: str | None = None,
        home: Path | None = None,
        retries: int | None = None,
        settings: Settings | None = None,
        admin: bool = False,
    ) -> None:
        chosen = (settings if settings is not None else Settings.from_env()).override(
            url=url or None, team=team or None, prefix=prefix or None, actor=actor or None,
            home=home, reconnect_retries=retries,
        )  # fmt: skip
        keys = Keys(chosen.prefix, chosen.team)
        if chosen.actor is not None and "}" in chosen.actor:  # actor keys end with the name
            raise InvalidInput(
                f"actor {chosen.actor!r}: an actor's name cannot contain '}}'; fix TILEBOX_ACTOR"
            )
        # The embedded server (no URL given), which keeps the credentials of its teams.
        self.embedded = EmbeddedServer(chosen.home) if not chosen.url else None
        self.url = resolve_url(
            chosen.url,
            chosen.home,
            None if admin else user_name(keys.prefix, chosen.team, Role.DEVELOPER),
        )
        self.settings = chosen.override(url=self.url)
        self.team = chosen.team
        self.prefix = keys.prefix
        self.redis = connect(
            self.url, timeout=chosen.connect_timeout, retries=chosen.reconnect_retries,
            backoff_base=chosen.reconnect_base, backoff_cap=chosen.reconnect_cap,
        )  # fmt: skip
        # The actor of every event this session appends: the ACL user the server authenticated
        # (asked once; the scripts record no other, see Keys.actor), or with ACLs off (the
        # ``default`` user, or one that may not ask) whoever the settings say.
        user = whoami(self.redis)
        self.identity = Identity(user, parse_user(keys.prefix, user), chosen.team) if user else None
        self.actor = user if user and user != DEFAULT_USER else chosen.actor or default_actor()
        self.store = EventStore(self.redis, keys, actor=self.actor, identity=self.identity)
        # The logs' archive: replays read it before the live logs (opened when first read).
        self.archive = self.store.archive = ObjectArchive(self.settings.archive_location)
        self.archive_log = ArchiveLog(self.store)
        self.tasks = TaskStore(self.store)
        self.runners = RunnerRegistry(self.store)
        self._state = ControlState()
        self._snapshot_read = False

    def close(self) -> None:
        self.redis.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- state and decisions --------------------------------------------------------------------

    def state(self) -> ControlState:
        """The control-plane projection, caught up incrementally from the last position seen;
        first from the snapshot archived with the control log, if it has one, so that only the
        live log after it is folded."""
        if not self._snapshot_read and self._state.position == "0-0":
            self._state = self.control_snapshot() or self._state
            self._snapshot_read = True
        return fold(self.store.replay(CONTROL, after=self._state.position), self._state)

    def control_snapshot(self) -> ControlState | None:
        """The control projection at the control log's archived position (None: not archived)."""
        found = self.archive_log.snapshot(self.store.keys.log(CONTROL))
        return None if found is None else decode_state(found)

    def cached_state(self) -> ControlState:
        """The projection as last caught up, without reading the log (may be behind)."""
        return self._state

    def watch(self, block_ms: int) -> list[Stored]:
        """Block up to ``block_ms`` for new control-plane events and fold them into the state."""
        new = self.store.wait(CONTROL, self._state.position, block_ms)
        fold(new, self._state)
        return new

    def origin(self) -> Origin:
        return Origin(self.team, self.actor, utcnow(), new_id)

    def decide(
        self,
        rule: Callable[[ControlState, Origin], tuple[T, list[Event]]],
        before_append: Callable[[T], None] | None = None,
    ) -> T:
        """Run ``rule`` on fresh state and append its events; retry on a concurrent append."""
        # Another writer got in first: back off a little (jittered) and decide again.
        attempts = retries.retrying(
            ConcurrencyError, attempts=MAX_RETRIES, base=CONFLICT_BASE, cap=CONFLICT_CAP
        )
        try:
            for attempt in attempts:
                with attempt:
                    return self._decide_once(rule, before_append)
        except ConcurrencyError as exc:
            raise ConcurrencyError(
                f"gave up after {MAX_RETRIES} concurrent-write retries ({exc}); try again"
            ) from exc
        raise AssertionError("unreachable: retrying re-raises the last error")

    def _decide_once(
        self,
        rule: Callable[[ControlState, Origin], tuple[T, list[Event]]],
        before_append: Callable[[T], None] | None,
    ) -> T:
        state = self.state()
        result, events = rule(state, self.origin())
        if not events:
            return result
        if before_append is not None:
            before_append(result)
        self.store.append(
            CONTROL, events, state.position, projection=control.deployment_ops(events)
        )
        self.state()
        return result
