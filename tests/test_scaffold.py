"""``workflow init``: a project that builds as generated; nothing existing is ever overwritten."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tilebox_core.build.config import CONFIG_FILE, find_config, load_config
from tilebox_core.build.release import build_release
from tilebox_core.build.scaffold import init_project, package_name
from tilebox_core.domain.errors import Conflict


def test_init_writes_a_project_named_after_the_directory(tmp_path: Path) -> None:
    directory = tmp_path / "Scene Fetcher"

    written = init_project(directory)

    assert written == [
        directory / CONFIG_FILE,
        directory / "pyproject.toml",
        directory / "scene_fetcher" / "__init__.py",
        directory / "scene_fetcher" / "runner.py",
    ]
    config = load_config(directory / CONFIG_FILE)
    assert config.workflow.slug == "scene-fetcher"
    assert config.workflow.runner == "scene_fetcher.runner:runner"


def test_generated_project_builds_as_is(tmp_path: Path) -> None:
    init_project(tmp_path, name="My Scenes")

    result = build_release(load_config(find_config(tmp_path)))

    assert result.workflow == "my-scenes"
    assert [(t.name, t.version) for t in result.tasks] == [
        ("my-scenes.Greet", "v1.0"),
        ("my-scenes.Say", "v1.0"),
    ]
    assert result.files == ["my_scenes/__init__.py", "my_scenes/runner.py", "pyproject.toml"]


class RecordingContext:
    def __init__(self) -> None:
        self.submitted: list[Any] = []

    def submit_subtask(self, task: Any, **options: Any) -> None:
        self.submitted.append(task)


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("generated_runner", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_task_submits_the_other_as_a_subtask(tmp_path: Path) -> None:
    init_project(tmp_path, name="hello")
    module = load_module(tmp_path / "hello" / "runner.py")
    context = RecordingContext()

    module.Greet("Ada").execute(context)

    assert context.submitted == [module.Say("Hello Ada!")]
    assert "generated_runner" not in sys.modules


@pytest.mark.parametrize("existing", [CONFIG_FILE, "pyproject.toml", "demo/runner.py"])
def test_init_refuses_to_overwrite_and_writes_nothing(tmp_path: Path, existing: str) -> None:
    target = tmp_path / existing
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("mine\n")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    with pytest.raises(Conflict) as raised:
        init_project(tmp_path, name="demo")

    assert str(target) in str(raised.value)
    assert target.read_text() == "mine\n"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    ("slug", "package"),
    [
        ("scenes", "scenes"),
        ("my-scenes", "my_scenes"),
        ("2024-run", "workflow_2024_run"),
        ("class", "workflow_class"),
    ],
)
def test_package_name(slug: str, package: str) -> None:
    assert package_name(slug) == package
