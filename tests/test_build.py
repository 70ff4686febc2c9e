"""build_release: artifact + runtime check, with local caches that never serve stale content."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.projects import RUNNER, demo_project, write_files
from tilebox_core.build.artifact import digest_of, extract_artifact
from tilebox_core.build.config import WorkflowConfig, load_config
from tilebox_core.build.discovery import BuildError
from tilebox_core.build.release import build_release
from tilebox_core.domain.control import release_fingerprint
from tilebox_core.domain.events import ReleaseTask


def marked_project(tmp_path: Path) -> tuple[WorkflowConfig, Path]:
    """A project whose runner module appends a line to ``marker`` each time it is imported."""
    marker = tmp_path / "imports.log"
    source = (
        f"with open({str(marker)!r}, 'a') as _marker:\n    _marker.write('imported\\n')\n" + RUNNER
    )
    project = tmp_path / "project"
    project.mkdir()
    return demo_project(project, runner=source), marker


def imports(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def test_cold_build_writes_the_artifact_and_discovers_tasks(tmp_path: Path) -> None:
    config, marker = marked_project(tmp_path)

    result = build_release(config)

    assert result.cached is False
    assert imports(marker) == 1
    assert result.workflow == "demo"
    assert result.files == ["demo/__init__.py", "demo/runner.py"]
    assert [(t.name, t.version) for t in result.tasks] == [
        ("demo.Fetch", "v1.2"),
        ("demo.Store", "v1.0"),
    ]
    assert result.runner == "demo.runner:runner" and result.command is None
    data = result.artifact_path.read_bytes()
    assert digest_of(data) == result.digest and len(data) == result.size
    assert (
        result.artifact_path == config.root / ".tilebox" / "build" / f"{result.digest[7:]}.tar.zst"
    )
    assert result.fingerprint == release_fingerprint(
        "demo", result.digest, result.runner, None, result.tasks
    )
    assert extract_artifact(data, tmp_path / "unpacked") == result.files


def test_unchanged_rebuild_uses_the_cache_without_a_subprocess(tmp_path: Path) -> None:
    config, marker = marked_project(tmp_path)
    first = build_release(config)

    with capture_logs() as logs:
        second = build_release(config)

    assert second.cached is True
    assert imports(marker) == 1
    assert (second.digest, second.fingerprint, second.tasks) == (
        first.digest,
        first.fingerprint,
        first.tasks,
    )
    events = [entry["event"] for entry in logs]
    assert "build.artifact_reused" in events and "build.discovery_cached" in events


def test_changed_file_rebuilds_and_reruns_the_check(tmp_path: Path) -> None:
    config, marker = marked_project(tmp_path)
    first = build_release(config)

    write_files(config.root, {"demo/extra.py": "X = 1\n"})
    second = build_release(config)

    assert second.cached is False
    assert imports(marker) == 2
    assert second.digest != first.digest
    assert "demo/extra.py" in second.files
    assert second.artifact_path.exists() and first.artifact_path.exists()


def test_same_size_change_with_restored_mtime_is_still_seen(tmp_path: Path) -> None:
    """Within the racy window a stat cannot prove a file unchanged, so its content is re-hashed."""
    config, _ = marked_project(tmp_path)
    write_files(config.root, {"demo/values.py": "A = 1\n"})
    first = build_release(config)
    target = config.root / "demo" / "values.py"
    before = target.stat()

    target.write_text("A = 2\n")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    second = build_release(config)

    assert second.digest != first.digest


def test_touch_without_change_reuses_the_artifact(tmp_path: Path) -> None:
    config, marker = marked_project(tmp_path)
    first = build_release(config)

    os.utime(config.root / "demo" / "runner.py")
    with capture_logs() as logs:
        second = build_release(config)

    assert second.digest == first.digest and second.cached is True
    assert imports(marker) == 1
    assert any(e["event"] == "build.artifact_reused" and e["rehashed"] for e in logs)


def test_damaged_artifact_or_manifest_is_rebuilt(tmp_path: Path) -> None:
    config, _ = marked_project(tmp_path)
    first = build_release(config)

    first.artifact_path.write_bytes(b"damaged")
    assert build_release(config).digest == first.digest
    assert digest_of(first.artifact_path.read_bytes()) == first.digest

    (config.root / ".tilebox" / "build" / "manifest.json").write_text("{not json")
    assert build_release(config).digest == first.digest


def test_another_runner_is_checked_again(tmp_path: Path) -> None:
    config, marker = marked_project(tmp_path)
    build_release(config)
    (config.root / "demo" / "runner.py").write_text(
        (config.root / "demo" / "runner.py").read_text() + "\nsecond = Runner(tasks=[Store])\n"
    )
    build_release(config)
    text = config.path.read_text().replace("demo.runner:runner", "demo.runner:second")
    config.path.write_text(text)

    result = build_release(load_config(config.path))

    assert result.cached is False
    assert [t.name for t in result.tasks] == ["demo.Store"]
    assert imports(marker) == 3


def test_failed_check_is_not_cached(tmp_path: Path) -> None:
    config = demo_project(tmp_path, runner="raise RuntimeError('broken on purpose')\n")

    for _ in range(2):
        with pytest.raises(BuildError, match="broken on purpose"):
            build_release(config)


def test_previous_build_output_is_never_selected(tmp_path: Path) -> None:
    config = demo_project(tmp_path, include=["**/*"])
    first = build_release(config)

    second = build_release(config)

    assert not any(path.startswith(".tilebox") for path in second.files)
    assert second.digest == first.digest


def test_progress_reports_each_stage(tmp_path: Path) -> None:
    config, _ = marked_project(tmp_path)
    seen: list[tuple[str, int, int]] = []

    build_release(config, lambda stage, done, total: seen.append((stage, done, total)))

    assert seen == [("select", 2, 2), ("pack", 2, 2), ("discover", 0, 1), ("discover", 1, 1)]


def test_fingerprint_ignores_order_but_not_content() -> None:
    a = ReleaseTask("demo.A", "v1.0", {"type": "object", "title": "A"})
    b = ReleaseTask("demo.B", "v1.0", {"title": "B", "type": "object"})
    digest = "sha256:" + "0" * 64

    same = release_fingerprint("demo", digest, "demo.runner:runner", None, [a, b])

    assert same == release_fingerprint("demo", digest, "demo.runner:runner", None, [b, a])
    assert same != release_fingerprint("demo", digest, None, ["python", "-m", "demo"], [a, b])
    assert same != release_fingerprint("other", digest, "demo.runner:runner", None, [a, b])
    changed = ReleaseTask("demo.B", "v1.0", {"title": "B", "type": "array"})
    assert same != release_fingerprint("demo", digest, "demo.runner:runner", None, [a, changed])


def test_a_build_keeps_the_last_few_artifacts_and_their_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tilebox_core.build import release

    monkeypatch.setattr(release, "KEEP_BUILDS", 2)
    config, _ = marked_project(tmp_path)
    builds = []
    for i in range(4):
        write_files(config.root, {"demo/extra.py": f"X = {i}\n"})
        builds.append(build_release(config))
    build_dir = config.root / ".tilebox" / "build"
    kept = sorted(p.name for p in build_dir.glob("*.tar.zst"))
    assert kept == sorted(b.artifact_path.name for b in builds[-2:])
    caches = sorted(p.stem for p in (build_dir / "cache").glob("*.json"))
    assert caches == sorted(b.artifact_path.name.removesuffix(".tar.zst") for b in builds[-2:])
    # the newest is reused as before: an unchanged project builds from the cache
    assert build_release(config).cached is True
