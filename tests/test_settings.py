"""Settings: read from the environment once per entry point, validated there, passed down."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.servers import ServerProcess
from tests.test_layers import SOURCES
from tilebox_core import Client, ExecutionContext, InvalidInput, Settings, Task
from tilebox_runner.settings import RuntimeSettings

HOME = Path.home()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, Settings(home=HOME / ".local/share/tilebox")),
        ({"XDG_DATA_HOME": "/data"}, Settings(home=Path("/data/tilebox"))),
        ({"XDG_DATA_HOME": "/data", "TILEBOX_HOME": "~/tb"}, Settings(home=HOME / "tb")),
        (
            {"TILEBOX_REDIS_URL": "redis://h:1/0", "TILEBOX_TEAM": "acme", "TILEBOX_PREFIX": "tb",
             "TILEBOX_ACTOR": "ci", "TILEBOX_CLUSTER": "prod-eu", "TILEBOX_HOME": "/srv/tb",
             "TILEBOX_CONNECT_TIMEOUT": "0.5"},
            Settings(url="redis://h:1/0", team="acme", prefix="tb", actor="ci", cluster="prod-eu",
                     home=Path("/srv/tb"), connect_timeout=0.5),
        ),
        # an empty variable counts as unset, as `TILEBOX_TEAM= tilebox ...` means
        ({"TILEBOX_TEAM": "", "TILEBOX_REDIS_URL": "", "TILEBOX_HOME": "/h"},
         Settings(home=Path("/h"))),
    ],
)  # fmt: skip
def test_settings_from_the_environment(environ: dict[str, str], expected: Settings) -> None:
    assert Settings.from_env(environ) == expected


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("TILEBOX_REDIS_URL", "http://x", "unsupported Redis URL"),
        ("TILEBOX_TEAM", "Team A", "invalid team name"),
        ("TILEBOX_CLUSTER", "Prod!", "invalid cluster slug"),
        ("TILEBOX_PREFIX", "a:b", "invalid key prefix"),
        ("TILEBOX_CONNECT_TIMEOUT", "soon", "not a number of seconds"),
        ("TILEBOX_CONNECT_TIMEOUT", "0", "above 0"),
        ("TILEBOX_CONNECT_TIMEOUT", "nan", "above 0"),
        ("TILEBOX_CONCURRENCY", "0", "must be at least 1"),
        ("TILEBOX_CONCURRENCY", "two", "not a whole number"),
        ("TILEBOX_LEASE_SECONDS", "-1", "above 0"),
        ("TILEBOX_UNTIL_IDLE", "yes", "must be 1 (on) or 0 (off)"),
        ("TILEBOX_SUPERVISOR_PID", "self", "not a whole number"),
        ("TILEBOX_LOG_LEVEL", "loud", "must be one of debug, info, warning, error"),
        ("TILEBOX_LOG_FORMAT", "xml", "must be one of console, json"),
        ("TILEBOX_DISCOVER", "true", "must be 1 (on) or 0 (off)"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(name: str, value: str, problem: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        RuntimeSettings.from_env({name: value})
    message = str(caught.value)
    assert message.startswith(f"{name}={value!r}: ") and problem in message
    assert message.endswith(f"fix or unset {name}") and "\n" not in message


def test_a_bad_url_is_refused_without_showing_its_password() -> None:
    with pytest.raises(InvalidInput) as caught:
        Settings.from_env({"TILEBOX_REDIS_URL": "http://ana:s3cret@host:6379/0"})
    assert str(caught.value) == (
        "TILEBOX_REDIS_URL='http://ana:***@host:6379/0': unsupported Redis URL "
        "'http://ana:***@host:6379/0': use redis://, rediss://, unix:// or "
        "redis+cluster://host:port[,host:port...]; fix or unset TILEBOX_REDIS_URL"
    )


def test_a_child_process_reads_back_the_settings_it_was_given() -> None:
    core = Settings(url="unix:///tmp/v.sock", team="acme", prefix="tb", actor="ci",
                    cluster="dev", home=Path("/srv/tb"), connect_timeout=2.5)  # fmt: skip
    runtime = RuntimeSettings(
        core=core, runner_id="host-1/abc/0", release_id="r1", concurrency=4, lease_seconds=1.5,
        until_idle=True, supervisor_pid=4242, log_level="debug", log_format="json",
    )  # fmt: skip
    assert RuntimeSettings.from_env(runtime.environment()) == runtime
    assert RuntimeSettings.from_env({}) == RuntimeSettings(core=Settings.from_env({}))


def test_explicit_arguments_override_single_settings() -> None:
    base = Settings(team="acme", cluster="dev")
    assert base.override(team=None, cluster="prod") == Settings(team="acme", cluster="prod")
    assert base.override() is base


def test_client_without_arguments_uses_the_environment(
    server: ServerProcess, team: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TILEBOX_REDIS_URL", server.url)
    with Client() as client:
        assert client.team == "default" and client.url == server.url
    monkeypatch.setenv("TILEBOX_TEAM", team)
    monkeypatch.setenv("TILEBOX_CLUSTER", "dev")
    with Client() as client:
        assert client.team == team and client.settings.cluster == "dev"
        client.clusters().create("dev")
        assert client.runner(tasks=[_Noop]).cluster == "dev"  # the default cluster of runners
    with Client(team="other") as client:
        assert client.team == "other"  # an argument wins over the environment


class _Noop(Task):
    def execute(self, context: ExecutionContext) -> None:
        pass


def test_the_cli_refuses_a_bad_setting_with_one_line(server: ServerProcess, team: str) -> None:
    cli = Cli(server.url, team)
    cli.env["TILEBOX_CONNECT_TIMEOUT"] = "soon"
    result = cli("cluster", "list", ok=False)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip() == (
        "Error: TILEBOX_CONNECT_TIMEOUT='soon': not a number of seconds, e.g. 5 or 0.5; "
        "fix or unset TILEBOX_CONNECT_TIMEOUT"
    )


def test_a_runtime_process_refuses_a_bad_setting_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tilebox_runner.runtime", "scenes.runner:runner"],
        cwd=tmp_path, env={"TILEBOX_CONCURRENCY": "0", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "runtime stopped: TILEBOX_CONCURRENCY='0': must be at least 1; fix or unset "
        "TILEBOX_CONCURRENCY"
    )


# --- nothing else reads the environment -------------------------------------------------------------

# The modules whose job is to read the environment.
SETTINGS_MODULES = {"tilebox_core.settings", "tilebox_runner.settings"}
# Reads that are not tilebox settings: the OS's own variable, which ``tempfile`` reads as well.
OS_VARIABLES = {("tilebox_core.build.release", "TMPDIR")}
_READERS = {"environ", "environb", "getenv", "getenvb"}


def environment_reads(module: str, source: str) -> list[str]:
    """Where ``source`` reads the process environment, as "module:line"; building a child's
    environment from a copy (``dict(os.environ, ...)``) is not reading it."""
    tree = ast.parse(source)
    copied = {
        id(node.args[0])
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        and node.func.id == "dict" and node.args
    }  # fmt: skip
    allowed = {
        id(node.func.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get" and node.args and isinstance(node.args[0], ast.Constant)
        and (module, node.args[0].value) in OS_VARIABLES
    }  # fmt: skip
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [f"{module}:{node.lineno}" for a in node.names if a.name in _READERS]
        elif (
            isinstance(node, ast.Attribute) and node.attr in _READERS
            and isinstance(node.value, ast.Name) and node.value.id == "os"
            and id(node) not in copied and id(node) not in allowed
        ):  # fmt: skip
            found.append(f"{module}:{node.lineno}")
    return found


def test_only_the_settings_modules_read_the_environment() -> None:
    reads = [
        read
        for module, path in SOURCES.items()
        if module not in SETTINGS_MODULES
        for read in environment_reads(module, path.read_text())
    ]
    assert reads == [], "read the environment outside the settings modules: " + ", ".join(reads)


@pytest.mark.parametrize(
    ("source", "reads"),
    [
        ("import os\nos.environ.get('TILEBOX_TEAM')", 1),
        ("import os\nx = os.environ['TILEBOX_TEAM']", 1),
        ("import os\nos.getenv('TILEBOX_TEAM')", 1),
        ("from os import environ", 1),
        ("import os\nos.environ.get('TMPDIR')", 1),  # only where it is allowed
        ("import os\nenv = dict(os.environ, TILEBOX_TEAM='a')", 0),  # a child's environment
    ],
)
def test_the_environment_check_finds_reads(source: str, reads: int) -> None:
    assert len(environment_reads("tilebox_core.x", source)) == reads
