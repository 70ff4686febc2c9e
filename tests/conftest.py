"""Fixtures: real servers (embedded Valkey always, system Redis where installed, and for tests
marked ``cluster`` a 3-master Valkey Cluster), one team per test."""

from __future__ import annotations

import os
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import structlog
from click.testing import CliRunner, Result

from tests.servers import ClusterProcess, S3Server, ServerProcess, available_backends
from tilebox_core import Client

BACKENDS = available_backends()
CLUSTER = ClusterProcess.name
# TILEBOX_TEST_AS_TEAM=1: the ``client`` and ``cli`` fixtures log in as their team's developer
# (created for the test, removed afterwards) instead of the server's default user, so that the
# suite checks that the developer role's ACL allows everything the library does.
AS_TEAM = os.environ.get("TILEBOX_TEST_AS_TEAM") == "1"
# A test of the actor TILEBOX_ACTOR names, which ACLs replace with the authenticated user.
ACTOR_FROM_SETTINGS = pytest.mark.skipif(AS_TEAM, reason="ACLs on: the actor is the ACL user")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test using ``server`` runs on each backend; one marked ``cluster`` on the cluster
    too, and one marked ``cluster(only=True)`` on the cluster alone."""
    chosen = any(
        "server" in str(m.args[0]).replace(" ", "").split(",")
        for m in metafunc.definition.iter_markers("parametrize")
    )  # a test that names its backends itself
    if "server" in metafunc.fixturenames and not chosen:
        names = sorted(BACKENDS)
        marker = metafunc.definition.get_closest_marker("cluster")
        if marker is not None:
            names = [CLUSTER] if marker.kwargs.get("only") else [*names, CLUSTER]
        metafunc.parametrize("server", names, indirect=True, scope="session")


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test may touch the developer's own server, team or home, nor leave logging configured
    (an in-process ``tilebox`` configures structlog, which would filter another test's logs)."""
    for name in (
        "TILEBOX_REDIS_URL",
        "TILEBOX_TEAM",
        "TILEBOX_CLUSTER",
        "TILEBOX_PREFIX",
        "TILEBOX_LOG_LEVEL",
        "TILEBOX_LOG_FORMAT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TILEBOX_HOME", str(tmp_path / "home"))
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess | ClusterProcess]:
    """A server (or cluster) shared by the session's tests of one backend; tests isolate by
    team."""
    name = request.param
    process: ServerProcess | ClusterProcess
    if name == CLUSTER:
        process = ClusterProcess(tmp_path_factory.mktemp(name)).start()
    else:
        process = ServerProcess(name, BACKENDS[name], tmp_path_factory.mktemp(name))
        process.start()
    yield process
    process.stop()


@pytest.fixture
def private_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of its own, for tests that kill or restart it (embedded Valkey)."""
    process = ServerProcess("valkey", BACKENDS["valkey"], tmp_path / "private-server").start()
    yield process
    process.kill()


@pytest.fixture
def team() -> str:
    return "t-" + uuid.uuid4().hex[:12]


@pytest.fixture
def team_url(server: ServerProcess | ClusterProcess, team: str) -> Iterator[str]:
    """The URL the test's ``client`` and ``cli`` use: the server's, or with TILEBOX_TEST_AS_TEAM=1
    its team developer's."""
    if not AS_TEAM:
        yield server.url
        return
    with Client(server.url, team=team, actor="user:admin") as admin:
        change = admin.teams().create(team)
    yield next(c.url for c in change.credentials if c.role == "developer")
    nodes = server.nodes if isinstance(server, ClusterProcess) else [server]
    for node in nodes:
        with redis.Redis(port=node.port) as each:
            each.execute_command("ACL", "DELUSER", *change.users)


@pytest.fixture
def client(team_url: str, team: str) -> Iterator[Client]:
    with Client(team_url, team=team, actor="user:test") as c:
        yield c


class Cli:
    """Runs ``tilebox`` in-process against the test's server and team."""

    def __init__(self, url: str, team: str) -> None:
        self.env = {"TILEBOX_REDIS_URL": url, "TILEBOX_TEAM": team, "TILEBOX_ACTOR": "user:cli"}
        self.runner = CliRunner()
        # who its events name: TILEBOX_ACTOR, or the ACL user of the URL when it names one
        self.actor = urllib.parse.urlsplit(url).username or "user:cli"

    def __call__(self, *args: str, ok: bool = True) -> Result:
        from tilebox_cli.main import cli

        result = self.runner.invoke(cli, list(args), env=self.env, catch_exceptions=True)
        if ok and result.exit_code != 0:
            raise AssertionError(
                f"tilebox {' '.join(args)} exited {result.exit_code}: {result.output}"
            )
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result


@pytest.fixture
def cli(team_url: str, team: str) -> Cli:
    return Cli(team_url, team)


def project_env(**extra: str) -> dict[str, str]:
    """Environment for a ``tilebox`` subprocess: this interpreter's venv first on PATH."""
    env = dict(os.environ)
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()
