"""Throwaway workflow projects on disk for the build tests (config, selection, discovery, build)."""

from __future__ import annotations

from pathlib import Path

from tilebox_core.build.config import CONFIG_FILE, WorkflowConfig, load_config

CONFIG = """
[workflow]
slug = "demo"
root = "{root}"
runner = "demo.runner:runner"

[build]
include = {include}
exclude = {exclude}
use_gitignore = {use_gitignore}
"""

RUNNER = """
from tilebox_core.task import Task
from tilebox_runner import Runner


class Fetch(Task):
    scene_id: str
    limit: int = 10

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "demo.Fetch", "v1.2"

    def execute(self, context) -> None:
        context.submit_subtask(Store(self.scene_id))


class Store(Task):
    scene_id: str

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "demo.Store", "v1.0"

    def execute(self, context) -> None:
        pass


runner = Runner(tasks=[Store, Fetch])
"""


def write_files(root: Path, files: dict[str, str]) -> None:
    for path, text in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def write_config(
    directory: Path,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    use_gitignore: bool = True,
    extra: str = "",
    root: str = ".",
) -> WorkflowConfig:
    """Write ``tilebox.workflow.toml`` (package ``demo``) into ``directory`` and load it."""
    text = CONFIG.format(
        include=toml_list(include or ["demo/**/*.py"]),
        exclude=toml_list(exclude or []),
        use_gitignore=str(use_gitignore).lower(),
        root=root,
    )
    (directory / CONFIG_FILE).write_text(text + extra)
    return load_config(directory / CONFIG_FILE)


def demo_project(root: Path, runner: str = RUNNER, **config: object) -> WorkflowConfig:
    """A buildable project: package ``demo`` with two tasks, selected by ``demo/**/*.py``."""
    write_files(root, {"demo/__init__.py": "", "demo/runner.py": runner})
    return write_config(root, **config)  # type: ignore[arg-type]
