"""Tenants the server keeps apart: per-team ACL users by role, on a real server (and on every node
of a cluster). Each test would fail without the rule it is named for."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from tests.servers import ClusterProcess, ServerProcess
from tilebox_core import Client, ExecutionContext, Task
from tilebox_core.domain.errors import Conflict, NotFound, PermissionDenied, StoreUnavailable
from tilebox_core.domain.events import ClusterCreated, Codec, ReleaseTask
from tilebox_core.domain.ids import new_id, utcnow
from tilebox_core.domain.tenancy import Credential, Role
from tilebox_core.redis.eventstore import CONTROL, load_script
from tilebox_core.redis.keys import Keys

pytestmark = pytest.mark.cluster

Server = ServerProcess | ClusterProcess
Provision = Callable[[str], dict[Role, Credential]]


class Greet(Task):
    name: str

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "teams.Greet", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        context.submit_subtask(Wave(self.name))


class Wave(Task):
    name: str

    def execute(self, context: ExecutionContext) -> None:
        pass


def ports(server: Server) -> list[int]:
    return [n.port for n in server.nodes] if isinstance(server, ClusterProcess) else [server.port]


def raw(server: Server, credential: Credential) -> redis.Redis | RedisCluster:
    """A plain driver client of ``server`` logged in as ``credential``'s user."""
    user, password = credential.user, credential.secret
    if isinstance(server, ClusterProcess):
        nodes = [ClusterNode("127.0.0.1", port) for port in ports(server)]
        return RedisCluster(startup_nodes=nodes, username=user, password=password)
    return redis.Redis(port=server.port, username=user, password=password)


def node(server: Server, credential: Credential) -> redis.Redis:
    """A connection to one node (the first) as ``credential``'s user."""
    return redis.Redis(port=ports(server)[0], username=credential.user, password=credential.secret)


@pytest.fixture
def admin(server: Server, team: str) -> Iterator[Client]:
    """A client connected as the test server's administrator (its ``default`` user)."""
    with Client(server.url, team=team, actor="user:admin") as client:
        yield client


@pytest.fixture
def provision(server: Server, admin: Client) -> Iterator[Provision]:
    """Creates a team's users; deletes them from every node afterwards (the server is shared)."""
    users: list[str] = []

    def create(name: str) -> dict[Role, Credential]:
        change = admin.teams().create(name)
        users.extend(change.users)
        return {c.role: c for c in change.credentials}

    yield create
    for port in ports(server):
        with redis.Redis(port=port) as each:
            if users:
                each.execute_command("ACL", "DELUSER", *users)


def other_team() -> str:
    return "o-" + uuid.uuid4().hex[:12]


REFUSED = re.compile(r"permission|ACL failure|can't (access|run)", re.IGNORECASE)


def denied(run: Callable[[], object]) -> None:
    """``run`` is refused by the ACL (a script's own command by an error without NOPERM)."""
    with pytest.raises(redis.exceptions.ResponseError) as info:
        run()
    assert REFUSED.search(str(info.value)), info.value


# --- keeping teams apart ------------------------------------------------------------------------


def test_a_developer_cannot_read_write_list_or_script_another_teams_keys(
    server: Server, team: str, provision: Provision
) -> None:
    mine, theirs = provision(team)[Role.DEVELOPER], Keys("tilebox", other_team())
    provision(theirs.team)
    with Client(server.url, team=theirs.team, actor="user:b") as b:
        b.clusters().create("secret")
    ours = Keys("tilebox", team)
    with raw(server, mine) as a:
        a.set(ours.checkpoint("x"), "1")  # its own team: allowed
        denied(lambda: a.xrange(theirs.log(CONTROL)))
        denied(lambda: a.get(theirs.shards))
        denied(lambda: a.set(theirs.checkpoint("x"), "1"))
        denied(lambda: a.xadd(theirs.log(CONTROL), {"e": b"forged"}))
        denied(lambda: a.eval("return redis.call('XLEN', KEYS[1])", 1, theirs.log(CONTROL)))
        # a script that names no key and builds another team's name itself: still refused
        ours_tagged = ours.checkpoint("x")
        denied(
            lambda: a.eval(f"return redis.call('XLEN', '{theirs.log(CONTROL)}')", 1, ours_tagged)
        )
    with node(server, mine) as one:
        denied(lambda: one.execute_command("SCAN", 0))  # would list team b's key names
        denied(lambda: one.execute_command("KEYS", "*"))
    # through the library: one line naming the credential's team and the session's
    with Client(mine.url, team=theirs.team) as wrong, pytest.raises(PermissionDenied) as info:
        wrong.clusters().all()
    assert f"credential of team {team}" in str(info.value)
    assert f"this is team {theirs.team}" in str(info.value)


def test_no_role_may_run_what_the_library_does_not_use(
    server: Server, team: str, provision: Provision
) -> None:
    credentials = provision(team)
    for credential in credentials.values():
        with node(server, credential) as one:
            for command in (
                ("FLUSHALL",),
                ("FLUSHDB",),
                ("CONFIG", "GET", "*"),
                ("SCRIPT", "FLUSH"),
                ("SCRIPT", "KILL"),
                ("MODULE", "LIST"),
                ("ACL", "LIST"),
                ("CLIENT", "LIST"),
                ("ACL", "SETUSER", credential.user, "+@all"),
                ("FUNCTION", "LIST"),
                ("KEYS", "*"),
                ("SCAN", 0),
                ("CLIENT", "KILL", "USER", "default"),
            ):  # fmt: skip (DEBUG and SHUTDOWN: in the rules' table test, not sent to a shared server)
                denied(lambda c=command: one.execute_command(*c))  # type: ignore[misc]
            assert one.ping()


def test_a_runner_credential_runs_tasks_but_cannot_publish_or_deploy(
    server: Server, team: str, provision: Provision
) -> None:
    credentials = provision(team)
    with Client(credentials[Role.DEVELOPER].url, team=team) as developer:
        developer.workflows().create("scenes")
        release = (
            developer.workflows()
            .publish_release(
                "scenes", b"code", [ReleaseTask("teams.Greet", "v1.0")], runner="m:runner"
            )
            .release
        )
        job = developer.jobs().submit("hello", Greet("you"), cluster="default")
        before = developer.store.last_position(CONTROL)
    with Client(credentials[Role.RUNNER].url, team=team) as runner:
        runner.runner(tasks=[Greet, Wave]).run_all()  # claims and finishes
        assert runner.jobs().find(job.id).state.value == "completed"
        assert runner.deployments().current() == {}  # reads the control plane
        with pytest.raises(PermissionDenied) as info:
            runner.workflows().publish_release(
                "scenes", b"other code", [ReleaseTask("teams.Greet", "v1.0")], runner="m:runner"
            )
        assert "role runner" in str(info.value) and "use a developer credential" in str(info.value)
        with pytest.raises(PermissionDenied, match="appending to the control log"):
            runner.workflows().deploy_release(release.id, clusters=["default"])
        with pytest.raises(PermissionDenied):
            runner.clusters().create("mine")
        with pytest.raises(PermissionDenied, match="submitting jobs"):
            runner.jobs().submit("mine", Greet("me"), cluster="default")
        assert runner.store.last_position(CONTROL) == before  # nothing was appended
        # the sweep: it removes the expired job from the jobs index too (its selector's ZREM)
        assert runner.jobs().expire(utcnow() + dt.timedelta(days=8)) == 1
        assert runner.jobs().find(job.id).removed_reason == "expired"
        assert runner.tasks.job_ids() == []
        with pytest.raises(PermissionDenied):
            runner.jobs().set_retention(dt.timedelta(days=1))  # a control event
    with raw(server, credentials[Role.RUNNER]) as direct:
        keys = Keys("tilebox", team)
        denied(lambda: direct.xadd(keys.log(CONTROL), {"e": b"forged"}))
        denied(lambda: direct.hset(keys.deployments, "default/scenes", release.id))
        denied(lambda: direct.rpush(keys.artifact("sha256:" + "0" * 64), b"code"))


def test_an_auditor_reads_everything_and_writes_nothing(
    server: Server, team: str, provision: Provision
) -> None:
    credentials = provision(team)
    with Client(credentials[Role.DEVELOPER].url, team=team) as developer:
        developer.clusters().create("dev")
        job = developer.jobs().submit("hello", Greet("you"), cluster="dev")
    with Client(credentials[Role.AUDITOR].url, team=team) as auditor:
        assert [c.slug for c in auditor.clusters().all()] == ["default", "dev"]
        assert auditor.clusters().runners("dev") == []
        assert auditor.jobs().find(job.id).state.value == "queued"
        types = [s.event.type for s in auditor.events().list()]
        assert "ClusterCreated" in types and "JobSubmitted" in types
        with pytest.raises(PermissionDenied, match="an auditor may only read"):
            auditor.clusters().create("mine")
        with pytest.raises(PermissionDenied):
            auditor.jobs().submit("hello", Greet("me"), cluster="dev")
        with pytest.raises(PermissionDenied):
            auditor.jobs().cancel(job.id)
    with raw(server, credentials[Role.AUDITOR]) as direct:
        denied(lambda: direct.set(Keys("tilebox", team).checkpoint("x"), "1"))
        denied(lambda: direct.eval("return 1", 1, Keys("tilebox", team).checkpoint("x")))


# --- lifecycle ------------------------------------------------------------------------------------


def test_teams_are_listed_with_their_users_and_created_once(
    admin: Client, team: str, provision: Provision
) -> None:
    credentials = provision(team)
    assert {c.user for c in credentials.values()} == {
        f"tilebox.{team}.developer",
        f"tilebox.{team}.runner",
        f"tilebox.{team}.auditor",
    }
    assert all(c.url.startswith(("redis://", "redis+cluster://")) for c in credentials.values())
    assert all(f"{c.user}:{c.secret}@" in c.url for c in credentials.values())
    found = admin.teams().find(team)
    assert [u.role for u in found.users] == [Role.DEVELOPER, Role.RUNNER, Role.AUDITOR]
    assert all(u.enabled and u.passwords == 1 and u.in_sync for u in found.users)
    assert team in [t.team for t in admin.teams().all()]
    with pytest.raises(Conflict, match=f"team {team} exists"):
        admin.teams().create(team)


def test_a_deleted_teams_users_cannot_connect_and_its_data_stays(
    server: Server, admin: Client, team: str, provision: Provision
) -> None:
    credentials = provision(team)
    developer = credentials[Role.DEVELOPER]
    connected = Client(developer.url, team=team, retries=0)
    connected.clusters().create("dev")
    admin.teams().delete(team)
    for credential in credentials.values():
        with pytest.raises(StoreUnavailable, match="refused authentication"):
            Client(credential.url, team=team, retries=0)
    with pytest.raises((StoreUnavailable, PermissionDenied)):
        connected.clusters().create("again")  # its open connection was closed too
    connected.close()
    assert not any(u.enabled for u in admin.teams().find(team).users)
    assert "dev" in [c.slug for c in admin.clusters().all()]  # the data is kept
    again = {c.role: c for c in admin.teams().create(team).credentials}  # enabled again
    with Client(again[Role.AUDITOR].url, team=team) as auditor:
        assert "dev" in [c.slug for c in auditor.clusters().all()]


def test_a_rotated_secret_works_until_the_overlap_ends(
    server: Server, admin: Client, team: str, provision: Provision
) -> None:
    first = provision(team)[Role.RUNNER]
    [second] = admin.teams().rotate(team, "runner").credentials
    assert second.secret != first.secret
    for credential in (first, second):  # the overlap: both work
        with Client(credential.url, team=team) as client:
            assert client.actor == first.user
    assert admin.teams().find(team).users[1].passwords == 2
    [third] = admin.teams().rotate(team, Role.RUNNER).credentials  # the next rotation: first ends
    with pytest.raises(StoreUnavailable, match="refused authentication"):
        Client(first.url, team=team, retries=0)
    Client(second.url, team=team).close()
    assert admin.teams().rotate(team, Role.RUNNER, finish=True).credentials == []
    for ended in (first, second):
        with pytest.raises(StoreUnavailable, match="refused authentication"):
            Client(ended.url, team=team, retries=0)
    with Client(third.url, team=team) as client:
        assert client.actor == third.user
    assert admin.teams().find(team).users[1].passwords == 1


def test_team_commands_need_an_administrator(
    admin: Client, team: str, provision: Provision
) -> None:
    developer = provision(team)[Role.DEVELOPER]
    with Client(developer.url, team=team) as client:
        for command in (
            lambda: client.teams().create(other_team()),
            lambda: client.teams().all(),
            lambda: client.teams().rotate(team, Role.DEVELOPER),
            lambda: client.teams().delete(team),
        ):
            with pytest.raises(PermissionDenied, match="administrator's credential"):
                command()
    with pytest.raises(NotFound, match="create team"):
        admin.teams().rotate(other_team(), Role.DEVELOPER)
    with pytest.raises(NotFound, match="no users to delete"):
        admin.teams().delete(other_team())


# --- authenticated actors -------------------------------------------------------------------------


def append_script() -> str:
    return load_script("actor") + "\n" + load_script("append")


def forged(team: str, actor: str, slug: str) -> ClusterCreated:
    return ClusterCreated(id=new_id(), at=utcnow(), actor=actor, team=team, slug=slug, name=slug)


def test_an_event_names_the_user_whose_credential_appended_it(
    server: Server, team: str, provision: Provision
) -> None:
    credentials = provision(team)
    developer, runner = credentials[Role.DEVELOPER], credentials[Role.RUNNER]
    with Client(developer.url, team=team, actor="user:somebody-else") as client:
        assert client.actor == developer.user  # not what the settings claim
        client.clusters().create("dev")
        job = client.jobs().submit("hello", Greet("you"), cluster="dev")
    with Client(runner.url, team=team, actor="user:somebody-else") as client:
        client.runner(cluster="dev", tasks=[Greet, Wave]).run_all()
        events = list(client.events().list())
    actors = {s.event.type: s.event.actor for s in events}
    assert actors["ClusterCreated"] == actors["JobSubmitted"] == developer.user
    assert actors["TaskClaimed"] == actors["TaskCompleted"] == runner.user
    assert job.id in {getattr(s.event, "job_id", None) for s in events}


def test_a_script_call_cannot_record_another_actor(
    server: Server, team: str, provision: Provision
) -> None:
    credentials = provision(team)
    developer, runner = credentials[Role.DEVELOPER], credentials[Role.RUNNER]
    keys, codec = Keys("tilebox", team), Codec()
    event = forged(team, runner.user, "forged")
    args = ["", 1, 60_000, event.id, codec.encode(event)]
    head = [keys.log(CONTROL), keys.dedup(CONTROL), keys.deployments, keys.log_head(CONTROL),
            keys.dedup_previous(CONTROL)]  # fmt: skip
    with raw(server, developer) as direct:
        # naming the runner's actor key, to be recorded as the runner: refused, nothing written
        as_runner = [*head, keys.actor(runner.user)]
        denied(lambda: direct.eval(append_script(), len(as_runner), *as_runner, *args))
        assert direct.xlen(keys.log(CONTROL)) == 0
        # its own actor key, and the event saying it is the runner's: recorded as the developer's
        as_itself = [*head, keys.actor(developer.user)]
        direct.eval(append_script(), len(as_itself), *as_itself, *args)
    with Client(credentials[Role.AUDITOR].url, team=team) as auditor:
        [stored] = [s for s in auditor.events().list() if s.event.type == "ClusterCreated"]
        assert stored.event.actor == developer.user
        assert auditor.clusters().find("forged").created_by == developer.user


def test_an_actor_key_of_another_tag_or_without_an_actor_is_refused(
    server: Server, team: str
) -> None:
    keys, other = Keys("tilebox", team), Keys("tilebox", other_team())
    event = forged(team, "user:a", "x")
    args = ["", 1, 60_000, event.id, Codec().encode(event)]
    head = [keys.log(CONTROL), keys.dedup(CONTROL), keys.deployments, keys.log_head(CONTROL),
            keys.dedup_previous(CONTROL)]  # fmt: skip
    with server.redis_client() as admin:  # may write any key: the script itself must refuse
        cases = [
            (keys.actor(""), "no actor in the actor key"),
            (keys.actor("user:a}x"), "no actor in the actor key"),
            (keys.deployments, "no actor key of"),  # not an actor key: none was given
        ]
        if not isinstance(server, ClusterProcess):  # a cluster refuses keys of two slots itself
            cases.append((other.actor("user:a"), "no actor key of"))
        for actor_key, says in cases:
            with pytest.raises(redis.exceptions.ResponseError, match=says):
                admin.eval(append_script(), 6, *head, actor_key, *args)  # type: ignore[no-untyped-call]
        assert admin.xlen(keys.log(CONTROL)) == 0
