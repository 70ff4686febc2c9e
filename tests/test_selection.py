"""File selection: include minus exclude minus .gitignore, symlinks kept inside root, pruning."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pathspec import GitIgnoreSpec

from tests.projects import write_config, write_files
from tilebox_core.build.config import WorkflowConfig
from tilebox_core.build.selection import scan
from tilebox_core.domain.errors import InvalidInput

TREE = {
    "demo/__init__.py": "",
    "demo/runner.py": "",
    "demo/test_runner.py": "",
    "demo/io/read.py": "",
    "demo/io/test_read.py": "",
    "demo/io/data.txt": "",
    "docs/index.md": "",
    "docs/conf.py": "",
    "pyproject.toml": "",
    "setup.py": "",
}


def select_files(config: WorkflowConfig) -> list[str]:
    """The selected files as sorted POSIX paths relative to ``config.root``."""
    return [selected.path for selected in scan(config)]


def test_include_minus_exclude(tmp_path: Path) -> None:
    write_files(tmp_path, TREE)
    config = write_config(
        tmp_path, include=["demo/**/*.py", "pyproject.toml"], exclude=["**/test_*.py"]
    )

    assert select_files(config) == [
        "demo/__init__.py",
        "demo/io/read.py",
        "demo/runner.py",
        "pyproject.toml",
    ]


def test_nested_gitignore_applies_relative_to_its_own_directory(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            **TREE,
            ".gitignore": "*.txt\n/setup.py\n",
            "demo/io/.gitignore": "/read.py\n!data.txt\n",
            "demo/read.py": "",  # "/read.py" in demo/io/.gitignore is anchored there, not here
            "docs/setup.py": "",  # "/setup.py" at the top is anchored to the top
        },
    )
    config = write_config(tmp_path, include=["**/*.py", "**/*.txt"])

    selected = select_files(config)

    assert "demo/io/read.py" not in selected
    assert "demo/read.py" in selected
    assert "demo/io/data.txt" in selected  # the deeper file re-includes it
    assert "setup.py" not in selected
    assert "docs/setup.py" in selected


def test_ignored_directory_is_not_entered_and_gitignore_can_be_disabled(tmp_path: Path) -> None:
    write_files(tmp_path, {**TREE, ".gitignore": "docs/\n!docs/conf.py\n"})

    with_gitignore = select_files(write_config(tmp_path, include=["**/*.py"]))
    without = select_files(write_config(tmp_path, include=["**/*.py"], use_gitignore=False))

    assert "docs/conf.py" not in with_gitignore  # as in git: no re-include below an ignored dir
    assert "docs/conf.py" in without


def test_gitignore_above_root_counts_up_to_the_repository(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    write_files(tmp_path, {".gitignore": "generated.py\n", "project/.gitignore": "/src/local.py\n"})
    project = tmp_path / "project"
    write_files(project / "src", {"a.py": "", "generated.py": "", "local.py": ""})
    config = write_config(project, include=["*.py"], root="src")

    assert select_files(config) == ["a.py"]


def test_build_output_and_git_are_never_selected(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            "demo/a.py": "",
            ".tilebox/build/old.py": "",
            "demo/.tilebox/x.py": "",
            ".git/hooks/pre-commit.py": "",
        },
    )
    config = write_config(tmp_path, include=["**"], use_gitignore=False)

    assert select_files(config) == ["demo/a.py", "tilebox.workflow.toml"]


def test_include_matching_nothing_names_the_pattern_and_the_file(tmp_path: Path) -> None:
    write_files(tmp_path, TREE)
    config = write_config(tmp_path, include=["demo/**/*.py", "uv.lock"])

    with pytest.raises(InvalidInput) as raised:
        select_files(config)

    message = str(raised.value)
    assert str(config.path) in message
    assert "'uv.lock' matches no file" in message


def test_include_whose_every_match_is_excluded_matches_nothing(tmp_path: Path) -> None:
    write_files(tmp_path, TREE)
    config = write_config(tmp_path, include=["demo/*.py", "docs/*.py"], exclude=["docs/"])

    with pytest.raises(InvalidInput, match=r"'docs/\*\.py' matches no file"):
        select_files(config)


def test_include_leaving_root_is_refused(tmp_path: Path) -> None:
    write_files(tmp_path, TREE)
    config = write_config(tmp_path, include=["../shared/*.py"])

    with pytest.raises(InvalidInput, match="leaves the root"):
        select_files(config)


def test_symlinks_inside_root_are_selected_as_files(tmp_path: Path) -> None:
    write_files(tmp_path, {"demo/a.py": "", "shared/util.py": "x = 1\n"})
    (tmp_path / "demo" / "util.py").symlink_to("../shared/util.py")
    (tmp_path / "demo" / "shared").symlink_to("../shared", target_is_directory=True)
    config = write_config(tmp_path, include=["demo/**/*.py"])

    assert select_files(config) == ["demo/a.py", "demo/shared/util.py", "demo/util.py"]


def test_symlink_loops_are_not_followed(tmp_path: Path) -> None:
    write_files(tmp_path, {"demo/a.py": "", "demo/sub/b.py": ""})
    (tmp_path / "demo" / "sub" / "back").symlink_to("..", target_is_directory=True)
    (tmp_path / "demo" / "sub" / "self").symlink_to(".", target_is_directory=True)
    config = write_config(tmp_path, include=["**/*.py"])

    assert select_files(config) == ["demo/a.py", "demo/sub/b.py"]


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_symlink_out_of_root_is_refused_naming_the_link(tmp_path: Path, kind: str) -> None:
    outside = tmp_path / "outside"
    write_files(outside, {"secret.py": ""})
    project = tmp_path / "project"
    write_files(project, {"demo/a.py": ""})
    link = project / "demo" / ("leak.py" if kind == "file" else "leak")
    link.symlink_to(outside / "secret.py" if kind == "file" else outside)
    config = write_config(project, include=["demo/**/*.py"])

    with pytest.raises(InvalidInput) as raised:
        select_files(config)

    assert f"symlink {link}" in str(raised.value)
    assert "outside the workflow root" in str(raised.value)


def test_symlink_out_of_root_that_is_not_selected_is_ignored(tmp_path: Path) -> None:
    write_files(tmp_path, {"demo/a.py": ""})
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(os.path.realpath("/usr/bin/env"))
    (tmp_path / "data").symlink_to("/", target_is_directory=True)
    config = write_config(tmp_path, include=["demo/**/*.py"])

    assert select_files(config) == ["demo/a.py"]


def test_broken_symlink_and_fifo_that_are_selected_are_errors(tmp_path: Path) -> None:
    write_files(tmp_path, {"demo/a.py": ""})
    (tmp_path / "demo" / "gone.py").symlink_to("missing.py")
    config = write_config(tmp_path, include=["demo/**/*.py"])
    with pytest.raises(InvalidInput, match=r"gone\.py is not a regular file"):
        select_files(config)

    (tmp_path / "demo" / "gone.py").unlink()
    os.mkfifo(tmp_path / "demo" / "pipe.py")
    with pytest.raises(InvalidInput, match=r"pipe\.py is not a regular file"):
        select_files(config)


def test_scan_reports_stat_with_the_executable_bit(tmp_path: Path) -> None:
    write_files(tmp_path, {"demo/run.py": "#!/bin/sh\n", "demo/lib.py": "x"})
    (tmp_path / "demo" / "run.py").chmod(0o755)
    config = write_config(tmp_path)

    by_path = {f.path: f for f in scan(config)}

    assert by_path["demo/run.py"].executable is True
    assert by_path["demo/lib.py"].executable is False
    assert by_path["demo/lib.py"].size == 1


# --- pruning never changes the answer -------------------------------------------------------------

PATHS = [
    "a.py", "b.txt", "pkg/__init__.py", "pkg/mod.py", "pkg/data/x.txt", "pkg/data/deep/y.py",
    "pkg/tests/test_mod.py", "other/pkg/mod.py", "other/z.txt", "docs/build/out.py",
]  # fmt: skip
PATTERNS = [
    "*.py", "**/*.py", "pkg/**", "pkg/*.py", "pkg/**/*.txt", "/a.py", "other/", "**/data/**",
    "p?g/mod.py", "pkg/[dt]*/*.py", "docs/build", "!pkg/mod.py", "pkg/data", "*/pkg/*.py",
]  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    include=st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=3),
    exclude=st.lists(st.sampled_from(PATTERNS), max_size=2),
)
def test_selection_equals_matching_every_file(
    tmp_path_factory: pytest.TempPathFactory, include: list[str], exclude: list[str]
) -> None:
    root = tmp_path_factory.mktemp("tree")
    write_files(root, dict.fromkeys(PATHS, ""))
    config = write_config(root, include=include, exclude=exclude, use_gitignore=False)
    include_spec, exclude_spec = (
        GitIgnoreSpec.from_lines(include),
        GitIgnoreSpec.from_lines(exclude),
    )
    everything = [*PATHS, "tilebox.workflow.toml"]
    expected = sorted(
        p for p in everything if include_spec.match_file(p) and not exclude_spec.match_file(p)
    )

    try:
        selected = select_files(config)
    except InvalidInput as exc:
        assert "matches no file" in str(exc)
        return
    assert selected == expected
