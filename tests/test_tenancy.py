"""Tenancy rules as plain tables: role rules, user names, rotations, refusal messages."""

from __future__ import annotations

import pytest

from tilebox_core.domain.errors import InvalidInput
from tilebox_core.domain.tenancy import (
    CONNECTION_COMMANDS,
    FORBIDDEN_COMMANDS,
    READ_COMMANDS,
    ROLES,
    WRITE_COMMANDS,
    Identity,
    Role,
    TeamPatterns,
    TeamUser,
    acl_rules,
    commands_of,
    denied,
    parse_role,
    parse_user,
    password_hash,
    rotation,
    user_name,
)
from tilebox_core.redis.keys import Keys

PATTERNS = TeamPatterns(team=["T1", "T2"], task_plane=["P1", "P2"], actor=["A1", "A2"])


def split(rules: list[str]) -> tuple[set[str], set[str]]:
    """(commands granted, key rules) of ``rules``."""
    commands = {r[1:] for r in rules if r.startswith("+")}
    keys = {r for r in rules if r.startswith(("~", "%"))}
    return commands, keys


@pytest.mark.parametrize(
    ("role", "keys"),
    [
        (Role.DEVELOPER, {"~T1", "~T2", "~A1", "~A2"}),
        (Role.RUNNER, {"%R~T1", "%R~T2", "~P1", "~P2", "~A1", "~A2"}),
        (Role.AUDITOR, {"%R~T1", "%R~T2"}),
    ],
)
def test_each_role_gets_exactly_its_keys(role: Role, keys: set[str]) -> None:
    rules = acl_rules(role, PATTERNS)
    assert rules[:3] == ["resetkeys", "resetchannels", "-@all"]  # nothing left from before
    assert split(rules)[1] == keys
    assert not any(r.startswith((">", "<", "#", "!", "on", "off", "nopass")) for r in rules)


@pytest.mark.parametrize("role", ROLES)
def test_no_role_gets_a_forbidden_command_or_a_category(role: Role) -> None:
    commands, _ = split(acl_rules(role, PATTERNS))
    assert not commands & FORBIDDEN_COMMANDS
    assert not {c.split("|")[0] for c in commands} & {"scan", "keys", "flushall", "config"}
    assert not any(c.startswith("@") for c in commands)  # named commands only


def test_only_writers_write_and_only_an_auditor_is_read_only() -> None:
    assert set(commands_of(Role.AUDITOR)) == set(CONNECTION_COMMANDS + READ_COMMANDS)
    for writer in (Role.DEVELOPER, Role.RUNNER):
        assert set(WRITE_COMMANDS) <= set(commands_of(writer))


def test_a_command_the_server_lacks_is_left_out() -> None:
    commands, _ = split(acl_rules(Role.DEVELOPER, PATTERNS, missing={"client|setinfo"}))
    assert "client|setinfo" not in commands and "client|id" in commands


def test_a_runner_writes_no_key_of_the_control_plane_nor_the_jobs_index() -> None:
    keys = Keys("tilebox", "acme")
    patterns = keys.acl_patterns("tilebox.acme.runner")
    shard = keys.shard(3, 12)
    control = {keys.log("control"), keys.dedup("control"), keys.deployments,
               keys.artifact("sha256:00"), keys.checkpoint("x"), keys.jobs, shard.jobs,
               keys.log_head("control"), keys.dedup_previous("control")}  # fmt: skip
    written = {keys.log("tasks"), keys.log_head("tasks"), keys.job("j"), keys.job_tasks("j"), keys.task("t"),
               keys.lane("c", "n", 1, 0), keys.runner("r"), keys.runners("c"), keys.shards,
               keys.expiring, shard.expiring, keys.sweep_lease}  # fmt: skip
    assert not any(_matches(p, k) for p in patterns.task_plane for k in control)
    assert all(any(_matches(p, k) for p in patterns.task_plane) for k in written)
    shard = keys.shard(3, 12)
    assert all(
        any(_matches(p, k) for p in patterns.task_plane)
        for k in (shard.task("t"), shard.log("tasks"))
    )


def test_a_runner_may_only_remove_from_the_jobs_index() -> None:
    """The sweep's selector: EVAL(SHA) and ZREM on the task plane and the jobs indexes, so the
    remove script may take expired jobs out of the index; ZADD there (a submission) it may not."""
    keys = Keys("tilebox", "acme")
    patterns = keys.acl_patterns("tilebox.acme.runner")
    shard = keys.shard(3, 12)
    assert all(any(_matches(p, k) for p in patterns.index) for k in (keys.jobs, shard.jobs))
    assert not any(_matches(p, keys.expiring) for p in patterns.index)
    [selector] = [r for r in acl_rules(Role.RUNNER, patterns) if r.startswith("(")]
    words = selector.strip("()").split()
    assert {w for w in words if w.startswith("+")} == {"+evalsha", "+eval", "+zrem"}
    assert {f"~{p}" for p in patterns.index} <= set(words)
    assert not any(r.startswith("(") for r in acl_rules(Role.DEVELOPER, patterns))


def _matches(pattern: str, key: str) -> bool:
    """Redis's glob for the patterns keys.py writes: ``*``, ``[^@]`` and ``[}/]``."""
    import re

    regex = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            regex += ".*"
        elif c == "[":
            end = pattern.index("]", i)
            body = pattern[i + 1 : end]
            regex += (
                "[^" + re.escape(body[1:]) + "]"
                if body.startswith("^")
                else "[" + re.escape(body) + "]"
            )
            i = end
        elif c == "\\":
            i += 1
            regex += re.escape(pattern[i])
        else:
            regex += re.escape(c)
        i += 1
    return re.fullmatch(regex, key, re.DOTALL) is not None


@pytest.mark.parametrize(
    ("prefix", "name", "expected"),
    [
        ("tilebox", "tilebox.acme.developer", TeamUser("acme", Role.DEVELOPER)),
        ("tilebox", "tilebox.acme.auditor", TeamUser("acme", Role.AUDITOR)),
        ("my.prefix", "my.prefix.acme.runner", TeamUser("acme", Role.RUNNER)),
        ("tilebox", "other.acme.runner", None),  # another prefix's
        ("tilebox", "tilebox.acme.owner", None),  # no such role
        ("tilebox", "tilebox.Acme.runner", None),  # not a slug
        ("tilebox", "default", None),
        ("tilebox", "admin", None),
    ],
)
def test_user_names_parse_back(prefix: str, name: str, expected: TeamUser | None) -> None:
    assert parse_user(prefix, name) == expected
    if expected is not None:
        assert user_name(prefix, expected.team, expected.role) == name


def test_an_unknown_role_is_one_line() -> None:
    assert parse_role("runner") is Role.RUNNER
    with pytest.raises(InvalidInput, match="unknown role 'admin': use one of developer, runner"):
        parse_role("admin")


@pytest.mark.parametrize(
    ("hashes", "secret", "rules"),
    [
        ([], "new", [">new"]),
        (["h1"], "new", [">new"]),  # the overlap begins: h1 and new
        (["h1", "h2"], "new", ["!h1", ">new"]),  # the next rotation ends the previous overlap
        (["h1", "h2", "h3"], None, ["!h1", "!h2"]),  # finishing keeps only the newest
        (["h1"], None, []),
    ],
)
def test_a_rotation_keeps_the_newest_password_and_adds_one(
    hashes: list[str], secret: str | None, rules: list[str]
) -> None:
    assert rotation(hashes, secret) == rules


def test_password_hashes_are_what_redis_lists() -> None:
    assert (
        password_hash("pw1") == "c592df4a86933b92addc9842402ddf198c638ea9be58916ee6e3734e1e3152f8"
    )


@pytest.mark.parametrize(
    ("identity", "says"),
    [
        (Identity("tilebox.a.runner", TeamUser("a", Role.RUNNER), "a"),
         ["role runner", "not append to it", "use a developer credential"]),
        (Identity("tilebox.a.auditor", TeamUser("a", Role.AUDITOR), "a"),
         ["an auditor may only read"]),
        (Identity("tilebox.a.developer", TeamUser("a", Role.DEVELOPER), "b"),
         ["credential of team a", "this is team b"]),
        (Identity("bob", None, "a"), ["not allowed to user bob"]),
    ],
)  # fmt: skip
def test_a_refusal_names_the_team_the_role_and_what_it_may_not_do(
    identity: Identity, says: list[str]
) -> None:
    message = denied(identity, "appending to the control log")
    assert message.startswith("appending to the control log is not allowed to")
    assert all(part in message for part in says), message
    assert "\n" not in message


def test_an_actor_that_no_actor_key_can_name_is_refused_before_connecting() -> None:
    from tilebox_core import Client

    with pytest.raises(InvalidInput, match="an actor's name cannot contain '}'"):
        Client("redis://127.0.0.1:1/0", actor="user:x}y")  # nothing listens there
