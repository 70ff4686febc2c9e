"""Build-time benchmark: a workflow project of 10,000 small files, built cold and rebuilt unchanged.

    python benchmarks/build_bench.py [--files N] [--runs R]

Prints plain lines such as ``cold build: 1.23 s (10000 files)``. Targets on a 2-core machine: cold
build < 3 s, unchanged rebuild < 0.3 s. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from tilebox_core.build.config import WorkflowConfig, load_config
from tilebox_core.build.release import BuildResult, build_release
from tilebox_core.build.selection import select_files

RUNNER = """
from tilebox_core.task import Task
from tilebox_runner import Runner


class Fetch(Task):
    scene_id: str

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "bench.Fetch", "v1.0"

    def execute(self, context) -> None:
        pass


runner = Runner(tasks=[Fetch])
"""

CONFIG = """
[workflow]
slug = "bench"
runner = "bench.runner:runner"

[build]
include = ["bench/**/*.py", "bench/**/*.txt", "pyproject.toml"]
exclude = ["**/test_*.py"]
"""


def make_project(root: Path, files: int) -> None:
    (root / "bench").mkdir()
    (root / "bench" / "__init__.py").write_text("")
    (root / "bench" / "runner.py").write_text(RUNNER)
    (root / "pyproject.toml").write_text('[project]\nname = "bench"\nversion = "0.1.0"\n')
    (root / "tilebox.workflow.toml").write_text(CONFIG)
    (root / ".gitignore").write_text("__pycache__/\n*.pyc\n")
    for index in range(files - 3):
        directory = root / "bench" / "data" / f"d{index // 100:03d}"
        if index % 100 == 0:
            directory.mkdir(parents=True)
        suffix = "py" if index % 2 else "txt"
        (directory / f"f{index:05d}.{suffix}").write_text(
            f"VALUE = {index}\n# {'x' * (index % 200)}\n"
        )


class StageClock:
    """A progress callback that records when each build stage finished."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.finished: dict[str, float] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if done == total:
            self.finished[stage] = time.perf_counter()

    def summary(self) -> str:
        previous, parts = self.start, []
        for stage, at in self.finished.items():
            parts.append(f"{stage} {at - previous:.2f} s")
            previous = at
        return ", ".join(parts)


def build(config: WorkflowConfig) -> tuple[float, BuildResult, StageClock]:
    clock = StageClock()
    result = build_release(config, clock)
    return time.perf_counter() - clock.start, result, clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory(prefix="tilebox-bench-") as scratch:
        root = Path(scratch)
        make_project(root, args.files)
        # flush the generated files first: their writeback would otherwise slow the cold build's
        # own file creation (the runtime check unpacks the artifact) and measure the generator
        os.sync()
        config = load_config(root / "tilebox.workflow.toml")
        count = len(select_files(config))
        selection = min(_seconds(lambda: select_files(config)) for _ in range(args.runs))
        print(f"selection: {selection:.3f} s ({count} files)")
        cold, result, clock = build(config)
        print(f"cold build: {cold:.2f} s ({count} files, artifact {result.size:,} bytes)")
        print(f"  stages: {clock.summary()}")
        unchanged = min(build(config)[0] for _ in range(args.runs))
        print(f"unchanged rebuild: {unchanged:.3f} s ({count} files)")
        (root / "bench" / "runner.py").write_text(RUNNER + "\n# changed\n")
        changed, _, clock = build(config)
        print(f"rebuild after a change: {changed:.2f} s ({count} files)")
        print(f"  stages: {clock.summary()}")


def _seconds(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
