"""Artifacts: byte-identical from identical files however they were made; hostile ones refused."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from tilebox_core.build import artifact, tarwriter
from tilebox_core.build.artifact import (
    digest_of,
    extract_artifact,
    pack,
    verify_digest,
)
from tilebox_core.domain.errors import ArtifactError, Conflict

FILES = {
    "demo/__init__.py": b"",
    "demo/runner.py": b"print('hi')\n",
    "bin/start": b"#!/bin/sh\nexec python -m demo\n",
    "data/\u00e9t\u00e9.txt": "caf\u00e9\n".encode(),
    "deep/" + "n" * 120 + "/long_name_" + "x" * 110 + ".py": b"long = True\n",
}
EXECUTABLE = {"bin/start"}


def build_artifact(root: Path, files: list[str]) -> bytes:
    """The compressed artifact of ``files`` (POSIX paths relative to ``root``)."""
    return pack(root, files).data


def make_copy(
    root: Path, order: list[str], mode: int, exec_mode: int, mtime: int, umask: int
) -> None:
    previous = os.umask(umask)
    try:
        for path in order:
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(FILES[path])
            target.chmod(exec_mode if path in EXECUTABLE else mode)
            os.utime(target, (mtime, mtime))
    finally:
        os.umask(previous)


def test_differently_made_copies_give_byte_identical_artifacts(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    make_copy(first, list(FILES), mode=0o644, exec_mode=0o755, mtime=1_000_000_000, umask=0o022)
    make_copy(
        second, list(reversed(FILES)), mode=0o600, exec_mode=0o700, mtime=1_700_000_000, umask=0o077
    )

    one = build_artifact(first, list(FILES))
    two = build_artifact(second, sorted(FILES, reverse=True))

    assert one == two
    assert digest_of(one) == digest_of(two)


def test_entries_are_normalised(tmp_path: Path) -> None:
    make_copy(tmp_path, list(FILES), mode=0o664, exec_mode=0o775, mtime=1_234_567_890, umask=0o002)

    data = build_artifact(tmp_path, list(FILES))

    raw = zstandard.ZstdDecompressor().decompress(data)  # needs the content size in the frame
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(FILES)
    for member in members:
        assert member.isreg()
        assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (
            0,
            0,
            0,
            "",
            "",
        )
        assert member.mode == (0o755 if member.name in EXECUTABLE else 0o644)


def test_round_trip_keeps_content_and_executable_bit(tmp_path: Path) -> None:
    make_copy(tmp_path / "src", list(FILES), 0o644, 0o755, 1_000_000_000, 0o022)
    data = build_artifact(tmp_path / "src", list(FILES))
    verify_digest(data, digest_of(data))

    written = extract_artifact(data, tmp_path / "out" / "release")

    assert written == sorted(FILES)
    for path, content in FILES.items():
        target = tmp_path / "out" / "release" / path
        assert target.read_bytes() == content
        assert os.access(target, os.X_OK) == (path in EXECUTABLE)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["release"]


def test_digest_format_and_mismatch(tmp_path: Path) -> None:
    data = b"artifact"
    assert digest_of(data).startswith("sha256:") and len(digest_of(data)) == 7 + 64

    with pytest.raises(ArtifactError, match="digest mismatch"):
        verify_digest(data, digest_of(b"other"))
    with pytest.raises(ArtifactError, match="malformed artifact digest"):
        verify_digest(data, "md5:abc")


def test_too_large_artifact_is_refused_when_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "big.bin").write_bytes(os.urandom(4096))
    monkeypatch.setattr(artifact, "MAX_ARTIFACT_BYTES", 1024)

    with pytest.raises(ArtifactError, match="over the 1,024-byte limit"):
        build_artifact(tmp_path, ["big.bin"])


def test_selection_over_the_uncompressed_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "zeros.bin").write_bytes(bytes(3 << 20))
    monkeypatch.setattr(artifact, "MAX_UNPACKED_BYTES", 2 << 20)

    with pytest.raises(ArtifactError, match=r"exceed 2 MiB uncompressed at zeros\.bin"):
        build_artifact(tmp_path, ["zeros.bin"])


NAMES = [
    "a.py",
    "x" * 100,  # fits ustar's name field exactly
    "y" * 101,  # needs a PAX record: no slash to split at
    "d/" + "n" * 120 + "/f.py",  # fits when split into prefix and name
    "e/" + "/".join(["m" * 200] * 2) + ".py",  # too long for ustar: PAX
    "\u00e9t\u00e9/\u00fc.txt",  # not ASCII: PAX
    "p/" + "q" * 950 + ".py",  # a PAX record whose length has more digits
]


def tar_of(names: list[str]) -> bytes:
    chunks = [tarwriter.entry(name, name.encode(), 0o644) for name in names]
    size = sum(len(c) for c in chunks)
    data = b"".join(chunks) + tarwriter.end(size)
    assert len(data) % tarwriter.RECORD == 0
    return data


def test_tar_writer_names_read_back_with_tarfile() -> None:
    with tarfile.open(fileobj=io.BytesIO(tar_of(NAMES))) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == NAMES
        for member in members:
            source = tar.extractfile(member)
            assert source is not None and source.read() == member.name.encode()


@pytest.mark.skipif(shutil.which("tar") is None, reason="no tar(1) here")
def test_tar_writer_output_is_read_by_tar_command(tmp_path: Path) -> None:
    (tmp_path / "a.tar").write_bytes(tar_of(NAMES))

    listing = subprocess.run(
        ["tar", "-tf", "a.tar"], cwd=tmp_path, capture_output=True, check=True, text=True
    )

    listed = listing.stdout.splitlines()
    assert len(listed) == len(NAMES)
    assert {name for name in NAMES if name.isascii()} <= set(listed)  # others depend on locale


# --- hostile artifacts ----------------------------------------------------------------------------


def hostile(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, content in members:
            info.size = len(content) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(content) if info.isreg() else None)
    return zstandard.ZstdCompressor().compress(buffer.getvalue())


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


GOOD = (entry("ok.py"), b"x = 1\n")

HOSTILE: dict[str, Callable[[], bytes]] = {
    "absolute path": lambda: hostile(GOOD, (entry("/etc/evil"), b"x")),
    "parent traversal": lambda: hostile(GOOD, (entry("../x"), b"x")),
    "inner traversal": lambda: hostile(GOOD, (entry("a/../../x"), b"x")),
    "symlink": lambda: hostile(GOOD, (entry("link", tarfile.SYMTYPE, "/etc/passwd"), b"")),
    "hardlink": lambda: hostile(GOOD, (entry("hard", tarfile.LNKTYPE, "ok.py"), b"")),
    "character device": lambda: hostile(GOOD, (entry("null", tarfile.CHRTYPE), b"")),
    "block device": lambda: hostile(GOOD, (entry("disk", tarfile.BLKTYPE), b"")),
    "fifo": lambda: hostile(GOOD, (entry("pipe", tarfile.FIFOTYPE), b"")),
    "duplicate member": lambda: hostile(GOOD, (entry("ok.py"), b"y = 2\n")),
    "file then directory below it": lambda: hostile(GOOD, (entry("ok.py/inner"), b"x")),
}
EXPECTED = {
    "absolute path": "'/etc/evil' is not a safe relative path",
    "parent traversal": "'../x' is not a safe relative path",
    "inner traversal": "'a/../../x' is not a safe relative path",
    "symlink": "'link' is a symbolic link",
    "hardlink": "'hard' is a hard link",
    "character device": "'null' is a device",
    "block device": "'disk' is a device",
    "fifo": "'pipe' is a fifo",
    "duplicate member": "'ok.py' appears twice",
    "file then directory below it": "cannot extract artifact member 'ok.py/inner'",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_artifacts_are_refused_and_leave_nothing(tmp_path: Path, case: str) -> None:
    data = HOSTILE[case]()
    verify_digest(data, digest_of(data))  # a correct digest does not make content safe
    dest = tmp_path / "cache" / "release"

    with pytest.raises(ArtifactError) as raised:
        extract_artifact(data, dest)

    assert EXPECTED[case] in str(raised.value)
    assert "\n" not in str(raised.value)
    assert not dest.exists()
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []
    assert not (tmp_path / "etc").exists() and not (tmp_path / "x").exists()


def test_nothing_is_left_next_to_dest_after_a_failure(tmp_path: Path) -> None:
    dest = tmp_path / "release"

    with pytest.raises(ArtifactError):
        extract_artifact(HOSTILE["file then directory below it"](), dest)

    assert list(tmp_path.iterdir()) == []


def test_decompression_bomb_is_cut_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(artifact, "MAX_UNPACKED_BYTES", 1 << 20)
    data = hostile((entry("zeros.bin"), bytes(4 << 20)))
    assert len(data) < 4096

    with pytest.raises(ArtifactError, match="decompression bomb"):
        extract_artifact(data, tmp_path / "release")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not zstd at all", "not valid zstd data"),
        (
            zstandard.ZstdCompressor().compress(b"not a tar archive" * 100),
            "not a valid tar archive",
        ),
    ],
)
def test_corrupt_artifacts_are_refused(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(ArtifactError, match=message):
        extract_artifact(data, tmp_path / "release")
    assert list(tmp_path.iterdir()) == []


def test_oversized_artifact_is_refused_before_decompressing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(artifact, "MAX_ARTIFACT_BYTES", 10)

    with pytest.raises(ArtifactError, match="over the 10-byte limit"):
        extract_artifact(hostile(GOOD), tmp_path / "release")


def test_existing_destination_is_a_conflict(tmp_path: Path) -> None:
    (tmp_path / "release").mkdir()

    with pytest.raises(Conflict, match="already exists"):
        extract_artifact(hostile(GOOD), tmp_path / "release")


def test_directory_members_are_allowed(tmp_path: Path) -> None:
    data = hostile((entry("pkg", tarfile.DIRTYPE), b""), (entry("pkg/a.py"), b"a"))

    assert extract_artifact(data, tmp_path / "release") == ["pkg/a.py"]
    assert (tmp_path / "release" / "pkg" / "a.py").read_bytes() == b"a"


# --- golden digest ----------------------------------------------------------------------------------

GOLDEN = {
    "pkg/__init__.py": (b"", 0o644),
    "pkg/runner.py": (b"from tilebox_runner import Runner\n\nrunner = Runner()\n", 0o640),
    "pkg/deep/er/est/leaf.py": (b"LEAF = 1\n" * 100, 0o600),
    "bin/start.sh": (b"#!/bin/sh\nexec python -m pkg\n", 0o750),  # the executable
    "donn\u00e9es/r\u00e9sum\u00e9 \u2603.txt": ("caf\u00e9 \u2603\n".encode(), 0o664),
    "pyproject.toml": (b'[project]\nname = "pkg"\nversion = "0.1"\n', 0o444),
}
# The sha256 of the tar stream (what tarwriter writes) and of the artifact (that stream compressed
# by zstd). A change of either is a change of every release digest: identical content would then
# publish as a new release, and runners would no longer share cached releases. The first moving
# means our tar writer changed; the second alone, the compression (a zstandard upgrade, a level).
GOLDEN_TAR = "sha256:65e1663d4b0ac6c9a6ac7443477fa2785c50cfe70013dac5c288d7d2f50cb132"
GOLDEN_ARTIFACT = "sha256:3c94a305a50fd18386fa1e9a9746931e3b5788fb5f8ceae3fa30dcdc18af40e8"


def test_a_fixed_tree_builds_to_the_pinned_digest(tmp_path: Path) -> None:
    for path, (content, mode) in GOLDEN.items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        target.chmod(mode)
        os.utime(target, (1_234_567_890, 1_234_567_890))
    data = pack(tmp_path, list(GOLDEN)).data
    tar = zstandard.ZstdDecompressor().decompress(data)
    assert (digest_of(tar), digest_of(data)) == (GOLDEN_TAR, GOLDEN_ARTIFACT)
