"""The runtime check: a fresh Python process imports the runner from the unpacked artifact."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tests.projects import RUNNER, demo_project, write_files
from tilebox_core.build.discovery import BuildError, discover_tasks
from tilebox_core.build.release import build_release
from tilebox_core.domain.errors import InvalidInput
from tilebox_runner import Runner
from tilebox_runner.discover import emit_discovery

SPEC = "demo.runner:runner"


def unpacked(tmp_path: Path, runner_source: str, **extra: str) -> Path:
    write_files(tmp_path, {"demo/__init__.py": "", "demo/runner.py": runner_source, **extra})
    return tmp_path


def discovery_failure(directory: Path, spec: str = SPEC) -> BuildError:
    with pytest.raises(BuildError) as raised:
        discover_tasks(directory, spec, None)
    assert "\n" not in str(raised.value)
    return raised.value


def test_good_runner_reports_identifiers_and_schemas(tmp_path: Path) -> None:
    tasks = discover_tasks(unpacked(tmp_path, "print('import noise')\n" + RUNNER), SPEC, None)

    assert [(t.name, t.version) for t in tasks] == [("demo.Fetch", "v1.2"), ("demo.Store", "v1.0")]
    fetch = tasks[0].input_schema
    definition = fetch["$defs"][fetch["$ref"].rsplit("/", 1)[-1]]
    assert definition["required"] == ["scene_id"]
    assert set(definition["properties"]) == {"scene_id", "limit"}


def test_import_error_shows_the_childs_error(tmp_path: Path) -> None:
    error = discovery_failure(unpacked(tmp_path, "import not_installed_dependency\n" + RUNNER))

    assert "runtime check of runner 'demo.runner:runner' failed" in str(error)
    assert "No module named 'not_installed_dependency'" in str(error)
    assert "Traceback" in error.details
    assert isinstance(error, InvalidInput)


def test_exception_at_import_shows_the_childs_error(tmp_path: Path) -> None:
    error = discovery_failure(unpacked(tmp_path, "raise RuntimeError('no config here')\n"))

    assert "RuntimeError: no config here" in str(error)


def test_missing_object(tmp_path: Path) -> None:
    error = discovery_failure(unpacked(tmp_path, RUNNER), "demo.runner:runnr")

    assert "has no attribute 'runnr'" in str(error)


def test_object_that_is_not_a_runner(tmp_path: Path) -> None:
    error = discovery_failure(
        unpacked(tmp_path, RUNNER + "\ntasks = [Fetch, Store]\n"), "demo.runner:tasks"
    )

    assert "is a list, not a tilebox_runner.Runner" in str(error)


def test_duplicate_identifiers(tmp_path: Path) -> None:
    source = RUNNER.replace('"demo.Store", "v1.0"', '"demo.Fetch", "v1.2"')

    error = discovery_failure(unpacked(tmp_path, source))

    assert "duplicate task identifier demo.Fetch@v1.2" in str(error)


def test_invalid_version(tmp_path: Path) -> None:
    error = discovery_failure(unpacked(tmp_path, RUNNER.replace('"v1.0"', '"1.0"')))

    assert "invalid task version '1.0'" in str(error)


def test_hanging_import_times_out(tmp_path: Path) -> None:
    directory = unpacked(tmp_path, "import time\ntime.sleep(60)\n")

    with pytest.raises(BuildError, match="timed out after 1 s"):
        discover_tasks(directory, SPEC, None, timeout=1)


MAIN = """
import os
import sys

from tilebox_runner.discover import emit_discovery

from demo.runner import runner

if __name__ == "__main__":
    print("starting up")  # stdout noise before the document is fine: the last line counts
    if os.environ.get("TILEBOX_DISCOVER"):
        emit_discovery(runner)
        sys.exit(0)
    raise SystemExit("would run tasks forever")
"""


def test_command_entrypoint(tmp_path: Path) -> None:
    directory = unpacked(tmp_path, RUNNER, **{"demo/__main__.py": MAIN})

    tasks = discover_tasks(directory, None, ["python", "-m", "demo"])

    assert [t.name for t in tasks] == ["demo.Fetch", "demo.Store"]


BAD_TASK = {"name": "a", "version": "v1", "input_schema": {}}


@pytest.mark.parametrize(
    ("last_line", "message"),
    [
        ("hello", "no valid discovery JSON"),
        (json.dumps({"protocol": 9, "tasks": []}), "discovery protocol 9"),
        (json.dumps({"protocol": 1, "tasks": []}), "provides no tasks"),
        (json.dumps({"protocol": 1, "tasks": [BAD_TASK]}), "invalid task version 'v1'"),
        (json.dumps({"protocol": 1, "tasks": [], "extra": 1}), "no valid discovery JSON"),
    ],
)
def test_command_output_is_validated_strictly(tmp_path: Path, last_line: str, message: str) -> None:
    write_files(tmp_path, {"main.py": f"print({last_line!r})\n"})

    with pytest.raises(BuildError, match=message):
        discover_tasks(tmp_path, None, ["python", "main.py"])


def test_command_that_cannot_start(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="could not start command"):
        discover_tasks(tmp_path, None, ["./no-such-program"])


def test_exactly_one_entrypoint_is_required(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="exactly one of runner"):
        discover_tasks(tmp_path, None, None)


def test_emit_discovery_writes_one_json_line() -> None:
    namespace: dict[str, object] = {}
    exec(compile(RUNNER, "runner.py", "exec"), namespace)
    runner = namespace["runner"]
    assert isinstance(runner, Runner)
    out = io.StringIO()

    emit_discovery(runner, out)

    document = json.loads(out.getvalue())
    assert out.getvalue().count("\n") == 1
    assert document["protocol"] == 1
    assert [t["name"] for t in document["tasks"]] == ["demo.Fetch", "demo.Store"]


def test_discovery_runs_from_the_artifact_not_the_working_tree(tmp_path: Path) -> None:
    """helpers.py is in the working tree but excluded from the build: the runtime check fails."""
    runner = "from demo import helpers\n" + RUNNER
    config = demo_project(tmp_path, runner=runner, exclude=["demo/helpers.py"])
    write_files(tmp_path, {"demo/helpers.py": "VALUE = 1\n"})

    with pytest.raises(BuildError) as raised:
        build_release(config)

    assert "cannot import name 'helpers' from 'demo'" in str(raised.value)


def test_runner_served_from_outside_the_artifact_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An editable install or PYTHONPATH must not stand in for files missing from the artifact."""
    working_tree = unpacked(tmp_path / "tree", RUNNER)
    empty_artifact = tmp_path / "artifact"
    empty_artifact.mkdir()
    monkeypatch.setenv("PYTHONPATH", str(working_tree))

    error = discovery_failure(empty_artifact)

    assert "was imported from" in str(error)
    assert "not from the artifact; add it to [build] include" in str(error)
