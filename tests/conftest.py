"""Fixtures: real servers (embedded Valkey always, system Redis where installed), one team per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner, Result

from tests.servers import ServerProcess, available_backends
from tilebox_core import Client

BACKENDS = available_backends()


@pytest.fixture(autouse=True)
def _default_logging() -> Iterator[None]:
    """A command run in-process configures logging (at warning, say); later tests that capture
    debug events must not inherit that."""
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may touch the developer's own server, team or home."""
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


@pytest.fixture(scope="session", params=sorted(BACKENDS))
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server shared by the session's tests of one backend; tests isolate by team."""
    name = request.param
    process = ServerProcess(name, BACKENDS[name], tmp_path_factory.mktemp(name)).start()
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
def client(server: ServerProcess, team: str) -> Iterator[Client]:
    with Client(server.url, team=team, actor="user:test") as c:
        yield c


class Cli:
    """Runs ``tilebox`` in-process against the test's server and team."""

    def __init__(self, url: str, team: str) -> None:
        self.env = {"TILEBOX_REDIS_URL": url, "TILEBOX_TEAM": team, "TILEBOX_ACTOR": "user:cli"}
        self.runner = CliRunner()

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
def cli(server: ServerProcess, team: str) -> Cli:
    return Cli(server.url, team)


def project_env(**extra: str) -> dict[str, str]:
    """Environment for a ``tilebox`` subprocess: this interpreter's venv first on PATH."""
    env = dict(os.environ)
    env.update(extra)
    return env
