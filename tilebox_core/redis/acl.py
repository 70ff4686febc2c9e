"""Team users in the server's ACL: created, listed, rotated and disabled on every node.

ACL users are a node's own configuration: a cluster does not share them between its nodes, and a
replica does not get them from its master. So every change is applied to every node of a cluster,
replicas included (a replica that is promoted after a failover must know the users). Each change is
saved with ACL SAVE where the server has an ACL file (the embedded server and compose.yaml do);
a server without one keeps them in memory only, which the result says (``persisted``).

Rotation keeps two passwords while it lasts: ``rotate`` keeps the newest password a user has,
drops any older ones and adds a new one, so the previous secret works until the rotation is
finished (``rotate(..., finish=True)``, or the next rotation). Finishing drops every password but
the newest and closes the user's connections, so a holder of the old secret is cut off at once
(holders of the new one reconnect with it: the client retries). Deleting a team disables its users
(``off``, no passwords) and closes their connections; its data stays.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis import exceptions as rex
from redis.cluster import RedisCluster

from tilebox_core.domain.errors import Conflict, NotFound, PermissionDenied
from tilebox_core.domain.tenancy import (
    OPTIONAL_COMMANDS,
    ROLES,
    Credential,
    Role,
    TeamChange,
    TeamStatus,
    UserStatus,
    acl_rules,
    parse_user,
    rotation,
    user_name,
)

from .connection import Client
from .errors import DriverError, translated
from .keys import Keys

T = TypeVar("T")
SECRET_BYTES = 24  # token_urlsafe: 32 characters, URL-safe (they go into redis:// URLs as they are)


def _command(node: Client, *args: Any) -> Any:
    """One command sent as it is (redis-py leaves ``execute_command`` unannotated)."""
    return node.execute_command(*args)  # type: ignore[no-untyped-call]


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def nodes(client: Client) -> list[redis.Redis]:
    """Every node: the one server, or each node of a cluster (primaries and replicas)."""
    if isinstance(client, RedisCluster):
        return [client.get_redis_connection(node) for node in client.get_nodes()]
    return [client]


def whoami(client: Client) -> str | None:
    """The ACL user the server authenticated this client as; None if it may not ask (a user
    made by hand without ACL WHOAMI)."""
    try:
        name: Any = _command(client, "ACL", "WHOAMI")
    except rex.NoPermissionError:
        return None
    except DriverError as exc:
        raise translated(exc) from exc
    return name.decode() if isinstance(name, bytes) else str(name)


class AccessControl:
    """The team users of one key prefix, in the ACL of every node of ``client``'s server (which
    must be connected as an administrator: a user allowed ACL SETUSER, GETUSER, LIST, SAVE and
    CLIENT KILL)."""

    def __init__(self, client: Client, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def user(self, team: str, role: Role) -> str:
        return user_name(self.prefix, team, role)

    def rules(self, node: redis.Redis, team: str, role: Role) -> list[str]:
        user = self.user(team, role)
        return acl_rules(role, Keys(self.prefix, team).acl_patterns(user), _missing(node))

    # --- changes ----------------------------------------------------------------------------------

    def create(self, team: str) -> TeamChange:
        """Users for every role of ``team`` with new secrets; a deleted team's users are enabled
        again (with new secrets). Conflict if the team has enabled users."""
        Keys(self.prefix, team)  # a valid slug, or one line saying why not
        enabled = [u.user for u in self._statuses(team) if u.enabled]
        if enabled:
            raise Conflict(
                f"team {team} exists (users {', '.join(enabled)}): rotate a secret with 'tilebox "
                f"team rotate {team} --role ROLE', or delete the team first"
            )
        credentials = [
            Credential(team=team, role=role, user=self.user(team, role), secret=new_secret())
            for role in ROLES
        ]

        def create(node: redis.Redis) -> None:
            for credential in credentials:
                rules = self.rules(node, team, credential.role)
                _command(node, "ACL", "SETUSER", credential.user, "reset", *rules, "on",
                                     f">{credential.secret}")  # fmt: skip

        persisted = self._apply(create)
        return TeamChange(team=team, users=[c.user for c in credentials],
                          credentials=credentials, persisted=persisted)  # fmt: skip

    def rotate(self, team: str, role: Role, *, finish: bool = False) -> TeamChange:
        """A new secret for ``team``'s ``role`` user, the previous one still working; with
        ``finish``, no new secret: every password but the newest is dropped. Rules are written
        afresh either way (a new version's rules reach existing users this way)."""
        user = self.user(team, role)
        self._require_enabled(team, user)
        secret = None if finish else new_secret()

        def rotate(node: redis.Redis) -> None:
            hashes = self._hashes(node, user)
            _command(node, "ACL", "SETUSER", user, *self.rules(node, team, role), "on",
                                 *rotation(hashes, secret))  # fmt: skip
            if finish:
                _disconnect(node, user)

        persisted = self._apply(rotate)
        credentials = [] if secret is None else [
            Credential(team=team, role=role, user=user, secret=secret)
        ]  # fmt: skip
        return TeamChange(team=team, users=[user], credentials=credentials, persisted=persisted)

    def delete(self, team: str) -> TeamChange:
        """Disable every user of ``team`` and close their connections; the data stays."""
        Keys(self.prefix, team)
        known = [u.user for u in self._statuses(team)]
        if not known:
            raise NotFound(f"team {team} has no users to delete; 'tilebox team list' shows teams")

        def delete(node: redis.Redis) -> None:
            for user in known:
                _command(node, "ACL", "SETUSER", user, "off", "resetpass")
                _disconnect(node, user)

        return TeamChange(team=team, users=known, persisted=self._apply(delete))

    # --- reading ----------------------------------------------------------------------------------

    def teams(self) -> list[TeamStatus]:
        """Every team that has users under this prefix, with its users; a user the nodes of a
        cluster disagree about is shown out of sync."""
        return self._teams(None)

    def team(self, team: str) -> TeamStatus:
        found = self._teams(team)
        if not found:
            raise NotFound(
                f"team {team} has no users; create them with 'tilebox team create {team}'"
            )
        return found[0]

    def _teams(self, only: str | None) -> list[TeamStatus]:
        users = self._statuses(only)
        grouped: dict[str, list[UserStatus]] = {}
        for status in users:
            grouped.setdefault(status.team, []).append(status)
        return [
            TeamStatus(team=team, users=sorted(found, key=lambda u: ROLES.index(u.role)))
            for team, found in sorted(grouped.items())
        ]

    def _statuses(self, only: str | None) -> list[UserStatus]:
        lines = self._call(lambda: [_acl_list(node) for node in nodes(self.client)])
        first, others = lines[0], lines[1:]
        found = []
        for name, rules in first.items():
            owner = parse_user(self.prefix, name)
            if owner is None or (only is not None and owner.team != only):
                continue
            words = rules.split()
            found.append(UserStatus(
                team=owner.team, role=owner.role, user=name, enabled="on" in words,
                passwords=sum(w.startswith("#") for w in words),
                in_sync=all(node.get(name) == rules for node in others),
            ))  # fmt: skip
        return found

    def _require_enabled(self, team: str, user: str) -> None:
        status = next((u for u in self._statuses(team) if u.user == user), None)
        if status is None or not status.enabled:
            raise NotFound(
                f"{user} does not exist or is disabled: create team {team} with "
                f"'tilebox team create {team}'"
            )

    # --- internals --------------------------------------------------------------------------------

    @staticmethod
    def _hashes(node: redis.Redis, user: str) -> list[str]:
        """The user's password hashes, oldest first (ACL GETUSER keeps the order they were added)."""
        reply: Any = _command(node, "ACL", "GETUSER", user)
        if reply is None:  # a node that does not know the user (added to the cluster later)
            return []
        if isinstance(reply, list):  # RESP2 without the driver's parsing: [name, value, ...]
            reply = dict(zip(reply[::2], reply[1::2]))
        values = reply.get("passwords", reply.get(b"passwords", []))
        return [v.decode() if isinstance(v, bytes) else str(v) for v in values]

    def _apply(self, change: Callable[[redis.Redis], None]) -> bool:
        """``change`` on every node, then ACL SAVE on each; whether every node saved it."""

        def run() -> bool:
            everywhere = nodes(self.client)
            for node in everywhere:
                change(node)
            saved = True
            for node in everywhere:
                try:
                    _command(node, "ACL", "SAVE")
                except rex.ResponseError as exc:
                    if "not configured to use an ACL file" not in str(exc):
                        raise
                    saved = False
            return saved

        return self._call(run)

    def _call(self, run: Callable[[], T]) -> T:
        try:
            return run()
        except rex.NoPermissionError as exc:
            raise PermissionDenied(
                f"managing teams needs an administrator's credential ({exc}): connect with a "
                "user allowed ACL SETUSER, GETUSER, LIST, SAVE and CLIENT KILL in "
                "TILEBOX_REDIS_URL (the embedded server's admin is used by itself)"
            ) from exc
        except DriverError as exc:
            raise translated(exc) from exc


def _missing(node: redis.Redis) -> set[str]:
    """The commands of OPTIONAL_COMMANDS that ``node`` does not have (Redis 7.0 has no CLIENT
    SETINFO), from COMMAND INFO of their containers."""
    missing = set()
    for command in OPTIONAL_COMMANDS:
        container, _, sub = command.partition("|")
        reply: Any = _command(node, "COMMAND", "INFO", container)
        known = str(reply).lower()  # the reply nests the subcommands' names, as bytes or text
        if f"{container}|{sub}" not in known:
            missing.add(command)
    return missing


def _disconnect(node: redis.Redis, user: str) -> None:
    """Close the connections of ``user`` (disabling a user or dropping a password leaves the
    connections it authenticated open)."""
    _command(node, "CLIENT", "KILL", "USER", user)


def _acl_list(node: redis.Redis) -> dict[str, str]:
    """ACL LIST of a node as user name -> the rest of its line."""
    reply: Any = _command(node, "ACL", "LIST")
    found = {}
    for line in reply:
        text = line.decode() if isinstance(line, bytes) else str(line)
        _, name, rules = [*text.split(" ", 2), "", ""][:3]
        found[name] = rules
    return found
