"""`tilebox workflow init / build-release / publish-release` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from tests.conftest import Cli
from tests.servers import ServerProcess


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Cli) -> Path:
    directory = tmp_path / "scenes"
    cli("workflow", "init", str(directory), "--name", "Scenes")
    cli("workflow", "create", "Scenes")
    monkeypatch.chdir(directory)
    return directory


def releases(server: ServerProcess, team: str) -> int:
    with redis.Redis.from_url(server.url) as r:
        return sum(1 for _ in r.scan_iter(match=f"tilebox:{{{team}}}:artifact:*")) + int(
            r.xlen(f"tilebox:{{{team}}}:log:control")
        )


def test_init_build_publish_and_list(project: Path, cli: Cli) -> None:
    built = json.loads(cli("workflow", "build-release", "--json").stdout)
    assert built["workflow"] == "scenes" and not built["cached"]
    assert sorted(t["name"] for t in built["tasks"]) == ["scenes.Greet", "scenes.Say"]
    assert "scenes/runner.py" in built["files"] and Path(built["artifact_path"]).is_file()
    again = json.loads(cli("workflow", "build-release", "--json").stdout)
    assert again["cached"] and again["digest"] == built["digest"]  # no second runtime check

    first = json.loads(cli("workflow", "publish-release", "--json").stdout)
    assert first["created"] and first["uploaded"] and first["digest"] == built["digest"]
    second = cli("workflow", "publish-release")
    assert (
        f"release {first['id']} already published with identical content; nothing uploaded"
        in second.output
    )

    cli("workflow", "deploy-release", "--latest")
    listed = json.loads(cli("workflow", "releases", "--json").stdout)
    assert [(r["id"], r["deployed_on"]) for r in listed] == [(first["id"], ["default"])]
    assert "scenes.Greet@v1.0" in cli("workflow", "releases").output


def test_init_refuses_to_overwrite(project: Path, cli: Cli) -> None:
    result = cli("workflow", "init", str(project), ok=False)
    assert result.exit_code == 1 and "tilebox.workflow.toml" in result.output


def test_incompatible_release_is_refused_unless_forced(project: Path, cli: Cli) -> None:
    cli("workflow", "publish-release")
    cli("workflow", "deploy-release", "--latest")
    runner = project / "scenes" / "runner.py"
    runner.write_text(runner.read_text().replace("    name: str", "    name: int", 1))
    refused = cli("workflow", "publish-release", ok=False)
    assert refused.exit_code == 1
    assert "changed type from string to integer" in refused.output and "--force" in refused.output
    forced = json.loads(cli("workflow", "publish-release", "--force", "--json").stdout)
    assert forced["created"] and forced["forced"]
    deploy = cli("workflow", "deploy-release", "--release", forced["id"], ok=False)
    assert "incompatible" in deploy.output
    cli("workflow", "deploy-release", "--release", forced["id"], "--force")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: (p / "tilebox.workflow.toml").write_text("[workflow\nslug = 1"),
         "tilebox.workflow.toml"),
        (lambda p: (p / "tilebox.workflow.toml").write_text(
            (p / "tilebox.workflow.toml").read_text().replace("\n[build]\n", "\n[build]\nincluded = []\n")),
         "included"),
        (lambda p: (p / "tilebox.workflow.toml").write_text(
            (p / "tilebox.workflow.toml").read_text().replace('include = [', 'include = ["nothing/*.x", ')),
         "nothing/*.x"),
        (lambda p: (p / "tilebox.workflow.toml").write_text(
            (p / "tilebox.workflow.toml").read_text().replace("\n[workflow]\n", "\n[workflow]\nroot = \"../..\"\n")),
         "root"),
        (lambda p: (p / "scenes" / "runner.py").write_text("import not_installed_anywhere\n"),
         "not_installed_anywhere"),
    ],
    ids=["malformed-toml", "unknown-key", "include-matches-nothing", "root-leaves-project", "import-error"],
)  # fmt: skip
def test_bad_projects_fail_with_one_line_and_publish_nothing(
    project: Path,
    cli: Cli,
    server: ServerProcess,
    team: str,
    change,
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    change(project)
    before = releases(server, team)
    result = cli("workflow", "publish-release", ok=False)
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert releases(server, team) == before


def test_debug_shows_the_childs_traceback(project: Path, cli: Cli) -> None:
    (project / "scenes" / "runner.py").write_text("raise RuntimeError('boom at import')\n")
    plain = cli("workflow", "build-release", ok=False)
    assert "boom at import" in plain.output and "Traceback" not in plain.output
    debug = cli("--debug", "workflow", "build-release", ok=False)
    assert "Traceback" in debug.output and "boom at import" in debug.output


def test_artifact_over_the_size_limit_is_refused(
    project: Path, cli: Cli, server: ServerProcess, team: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tilebox_core.client

    monkeypatch.setattr(tilebox_core.client, "MAX_ARTIFACT_BYTES", 100)
    before = releases(server, team)
    result = cli("workflow", "publish-release", ok=False)
    assert result.exit_code == 1 and "over the 100-byte limit" in result.output
    assert releases(server, team) == before
