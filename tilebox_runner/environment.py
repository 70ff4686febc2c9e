"""The Python environment a release's runtime processes run in.

``inherit`` (the default): the runner's own interpreter, with the release's code first on the path.
``uv``: when the release carries a ``uv.lock`` or a ``pyproject.toml`` that declares dependencies,
a virtual environment made with uv and cached by the digest of that file, so releases with the same
dependencies share one environment and a new lock gets a new one. The runner's own packages
(tilebox_core, tilebox_runner and what they need) stay importable through a ``.pth`` file placed
after the environment's own site-packages, so the release's pins win where both have a package.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import site as site_module
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import structlog

from tilebox_core.domain.errors import TileboxError

log = structlog.get_logger(__name__)

MODES = ("inherit", "uv")


class EnvironmentSetupError(TileboxError):
    """The release's environment could not be prepared (uv missing, install failed)."""


def dependency_file(release_dir: Path) -> Path | None:
    """``uv.lock`` if present, else a ``pyproject.toml`` with dependencies, else None."""
    lock = release_dir / "uv.lock"
    if lock.is_file():
        return lock
    project = release_dir / "pyproject.toml"
    if project.is_file():
        try:
            data = tomllib.loads(project.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise EnvironmentSetupError(
                f"{project.name} of the release is not valid TOML: {exc}"
            ) from exc
        if data.get("project", {}).get("dependencies"):
            return project
    return None


def python_for(release_dir: Path, envs_root: Path, mode: str) -> str:
    """The interpreter to start the release's runtime processes with."""
    if mode == "inherit":
        return sys.executable
    source = dependency_file(release_dir)
    if source is None:
        return sys.executable
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:32]
    env = envs_root / digest
    python = env / "bin" / "python"
    if python.exists():
        return str(python)
    _create(release_dir, source, env)
    return str(python)


def uv_binary() -> str:
    found = shutil.which("uv")
    if found:
        return found
    try:
        from uv import find_uv_bin  # the `uv` wheel ships the binary

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError) as exc:
        raise EnvironmentSetupError(
            "runner --env uv needs uv: install it with 'pip install uv' (or the [uv] extra)"
        ) from exc


def _create(release_dir: Path, source: Path, env: Path) -> None:
    """Build the environment next to its final place, then rename it in (atomic for readers)."""
    uv = uv_binary()
    env.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=env.parent, prefix=f".{env.name}.partial-"))
    try:
        _run([uv, "venv", "--quiet", "--python", sys.executable, str(staging)], release_dir)
        python = staging / "bin" / "python"
        if source.name == "uv.lock":
            requirements = staging / "requirements.txt"
            _run([uv, "export", "--frozen", "--no-hashes", "--no-emit-project", "--quiet",
                  "--output-file", str(requirements)], release_dir)  # fmt: skip
            _run([uv, "pip", "install", "--quiet", "--python", str(python), "-r", str(requirements)],
                 release_dir)  # fmt: skip
        else:
            _run([uv, "pip", "install", "--quiet", "--python", str(python), "-r", str(source)],
                 release_dir)  # fmt: skip
        _link_runner_packages(python)
        try:
            os.rename(staging, env)
        except OSError:
            if not (env / "bin" / "python").exists():
                raise
            shutil.rmtree(staging, ignore_errors=True)  # another runner made the same one first
        log.info("release environment created", env=str(env), source=source.name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _link_runner_packages(python: Path) -> None:
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # addsitedir (not a bare path) so the runner's own .pth files, e.g. an editable install's
    # finder, are processed too; it appends, so the release's own packages come first.
    dirs = [p for p in [*site_module.getsitepackages(), site_module.getusersitepackages()]
            if Path(p).is_dir()]  # fmt: skip
    lines = [f"import site; site.addsitedir({d!r})" for d in dirs]
    Path(site, "zz-tilebox-runner.pth").write_text("\n".join(lines) + "\n")


def _run(argv: list[str], cwd: Path) -> None:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise EnvironmentSetupError(f"{Path(argv[0]).name} {argv[1]} failed: {last[0]}")
