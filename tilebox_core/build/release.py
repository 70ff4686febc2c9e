"""``build-release``: select files, pack the deterministic artifact, run the runtime check, and say
what a release of this content would be, all without touching Redis.

Local output lives in ``<root>/.tilebox/build/`` (never selected into an artifact):

- ``<digest-hex>.tar.zst``: artifacts, named by content; the newest ``KEEP_BUILDS`` are kept (with
  their discovery caches), older ones are removed when a new one is written;
- ``cache/<digest-hex>.json``: the tasks discovered from that artifact, for one runner/command and
  Python interpreter, so an unchanged project is not imported again;
- ``manifest.json``: the stat and content hash of every file packed into the last artifact. When
  the selection and every stat are unchanged, the last artifact is reused without reading or
  compressing anything. A file whose mtime falls near the time it was scanned is "racy" (it may
  have changed again within the filesystem's timestamp resolution without its stat changing), so
  it is re-hashed and compared instead of trusted; the same goes for a file whose mtime or inode
  changed but size did not (a ``touch`` or a checkout does not force a rebuild).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import msgspec
import structlog
import zstandard

from tilebox_core.domain.control import release_fingerprint
from tilebox_core.domain.errors import ArtifactError
from tilebox_core.domain.events import ReleaseTask

from .artifact import (
    MAX_UNPACKED_BYTES,
    Packed,
    PackedFile,
    digest_hex,
    digest_of,
    extract_artifact,
    pack,
)
from .config import WorkflowConfig
from .discovery import discover_tasks
from .selection import SelectedFile, scan

log = structlog.get_logger(__name__)

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)`` with stage "select", "pack" or "discover"."""

BUILD_DIR = Path(".tilebox") / "build"
WARN_ARTIFACT_BYTES = 10 * 2**20  # a build says so above these sizes (MAX_ARTIFACT_BYTES refuses)
WARN_FILE_BYTES = 2**20
_FORMAT = 1  # bump when the manifest or cache layout changes; older files are then ignored
_RACY_WINDOW_NS = 2_000_000_000  # coarsest common mtime resolution (FAT: 2 s)
_T = TypeVar("_T")
_SHM = "/dev/shm"
KEEP_BUILDS = 5  # artifacts kept in .tilebox/build: the last few, to compare or publish again


@dataclass(frozen=True)
class BuildResult:
    workflow: str
    fingerprint: str  # identity of the release content: equal fingerprints publish one release
    digest: str
    size: int
    artifact_path: Path
    tasks: list[ReleaseTask]
    files: list[str]
    runner: str | None
    command: list[str] | None
    cached: bool  # the runtime check was answered from the local cache (no subprocess ran)
    warnings: list[str] = field(default_factory=list)  # worth telling, not worth refusing


class _Manifest(msgspec.Struct, frozen=True):
    format: int
    scanned_ns: int  # when the files of the last artifact were scanned
    digest: str
    size: int
    files: list[PackedFile]


class _CachedDiscovery(msgspec.Struct, frozen=True):
    format: int
    python: str
    runner: str | None
    command: list[str] | None
    tasks: list[ReleaseTask]


def build_release(config: WorkflowConfig, progress: Progress | None = None) -> BuildResult:
    """Build the artifact of ``config``'s project and discover its tasks, reusing local caches."""
    report = progress or _no_progress
    build_dir = config.root / BUILD_DIR
    scanned_ns = time.time_ns()
    selected = scan(config)
    report("select", len(selected), len(selected))
    data = _reusable_artifact(config.root, build_dir, selected, scanned_ns)
    if data is None:
        try:
            packed = pack(config.root, [s.path for s in selected], report)
        except ArtifactError as exc:
            raise ArtifactError(f"{exc}; largest files: {largest_files(selected)}") from exc
        data = packed.data
        _save_artifact(build_dir, packed, digest_of(data), scanned_ns)
    digest = digest_of(data)
    tasks, cached = _tasks(config, build_dir, digest, data, report)
    workflow = config.workflow
    return BuildResult(
        workflow=workflow.slug,
        fingerprint=release_fingerprint(
            workflow.slug, digest, workflow.runner, workflow.command, tasks
        ),
        digest=digest,
        size=len(data),
        artifact_path=artifact_path(build_dir, digest),
        tasks=tasks,
        files=[s.path for s in selected],
        runner=workflow.runner,
        command=workflow.command,
        cached=cached,
        warnings=size_warnings(selected, len(data)),
    )


def size_warnings(selected: list[SelectedFile], artifact_size: int) -> list[str]:
    """A warning when the artifact or one of its files is larger than code usually is."""
    big = [f for f in selected if f.size > WARN_FILE_BYTES]
    if artifact_size <= WARN_ARTIFACT_BYTES and not big:
        return []
    return [
        f"the artifact is {_mib(artifact_size)} compressed"
        + (
            f", {len(big)} file{'s' if len(big) != 1 else ''} over {_mib(WARN_FILE_BYTES)}"
            if big
            else ""
        )
        + f"; largest files: {largest_files(selected)}. Artifacts hold code, lock files and small "
        "config: exclude data in [build] of tilebox.workflow.toml and fetch it at runtime"
    ]


def largest_files(selected: list[SelectedFile], count: int = 5) -> str:
    ordered = sorted(selected, key=lambda f: (-f.size, f.path))[:count]
    return ", ".join(f"{f.path} ({_mib(f.size)})" for f in ordered) or "none"


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def artifact_path(build_dir: Path, digest: str) -> Path:
    return build_dir / f"{digest_hex(digest)}.tar.zst"


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


# --- the artifact and its manifest ----------------------------------------------------------------


def _manifest_path(build_dir: Path) -> Path:
    return build_dir / "manifest.json"


def _reusable_artifact(
    root: Path, build_dir: Path, selected: list[SelectedFile], scanned_ns: int
) -> bytes | None:
    """The last artifact's bytes if the selected files are provably the ones it holds."""
    manifest = _load(_manifest_path(build_dir), _Manifest)
    if manifest is None or manifest.format != _FORMAT:
        return None
    verified = _verified(root, manifest, selected)
    if verified is None:
        return None
    try:
        data = artifact_path(build_dir, manifest.digest).read_bytes()
    except OSError:
        return None
    if len(data) != manifest.size or digest_of(data) != manifest.digest:
        log.debug("build.artifact_damaged", digest=manifest.digest)
        return None
    files, rehashed = verified
    if rehashed:
        # record what was just verified, so the next build can trust these stats again
        _save_manifest(build_dir, _Manifest(_FORMAT, scanned_ns, manifest.digest, len(data), files))
    log.debug("build.artifact_reused", digest=manifest.digest, files=len(files), rehashed=rehashed)
    return data


def _verified(
    root: Path, manifest: _Manifest, selected: list[SelectedFile]
) -> tuple[list[PackedFile], int] | None:
    """The manifest's entries with current stats, and how many files had to be re-hashed to prove
    them unchanged; None as soon as one differs."""
    if len(manifest.files) != len(selected):
        return None
    racy_from = manifest.scanned_ns - _RACY_WINDOW_NS
    files: list[PackedFile] = []
    rehashed = 0
    for old, new in zip(manifest.files, selected, strict=True):
        if (old.path, old.size, old.executable) != (new.path, new.size, new.executable):
            return None
        if (old.mtime_ns, old.inode) != (new.mtime_ns, new.inode) or old.mtime_ns >= racy_from:
            if _file_sha256(root / new.path) != old.sha256:
                return None
            rehashed += 1
        files.append(old._replace(mtime_ns=new.mtime_ns, inode=new.inode))
    return files, rehashed


def _file_sha256(path: Path) -> str | None:
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None


def _save_artifact(build_dir: Path, packed: Packed, digest: str, scanned_ns: int) -> None:
    _write_atomic(artifact_path(build_dir, digest), packed.data)
    _save_manifest(
        build_dir, _Manifest(_FORMAT, scanned_ns, digest, len(packed.data), packed.files)
    )
    prune_builds(build_dir, keep=KEEP_BUILDS)


def prune_builds(build_dir: Path, keep: int) -> list[Path]:
    """Remove all but the ``keep`` newest artifacts of ``build_dir`` and the discovery caches of
    the removed ones; the removed paths. Builds are local and rebuilt from the project at will:
    without this, every edit-build cycle left a copy of the project behind for ever."""
    artifacts = sorted(build_dir.glob("*.tar.zst"), key=lambda p: _mtime_ns(p), reverse=True)
    removed = []
    for old in artifacts[keep:]:
        for path in (old, build_dir / "cache" / (old.name.removesuffix(".tar.zst") + ".json")):
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(path)
    if removed:
        log.debug("build.pruned", removed=len(removed), kept=keep)
    return removed


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _save_manifest(build_dir: Path, manifest: _Manifest) -> None:
    _write_atomic(_manifest_path(build_dir), msgspec.json.encode(manifest))


# --- the runtime check and its cache --------------------------------------------------------------


def _tasks(
    config: WorkflowConfig, build_dir: Path, digest: str, data: bytes, report: Progress
) -> tuple[list[ReleaseTask], bool]:
    """The discovered tasks and whether they came from the cache."""
    runner, command = config.workflow.runner, config.workflow.command
    cache_file = build_dir / "cache" / f"{digest_hex(digest)}.json"
    runtime = (_FORMAT, sys.executable, runner, command)
    cached = _load(cache_file, _CachedDiscovery)
    if cached is not None and cached.tasks and _runtime_of(cached) == runtime:
        log.debug("build.discovery_cached", digest=digest)
        return list(cached.tasks), True
    report("discover", 0, 1)
    scratch_parent = _scratch_parent(_unpacked_size(data))
    with tempfile.TemporaryDirectory(prefix="tilebox-build-", dir=scratch_parent) as scratch:
        unpacked = Path(scratch) / "artifact"
        extract_artifact(data, unpacked)
        tasks = discover_tasks(unpacked, runner, command)
    report("discover", 1, 1)
    entry = _CachedDiscovery(_FORMAT, sys.executable, runner, command, tasks)
    _write_atomic(cache_file, msgspec.json.encode(entry))
    return tasks, False


def _scratch_parent(needed: int) -> str | None:
    """Where to unpack the artifact for the runtime check: memory-backed /dev/shm when it has room
    and allows executables (unless TMPDIR says otherwise), else the default temporary directory.

    The unpacked copy lives for one check; creating thousands of small files on a disk that is busy
    writing back costs seconds, in memory it costs milliseconds.
    """
    if os.environ.get("TMPDIR"):
        return None
    try:
        info = os.statvfs(_SHM)
    except OSError:
        return None
    roomy = info.f_bavail * info.f_frsize > 4 * needed
    if roomy and not info.f_flag & os.ST_NOEXEC and os.access(_SHM, os.W_OK | os.X_OK):
        return _SHM
    return None


def _unpacked_size(data: bytes) -> int:
    try:
        size = zstandard.frame_content_size(data)
    except zstandard.ZstdError:
        return MAX_UNPACKED_BYTES
    return size if size >= 0 else MAX_UNPACKED_BYTES


def _runtime_of(cached: _CachedDiscovery) -> tuple[object, ...]:
    return (cached.format, cached.python, cached.runner, cached.command)


# --- files ----------------------------------------------------------------------------------------


def _load(path: Path, kind: type[_T]) -> _T | None:
    """A cache file, or None when it is missing or unreadable (caches are only ever hints)."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=kind)
    except (OSError, msgspec.DecodeError):
        return None


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), 0o644)  # mkstemp's 0o600 would hide build output from others
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
