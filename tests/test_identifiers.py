"""The rules for task identifiers and a release's entrypoint, each written once in the domain, as
tables; and the places that apply them (config, discovery, publish) give the same verdicts."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from tests.projects import write_config
from tilebox_core.build.config import load_config
from tilebox_core.build.discovery import BuildError, DiscoveredTask, _validated
from tilebox_core.domain import control
from tilebox_core.domain.entrypoint import EntrypointError, check_entrypoint
from tilebox_core.domain.errors import InvalidInput
from tilebox_core.domain.events import Origin, ReleaseTask, WorkflowCreated
from tilebox_core.domain.identifiers import (
    TaskIdentifier,
    can_run,
    check_identifiers,
    check_task_name,
    make_identifier,
)
from tilebox_core.domain.projection import ControlState, fold


@pytest.mark.parametrize(
    "name",
    ["a", "acme.io/Fetch", "scenes.Fetch@eu", "x" * 256, "A_b-c:d", "with space", "tab\t",
     "ümlaut", "a,b", "東京", "{tag}", "100%", "line\nbreak", " "],
)  # fmt: skip
def test_valid_task_names(name: str) -> None:
    """As Tilebox: 1-256 characters of any kind."""
    assert check_task_name(name) == name


@pytest.mark.parametrize(
    ("name", "problem"),
    [("", "needs 1-256 characters"), ("x" * 257, "257 characters, over the limit of 256"),
     ("a\ud800", "lone UTF-16 surrogate"), (42, "a task name is a string")],
)  # fmt: skip
def test_invalid_task_names(name: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match="invalid task name") as caught:
        check_task_name(name)
    assert problem in str(caught.value)


@pytest.mark.parametrize(
    ("version", "problem"),
    [("1.0", "invalid task version '1.0'"), ("v1", "invalid task version"),
     ("v01.0", "invalid task version"), ("v1.0.0", "invalid task version")],
)  # fmt: skip
def test_invalid_versions(version: str, problem: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(problem)):
        make_identifier("a", version)


def test_identifiers_are_checked_and_unique() -> None:
    assert check_identifiers([("b", "v1.0"), ("a", "v2.1"), ("a", "v1.0")]) == [
        TaskIdentifier("a", "v1.0"), TaskIdentifier("a", "v2.1"), TaskIdentifier("b", "v1.0"),
    ]  # fmt: skip
    with pytest.raises(
        InvalidInput, match=re.escape("duplicate task identifier a@v1.0; give each task")
    ):
        check_identifiers([("a", "v1.0"), ("a", "v1.0")])
    with pytest.raises(InvalidInput, match="invalid task name"):
        check_identifiers([("", "v1.0")])


@pytest.mark.parametrize(
    ("provided", "submitted", "runs"),
    [("v1.2", "v1.0", True), ("v1.2", "v1.2", True), ("v1.2", "v1.3", False),
     ("v2.0", "v1.0", False)],
)  # fmt: skip
def test_a_minor_serves_the_minors_below_it(provided: str, submitted: str, runs: bool) -> None:
    assert can_run(TaskIdentifier("t", provided), TaskIdentifier("t", submitted)) is runs


ENTRYPOINTS = [
    (None, None, None, "has neither runner nor command"),
    ("m:r", ["x"], None, "has both runner and command"),
    ("scenes.runner", None, "runner", "is not 'module:object'"),
    ("1m:r", None, "runner", "is not 'module:object'"),
    (None, [], "command", "non-empty list of non-empty strings"),
    (None, ["python", ""], "command", "non-empty list of non-empty strings"),
]


@pytest.mark.parametrize(("runner", "command", "field", "problem"), ENTRYPOINTS)
def test_exactly_one_well_formed_entrypoint(
    runner: str | None, command: list[str] | None, field: str | None, problem: str
) -> None:
    with pytest.raises(EntrypointError) as caught:
        check_entrypoint(runner, command)
    assert caught.value.field == field and problem in str(caught.value)
    check_entrypoint("scenes.runner:runner", None)
    check_entrypoint(None, ["python", "-m", "scenes"])


def _state_with_workflow() -> ControlState:
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    created = WorkflowCreated(id="e1", at=at, actor="a", team="t", slug="w", name="w")
    return fold([("1-0", created)])


@pytest.mark.parametrize(("runner", "command", "field", "problem"), ENTRYPOINTS)
def test_config_discovery_and_publish_apply_the_same_entrypoint_rule(
    runner: str | None, command: list[str] | None, field: str | None, problem: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    origin = Origin("t", "a", dt.datetime(2026, 1, 1, tzinfo=dt.UTC), lambda: "r1")
    with pytest.raises(InvalidInput, match=re.escape(problem)):
        control.publish_release(
            _state_with_workflow(), origin, workflow="w", digest="sha256:x", size=1, tasks=[],
            runner=runner, command=command, fingerprint="f",
        )  # fmt: skip
    lines = ['[workflow]\nslug = "demo"\n']
    if runner is not None:
        lines.append(f'runner = "{runner}"\n')
    if command is not None:
        lines.append(f"command = {command!r}\n".replace("'", '"'))
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "x.py").write_text("")
    path = tmp_path / "tilebox.workflow.toml"
    path.write_text("".join(lines) + '[build]\ninclude = ["demo/*.py"]\n')
    with pytest.raises(InvalidInput, match=re.escape(problem)) as caught:
        load_config(path)
    key = f"workflow.{field}" if field else "[workflow]"
    assert str(caught.value).startswith(f"{path}: {key} ")


def test_discovery_and_publish_refuse_the_same_identifiers() -> None:
    origin = Origin("t", "a", dt.datetime(2026, 1, 1, tzinfo=dt.UTC), lambda: "r1")
    for tasks, problem in (
        ([("a", "v1.0"), ("a", "v1.0")], "duplicate task identifier a@v1.0"),
        ([("", "v1.0")], "invalid task name ''"),
        ([("a", "1.0")], "invalid task version '1.0'"),
    ):
        with pytest.raises(BuildError, match=re.escape(problem)):
            _validated([DiscoveredTask(n, v, {}) for n, v in tasks], "runner 'm:r'", "")
        with pytest.raises(InvalidInput, match=re.escape(problem)):
            control.publish_release(
                _state_with_workflow(), origin, workflow="w", digest="sha256:x", size=1,
                tasks=[ReleaseTask(n, v, {}) for n, v in tasks], runner="m:r", command=None,
                fingerprint="f",
            )  # fmt: skip


def test_a_config_with_a_valid_entrypoint_loads(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "runner.py").write_text("")
    assert write_config(tmp_path).workflow.runner == "demo.runner:runner"
