"""A bad environment is one clear line, not a traceback: Redis URLs, TILEBOX_HOME, and a server
that accepts connections but never answers (TLS against a plain port)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tilebox_cli.main import cli


def run(env: dict[str, str]) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["cluster", "list"], env=env, catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://localhost:99999", "Port out of range"),
        ("redis://localhost:abc", "Port could not be cast to integer"),
        ("http://localhost:6379", "use redis://, rediss://, unix://"),
    ],
)
def test_a_bad_redis_url_is_one_line(url: str, says: str) -> None:
    code, output = run({"TILEBOX_REDIS_URL": url})
    assert code == 1 and says in output and "TILEBOX_REDIS_URL" in output
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1


def test_a_home_that_cannot_hold_the_embedded_server_is_one_line(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for home, says in ((a_file, "Not a directory"), (Path("/proc/nope"), "No such file")):
        code, output = run({"TILEBOX_HOME": str(home)})
        assert code == 1 and says in output and "TILEBOX_HOME" in output, output
        assert "Traceback" not in output and len(output.strip().splitlines()) == 1


@pytest.fixture
def silent_port() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP port that accepts connections and never says anything; the accepted ones listed."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            accepted.append(connection)

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1], accepted
    listener.close()
    for connection in accepted:
        connection.close()


def test_a_server_that_never_answers_is_given_up_after_one_connect_timeout(
    silent_port: tuple[int, list[socket.socket]],
) -> None:
    """Before: every one of the driver's retries waited out the timeout (21 s with the default
    5 s), the connection attempts counted here."""
    port, accepted = silent_port
    env = {"TILEBOX_REDIS_URL": f"rediss://127.0.0.1:{port}", "TILEBOX_CONNECT_TIMEOUT": "0.5"}
    code, output = run(env)
    assert code == 1 and "cannot reach Redis" in output and "Timeout" in output, output
    assert len(accepted) == 1
