"""Release artifacts: a deterministic zstd-compressed tar of the selected files, named by digest.

Building: the same files give byte-identical output on any machine, because nothing of the machine
reaches the archive. Entries are sorted, regular files only (no directory entries), mtime 0,
uid/gid 0 with empty owner names, and modes normalised to 0o644 or 0o755 (only the executable bit
is kept). The tar is ustar with PAX path records for long and non-ASCII names, written by
``tarwriter`` rather than ``tarfile`` so that no Python version can change a byte, and compressed
at a fixed zstd level without threads, with the content size written. The bytes depend only on
this code and the libzstd bundled with ``zstandard``.

Extracting (the runner side) trusts nothing: the digest is checked before decompressing, the
decompressed size is capped, every member is validated before anything is written (no absolute
paths, no ``..``, no links, devices or fifos), and files are written into a temporary directory next
to the destination that is renamed into place at the end, so a half-extracted tree never appears.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import zstandard

from tilebox_core.domain.errors import ArtifactError, Conflict

from . import tarwriter

MAX_ARTIFACT_BYTES = 64 * 1024 * 1024
"""Largest compressed artifact that can be built, published or extracted."""

MAX_UNPACKED_BYTES = 4 * MAX_ARTIFACT_BYTES
"""Largest uncompressed tar (contents plus headers). Source code compresses 3-10x, so a legitimate
artifact under the compressed limit stays under this, while a decompression bomb (a small artifact
that inflates to gigabytes) is cut off after 256 MiB without filling memory or disk."""

ZSTD_LEVEL = 10  # part of the artifact format: changing it changes every digest

# room for the last member's headers and padding and the end of the archive, so that what
# builds within MAX_UNPACKED_BYTES also extracts within it
_TAR_RESERVE = 16 * 1024
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_PROGRESS_EVERY = 256

Progress = Callable[[str, int, int], None]


class PackedFile(NamedTuple):
    """One file as it was read into an artifact: what a later build compares to skip re-packing."""

    path: str
    size: int
    mtime_ns: int
    inode: int
    executable: bool
    sha256: str


class Packed(NamedTuple):
    data: bytes
    files: list[PackedFile]


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_hex(digest: str) -> str:
    """The hex part of a ``sha256:<hex>`` digest, validated (safe to use as a file name)."""
    if not _DIGEST.match(digest):
        raise ArtifactError(
            f"malformed artifact digest {digest!r}: expected 'sha256:<64 hex digits>'"
        )
    return digest.removeprefix("sha256:")


def verify_digest(data: bytes, digest: str) -> None:
    digest_hex(digest)
    actual = digest_of(data)
    if actual != digest:
        raise ArtifactError(
            f"artifact digest mismatch: expected {digest}, got {actual}; the download is corrupt "
            "or was tampered with, fetch it again"
        )


# --- building -------------------------------------------------------------------------------------


def pack(root: Path, files: list[str], progress: Progress | None = None) -> Packed:
    """Build the artifact and report what was read, so a later build can tell nothing changed."""
    chunks: list[bytes] = []
    size = 0
    packed: list[PackedFile] = []
    ordered = sorted(files)
    for done, path in enumerate(ordered, 1):
        check_member_name(path)
        content, packed_file = _read(root, path, MAX_UNPACKED_BYTES - size - _TAR_RESERVE)
        packed.append(packed_file)
        chunk = tarwriter.entry(path, content, 0o755 if packed_file.executable else 0o644)
        chunks.append(chunk)
        size += len(chunk)
        if progress is not None and (done % _PROGRESS_EVERY == 0 or done == len(ordered)):
            progress("pack", done, len(ordered))
    chunks.append(tarwriter.end(size))
    data = _compressor().compress(b"".join(chunks))
    if len(data) > MAX_ARTIFACT_BYTES:
        raise ArtifactError(
            f"artifact is {len(data):,} bytes compressed, over the {MAX_ARTIFACT_BYTES:,}-byte "
            "limit: exclude data files in [build] of tilebox.workflow.toml, fetch them at runtime"
        )
    return Packed(data, packed)


def _compressor() -> zstandard.ZstdCompressor:
    # threads=0: multi-threaded zstd may split work differently from run to run
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True, threads=0)


def _read(root: Path, path: str, budget: int) -> tuple[bytes, PackedFile]:
    """Content and stat of one file, both from the same open descriptor (a symlink is followed)."""
    try:
        with open(os.path.join(root, path), "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ArtifactError(
                    f"cannot pack {path}: not a regular file; exclude it in [build]"
                )
            _check_budget(info.st_size, budget, path)
            content = handle.read()
    except OSError as exc:
        raise ArtifactError(f"cannot read {root / path}: {exc.strerror or exc}") from exc
    _check_budget(len(content), budget, path)
    executable = bool(info.st_mode & 0o111)
    sha = hashlib.sha256(content).hexdigest()
    return content, PackedFile(path, len(content), info.st_mtime_ns, info.st_ino, executable, sha)


def _check_budget(size: int, budget: int, path: str) -> None:
    if size > budget:
        raise ArtifactError(
            f"selected files exceed {MAX_UNPACKED_BYTES // 2**20} MiB uncompressed at {path}: "
            "exclude large files in [build] of tilebox.workflow.toml and fetch them at runtime"
        )


def check_member_name(name: str) -> None:
    """Refuse a path that is absolute, climbs with ``..``, or is not in normal form."""
    parts = name.split("/")
    if name.startswith("/") or any(part in ("", ".", "..") for part in parts) or "\0" in name:
        raise ArtifactError(
            f"artifact member {name!r} is not a safe relative path (absolute, '..', or empty parts)"
        )


# --- extracting -----------------------------------------------------------------------------------


def extract_artifact(data: bytes, dest: Path) -> list[str]:
    """Unpack an artifact into ``dest`` (which must not exist); returns the files written, sorted.

    Call ``verify_digest`` first. Either the whole tree appears at ``dest`` or nothing does.
    """
    if dest.exists():
        raise Conflict(f"cannot extract artifact into {dest}: it already exists; remove it first")
    with _open_tar(_decompress(data)) as tar:
        members = _safe_members(tar)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.partial-"))
        try:
            created: set[Path] = {staging}
            for member in members:
                _write_member(tar, member, staging, created)
            staging.chmod(0o755)
            _rename_into_place(staging, dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return sorted(m.name for m in members if m.isreg())


def artifact_files(data: bytes) -> list[tuple[str, int]]:
    """The regular files of an artifact (path, size in bytes), sorted, checked as extraction
    checks them, without writing anything."""
    with _open_tar(_decompress(data)) as tar:
        return sorted((m.name, m.size) for m in _safe_members(tar) if m.isreg())


class Manifest(NamedTuple):
    """What an artifact extracts to: each regular file's SHA-256 (hex) and mode, by POSIX path."""

    files: dict[str, tuple[str, int]]


def artifact_manifest(data: bytes) -> Manifest:
    """The manifest of an artifact, checked as extraction checks it, without writing anything."""
    with _open_tar(_decompress(data)) as tar:
        files = {}
        for member in _safe_members(tar):
            if member.isreg():
                source = tar.extractfile(member)
                assert source is not None  # regular members always have content
                digest = hashlib.sha256(source.read()).hexdigest()
                files[member.name] = (digest, 0o755 if member.mode & 0o111 else 0o644)
    return Manifest(files)


def tree_mismatch(root: Path, manifest: Manifest) -> str | None:
    """How the tree at ``root`` differs from what ``manifest`` says it was extracted as (a file
    changed, added, removed, made a link or given another mode), or None: the same files.
    Directories without files are not compared: nothing in them can run."""
    seen = 0
    for directory, dirnames, filenames in os.walk(root):  # links are not followed
        for name in [*dirnames, *filenames]:
            path = Path(directory, name)
            relative = path.relative_to(root).as_posix()
            info = path.lstat()
            if stat.S_ISDIR(info.st_mode):
                continue
            if not stat.S_ISREG(info.st_mode):
                return f"{relative} is not a regular file"
            expected = manifest.files.get(relative)
            if expected is None:
                return f"{relative} is not in the release"
            if stat.S_IMODE(info.st_mode) != expected[1]:
                return f"{relative} has mode {stat.S_IMODE(info.st_mode):o}, not {expected[1]:o}"
            with open(path, "rb") as handle:
                if hashlib.file_digest(handle, "sha256").hexdigest() != expected[0]:
                    return f"{relative} was changed"
            seen += 1
    if seen != len(manifest.files):
        missing = sorted(p for p in manifest.files if not (root / p).is_file())
        return f"{missing[0] if missing else 'a file'} is missing"
    return None


def _decompress(data: bytes) -> bytes:
    if len(data) > MAX_ARTIFACT_BYTES:
        raise ArtifactError(
            f"artifact is {len(data):,} bytes, over the {MAX_ARTIFACT_BYTES:,}-byte limit; "
            "refusing it"
        )
    chunks: list[bytes] = []
    total = 0
    try:
        with zstandard.ZstdDecompressor().stream_reader(data) as reader:
            while chunk := reader.read(1 << 20):
                total += len(chunk)
                if total > MAX_UNPACKED_BYTES:
                    raise ArtifactError(
                        f"artifact inflates beyond {MAX_UNPACKED_BYTES // 2**20} MiB; refusing a "
                        "possible decompression bomb"
                    )
                chunks.append(chunk)
    except zstandard.ZstdError as exc:
        raise ArtifactError(f"artifact is not valid zstd data: {exc}") from exc
    return b"".join(chunks)


def _open_tar(raw: bytes) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=io.BytesIO(raw), mode="r:")
    except tarfile.TarError as exc:
        raise ArtifactError(f"artifact is not a valid tar archive: {exc}") from exc


def _safe_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Every member, validated before anything is written: names, types and duplicates."""
    try:
        members = tar.getmembers()
    except tarfile.TarError as exc:
        raise ArtifactError(f"artifact is not a valid tar archive: {exc}") from exc
    seen: set[str] = set()
    for member in members:
        check_member_name(member.name)
        if member.issparse() or not (member.isreg() or member.isdir()):
            raise ArtifactError(
                f"artifact member {member.name!r} is a {_kind(member)}; only regular files and "
                "directories are allowed"
            )
        if member.name in seen:
            raise ArtifactError(f"artifact member {member.name!r} appears twice")
        seen.add(member.name)
    return members


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "symbolic link"
    if member.islnk():
        return "hard link"
    if member.ischr() or member.isblk():
        return "device"
    if member.isfifo():
        return "fifo"
    return "sparse file" if member.issparse() else f"entry of tar type {member.type!r}"


def _write_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, staging: Path, created: set[Path]
) -> None:
    target = staging / member.name
    try:
        if member.isdir():
            _make_dirs(target, created)
            return
        _make_dirs(target.parent, created)
        source = tar.extractfile(member)
        assert source is not None  # regular members always have content
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        with os.fdopen(os.open(target, flags, 0o600), "wb") as out:
            shutil.copyfileobj(source, out)
            os.fchmod(out.fileno(), 0o755 if member.mode & 0o111 else 0o644)
    except (OSError, tarfile.TarError) as exc:
        raise ArtifactError(f"cannot extract artifact member {member.name!r}: {exc}") from exc


def _make_dirs(directory: Path, created: set[Path]) -> None:
    if directory not in created:
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        created.add(directory)


def _rename_into_place(staging: Path, dest: Path) -> None:
    try:
        os.rename(staging, dest)
    except OSError as exc:
        if dest.exists():
            raise Conflict(
                f"cannot extract artifact into {dest}: it appeared while extracting; "
                "remove it first"
            ) from exc
        raise ArtifactError(f"cannot move extracted artifact to {dest}: {exc.strerror}") from exc
