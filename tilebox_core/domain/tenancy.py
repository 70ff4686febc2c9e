"""Tenancy rules: the roles of a team's Redis ACL users, their names, and the ACL rules that give
each role only what it needs. Pure: the key patterns come from ``redis.keys`` (``acl_patterns``),
which owns every key name; what a role may do with them is decided here.

A team has one ACL user per role, ``<prefix>.<team>.<role>``:

- ``developer``: every command the library uses (publish, deploy, submit, read) on every key of
  the team;
- ``runner``: the same commands, but writes only to the task plane and the runner registry; the
  control log, the deployments and the artifacts it may only read (Redis 7 ``%R~`` patterns), so
  a runner's credential cannot publish or deploy;
- ``auditor``: read commands on every key of the team.

No role gets a command the library does not use: no SCAN or KEYS (which would list other teams'
key names), no FLUSHALL/FLUSHDB, CONFIG, DEBUG, MODULE, SCRIPT FLUSH/KILL, FUNCTION, ACL changes,
MONITOR, pub/sub. Every role may write its own actor keys (and only its own: no team pattern
covers an actor key), which is what makes the actor of an event the authenticated user: the
scripts that record events write the actor key of the actor they record (see ``redis.keys``).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Collection, Sequence

import msgspec

from .errors import InvalidInput
from .identifiers import validate_slug


class Role(enum.StrEnum):
    DEVELOPER = "developer"
    RUNNER = "runner"
    AUDITOR = "auditor"


ROLES: tuple[Role, ...] = tuple(Role)

# What each role may do, and what it may not, in the words an error message uses.
ROLE_SCOPE = {
    Role.DEVELOPER: "may publish, deploy, submit and read in its own team only",
    Role.RUNNER: (
        "may claim and finish tasks and read the control log, not append to it (publish, deploy, "
        "create or delete clusters and workflows), upload artifacts or submit jobs"
    ),
    Role.AUDITOR: "may only read",
}

ADMIN_USER = "admin"  # the embedded server's (and compose.yaml's) administrator


class TeamPatterns(msgspec.Struct, frozen=True, kw_only=True):
    """ACL key patterns (globs, escaped) of one team and one of its users, as ``redis.keys``
    lays the keys out."""

    team: list[str]  # every key of the team but the actor keys
    task_plane: list[str]  # what a runner writes: task plane (every shard), runner registry
    actor: list[str]  # the user's own actor keys, in the control tag and every shard's
    index: list[str] = []  # the jobs indexes: a runner may only remove entries (the sweep)


# --- commands ---------------------------------------------------------------------------------------
#
# Every command the library sends (redis-py's client, the cluster client and our own packed
# commands) and every command its Lua scripts call: scripts run with the caller's ACL.

# Connecting and finding the topology: the version check (INFO), the actor (ACL WHOAMI), the
# driver's own handshake (CLIENT SETINFO) and the cluster client's (CLUSTER SLOTS/SHARDS/NODES,
# COMMAND, which it parses key positions with).
CONNECTION_COMMANDS = (
    "ping", "echo", "info", "hello", "select", "acl|whoami", "client|id", "client|setinfo",
    "client|setname", "client|getname", "cluster|info", "cluster|slots", "cluster|shards",
    "cluster|nodes", "cluster|myid", "cluster|keyslot", "command", "readonly", "readwrite",
    "asking",
)  # fmt: skip
READ_COMMANDS = (
    "get", "mget", "exists", "hget", "hgetall", "hmget", "lrange", "llen", "zrangebyscore",
    "zrevrangebyscore", "zcard", "zscore", "zmscore", "xrange", "xrevrange", "xread", "xlen",
    "xinfo|groups", "xinfo|stream", "xpending", "time",
    # a transaction of reads (audit verify reads a log's head with its last entry in one)
    "multi", "exec", "discard",
)  # fmt: skip
WRITE_COMMANDS = (
    "set", "del", "expire", "persist", "rename", "rpush", "hset", "hsetnx", "hdel", "hincrby",
    "zadd", "zrem", "zremrangebyscore", "xadd", "xack", "xclaim", "xdel", "xgroup|create",
    "xreadgroup", "eval", "evalsha", "script|load", "script|exists", "client|unblock",
    "setrange", "unlink",
    # the archiver trims a log up to what its archive record says is archived (archive_trim.lua)
    "xtrim",
)  # fmt: skip
# Newer than Redis 7.0: granted where the server has them (ACL SETUSER refuses an unknown one).
OPTIONAL_COMMANDS = frozenset({"client|setinfo"})
# Never granted, whatever a future version adds above (a table test checks the rules).
FORBIDDEN_COMMANDS = frozenset({
    "scan", "keys", "randomkey", "flushall", "flushdb", "config", "debug", "module", "monitor",
    "script|flush", "script|kill", "function", "fcall", "acl|setuser", "acl|deluser",
    "acl|list", "acl|save", "acl|load", "client|kill", "client|list", "shutdown", "save",
    "bgsave", "bgrewriteaof", "replicaof", "slaveof", "sync", "psync", "migrate", "restore",
    "subscribe", "psubscribe", "publish", "swapdb", "move", "copy",
})  # fmt: skip


def commands_of(role: Role) -> tuple[str, ...]:
    """The commands ``role`` may run (its keys decide on which keys)."""
    if role is Role.AUDITOR:
        return CONNECTION_COMMANDS + READ_COMMANDS
    return CONNECTION_COMMANDS + READ_COMMANDS + WRITE_COMMANDS


def acl_rules(role: Role, patterns: TeamPatterns, missing: Collection[str] = ()) -> list[str]:
    """The ACL SETUSER rules of a user of ``role``: its commands (but those of OPTIONAL_COMMANDS
    the server is ``missing``) and key patterns, from nothing (``resetkeys resetchannels
    -@all``), leaving its passwords and on/off state as they are."""
    rules = ["resetkeys", "resetchannels", "-@all"]
    rules += [f"+{command}" for command in commands_of(role) if command not in missing]
    if role is Role.DEVELOPER:
        rules += [f"~{p}" for p in patterns.team]
    elif role is Role.RUNNER:
        rules += [f"%R~{p}" for p in patterns.team] + [f"~{p}" for p in patterns.task_plane]
        if patterns.index:
            # A selector: the sweep's script (which names the jobs index among its keys) may
            # ZREM expired jobs from the index; nothing else writes it (a runner submits none).
            keys = [*patterns.task_plane, *patterns.index, *patterns.actor]
            rules.append(
                "(" + " ".join(["+evalsha", "+eval", "+zrem", *(f"~{p}" for p in keys)]) + ")"
            )
    else:
        rules += [f"%R~{p}" for p in patterns.team]
    if role is not Role.AUDITOR:  # an auditor records no events
        # read and write: a script's KEYS are checked for both
        rules += [f"~{p}" for p in patterns.actor]
    return rules


# --- users ------------------------------------------------------------------------------------------


class TeamUser(msgspec.Struct, frozen=True):
    """Who a team's ACL user is: its team and role."""

    team: str
    role: Role


def user_name(prefix: str, team: str, role: Role) -> str:
    """The ACL user of ``role`` in ``team`` (keys under ``prefix``): ``<prefix>.<team>.<role>``.
    A slug has no dot, so the name parses back from the right (``parse_user``)."""
    return f"{prefix}.{team}.{role}"


def parse_user(prefix: str, name: str) -> TeamUser | None:
    """The team and role of ACL user ``name`` if it is a team user under ``prefix``, else None."""
    head, _, role = name.rpartition(".")
    owner, _, team = head.rpartition(".")
    if owner != prefix or role not in Role.__members__.values():
        return None
    try:
        validate_slug(team, "team name")
    except InvalidInput:
        return None
    return TeamUser(team, Role(role))


def parse_role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        raise InvalidInput(
            f"unknown role {text!r}: use one of {', '.join(r.value for r in ROLES)}"
        ) from None


def password_hash(secret: str) -> str:
    """How Redis names a password in ACL rules and replies: its SHA-256, in hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def rotation(hashes: Sequence[str], new_secret: str | None) -> list[str]:
    """The password rules of a rotation, given the user's password hashes oldest first (the order
    ACL GETUSER lists them in): keep only the newest and add ``new_secret`` (None: just drop the
    older ones, which ends the overlap)."""
    keep = hashes[-1:] if hashes else []
    rules = [f"!{h}" for h in hashes if h not in keep]
    if new_secret is not None:
        rules.append(f">{new_secret}")
    return rules


class Credential(msgspec.Struct, frozen=True, kw_only=True):
    """A secret of a team's user, as created or rotated: shown once, never stored by the server
    (it keeps its hash). ``url`` is the URL the session that made it used, with this user's
    credentials in it."""

    team: str
    role: Role
    user: str
    secret: str
    url: str = ""


class UserStatus(msgspec.Struct, frozen=True, kw_only=True):
    team: str
    role: Role
    user: str
    enabled: bool  # False: the team was deleted (its data is kept)
    passwords: int  # 2 while a rotation's overlap lasts
    in_sync: bool = True  # False: the nodes of a cluster disagree about this user


class TeamStatus(msgspec.Struct, frozen=True, kw_only=True):
    team: str
    users: list[UserStatus]

    @property
    def enabled(self) -> bool:
        return any(user.enabled for user in self.users)


class TeamChange(msgspec.Struct, frozen=True, kw_only=True):
    """What a team command changed: the users, new secrets (shown once), and whether the server
    saved its ACL (``persisted``: False when it has no ACL file and would forget the users on a
    restart)."""

    team: str
    users: list[str]
    credentials: list[Credential] = []
    persisted: bool = True


class Identity(msgspec.Struct, frozen=True):
    """Who a session is connected as: its ACL user, that user's team and role if it is a team
    user, and the team the session works on."""

    user: str
    member: TeamUser | None
    team: str


def denied(identity: Identity, operation: str) -> str:
    """Why ``operation`` was refused to ``identity``, and what to do, in one sentence."""
    member = identity.member
    who = identity.user
    if member is None:
        return f"{operation} is not allowed to user {who}"
    if member.team != identity.team:
        return (
            f"{operation} is not allowed to {who}: it is a credential of team {member.team}, "
            f"and this is team {identity.team}; use a credential of team {identity.team}"
        )
    needed = "a developer credential" if member.role is not Role.DEVELOPER else "an admin"
    article = "an" if member.role is Role.AUDITOR else "a"
    return (
        f"{operation} is not allowed to {who} (team {member.team}, role {member.role}): "
        f"{article} {member.role} {ROLE_SCOPE[member.role]}; use {needed}"
    )
