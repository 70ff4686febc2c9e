"""tilebox.workflow.toml: strict decoding, one-line errors that name the file, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from tilebox_core.build.config import CONFIG_FILE, find_config, load_config
from tilebox_core.domain.errors import InvalidInput, NotFound

VALID = """
[workflow]
slug = "scenes"
runner = "scenes.runner:runner"

[build]
include = ["scenes/**/*.py", "pyproject.toml"]

[targets.production]
clusters = ["prod-a", "prod-b"]

[targets.dev]
clusters = ["dev"]
"""


def write(directory: Path, text: str) -> Path:
    path = directory / CONFIG_FILE
    path.write_text(text)
    return path


def test_loads_a_valid_file_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID))

    assert config.path == tmp_path / CONFIG_FILE
    assert config.project_dir == tmp_path.resolve()
    assert config.root == tmp_path.resolve()
    assert config.workflow.slug == "scenes"
    assert config.workflow.runner == "scenes.runner:runner"
    assert config.workflow.command is None
    assert config.build.include == ["scenes/**/*.py", "pyproject.toml"]
    assert config.build.exclude == []
    assert config.build.use_gitignore is True
    assert sorted(config.targets) == ["dev", "production"]
    assert config.target_clusters("production") == ["prod-a", "prod-b"]


def test_command_entrypoint_and_root_subdirectory(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    text = """
[workflow]
slug = "scenes"
root = "src"
command = ["python", "-m", "scenes"]

[build]
include = ["**/*.py"]
exclude = ["**/test_*.py"]
use_gitignore = false
"""
    config = load_config(write(tmp_path, text))

    assert config.root == (tmp_path / "src").resolve()
    assert config.workflow.command == ["python", "-m", "scenes"]
    assert config.workflow.runner is None
    assert config.build.use_gitignore is False
    assert config.targets == {}


def test_unknown_target_lists_the_known_ones(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID))

    with pytest.raises(NotFound, match=r"no target 'staging' \(known targets: dev, production\)"):
        config.target_clusters("staging")


def test_find_config_searches_upward_and_accepts_a_file(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    nested = tmp_path / "scenes" / "deep"
    nested.mkdir(parents=True)

    assert find_config(nested) == path
    assert find_config(tmp_path) == path
    assert find_config(path) == path


def test_find_config_says_where_it_looked_and_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(NotFound) as raised:
        find_config(tmp_path)

    message = str(raised.value)
    assert str(tmp_path) in message
    assert "tilebox workflow init" in message
    with pytest.raises(NotFound, match="does not exist"):
        find_config(tmp_path / "missing")


WORKFLOW = '[workflow]\nslug = "scenes"\nrunner = "scenes.runner:runner"\n'
BUILD = '[build]\ninclude = ["*.py"]\n'

INVALID = [
    # (file content, fragments the one-line message must contain)
    (
        '[workflow]\nslug = "scenes"\nworkflw = 1\nrunner = "a:b"\n' + BUILD,
        ["unknown key 'workflw' in [workflow]", "remove it or fix its spelling"],
    ),
    ("colour = 1\n" + WORKFLOW + BUILD, ["unknown key 'colour' at the top level"]),
    (WORKFLOW + '[build]\ninclude = ["*.py"]\nexclud = []\n', ["unknown key 'exclud' in [build]"]),
    (
        WORKFLOW + BUILD + '[targets.prod]\ncluster = ["a"]\n',
        ["unknown key 'cluster' in [targets.prod]"],
    ),
    (WORKFLOW + BUILD + "[targets.prod]\n", ["missing key 'clusters' in [targets.prod]"]),
    (WORKFLOW, ["missing [build] table"]),
    (WORKFLOW + "[build]\n", ["missing key 'include' in [build]"]),
    (
        '[workflow]\nslug = "scenes"\n' + BUILD,
        ["[workflow] has neither runner nor command", 'e.g. runner = "package.runner:runner"'],
    ),
    (
        '[workflow]\nslug = "scenes"\nrunner = "a:b"\ncommand = ["x"]\n' + BUILD,
        ["has both runner and command", "keep exactly one"],
    ),
    (
        '[workflow]\nslug = "scenes"\nrunner = "scenes.runner"\n' + BUILD,
        ["workflow.runner", "module:object"],
    ),
    ('[workflow]\nslug = "scenes"\ncommand = []\n' + BUILD, ["workflow.command", "non-empty"]),
    (
        '[workflow]\nslug = "Scenes!"\nrunner = "a:b"\n' + BUILD,
        ["workflow.slug", "invalid workflow slug"],
    ),
    (WORKFLOW + "[build]\ninclude = []\n", ["build.include is empty"]),
    (
        WORKFLOW + '[build]\ninclude = "*.py"\n',
        ["invalid value for build.include", "expected `array`"],
    ),
    (
        WORKFLOW + BUILD + '[targets.prod]\nclusters = ["Prod A"]\n',
        ["targets.prod.clusters", "cluster slug"],
    ),
    (WORKFLOW + BUILD + "[targets.prod]\nclusters = []\n", ["targets.prod.clusters is empty"]),
    (
        WORKFLOW + BUILD + '[targets.Prod]\nclusters = ["a"]\n',
        ["[targets.Prod]", "invalid target name"],
    ),
    (WORKFLOW + 'root = ".."\n' + BUILD, ["workflow.root", "leaves the project directory"]),
    (WORKFLOW + 'root = "/etc"\n' + BUILD, ["workflow.root", "leaves the project"]),
    (WORKFLOW + 'root = "nope"\n' + BUILD, ["workflow.root", "is not a directory"]),
    ('[workflow\nslug = "scenes"\n', ["malformed TOML", "line 1, column 10"]),
    (WORKFLOW + BUILD + 'x = "unterminated\n', ["malformed TOML", "line 6"]),
]


@pytest.mark.parametrize(("text", "fragments"), INVALID)
def test_invalid_files_give_one_line_naming_file_key_and_fix(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    path = write(tmp_path, text)

    with pytest.raises(InvalidInput) as raised:
        load_config(path)

    message = str(raised.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_unreadable_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="cannot read"):
        load_config(tmp_path / CONFIG_FILE)
