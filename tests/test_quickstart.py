"""The README's quickstart script, run as a user would (embedded server in a private home)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tilebox_core import EmbeddedServer

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_runs_the_whole_story(tmp_path: Path) -> None:
    home = tmp_path / "h"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TILEBOX_")}
    env.update(
        TILEBOX_HOME=str(home), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    )
    try:
        result = subprocess.run(
            ["bash", str(ROOT / "examples" / "quickstart.sh")],
            env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
    finally:
        EmbeddedServer(home).stop()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "already published with identical content; nothing uploaded" in out
    assert '$ tilebox workflow init --name "Hello Scenes"' in out  # as one would type it
    assert 'next: tilebox workflow create "Hello Scenes", then' in out
    assert "created  built in" in out and "- by -" not in out  # cluster get default
    assert "completed: 2 computed" in out
    assert "hello-scenes.Say@v1.0  computed runner=" in out
    for event in (
        "WorkflowCreated",
        "ReleasePublished",
        "DeploymentSet",
        "TaskClaimed",
        "TaskCompleted",
    ):
        assert event in out
