"""Which files of a workflow project go into its artifact: ``[build]`` include, minus exclude, minus
``.gitignore`` rules.

Patterns use gitignore syntax (pathspec's ``GitIgnoreSpec``). ``.gitignore`` files apply as git
applies them: each relative to its own directory, deeper files overriding shallower ones, and an
ignored directory is never entered (so nothing below it can be re-included). Files above ``root``
count up to the enclosing git repository (or the project directory outside git); a user's global
excludes file and ``.git/info/exclude`` do not, so that the selection is the same on every machine.

The walk is one ``os.scandir`` per directory and prunes early: ignored and excluded directories, and
directories no include pattern can reach, are never entered. Symlinks are followed only inside
``root`` and never into a loop; the artifact stores what they point to as regular files. The build
output ``.tilebox/`` and ``.git/`` are never selected, nor are ``__pycache__/`` and virtual
environments (``.venv/``, ``venv/``, any directory with a ``pyvenv.cfg``).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import structlog
from pathspec import GitIgnoreSpec

from tilebox_core.domain.errors import InvalidInput

from .config import WorkflowConfig

log = structlog.get_logger(__name__)

NEVER_SELECTED = frozenset({".git", ".tilebox"})
"""Names never walked or selected at any depth: git's data and the local build output."""

NEVER_WALKED = frozenset({"__pycache__", ".venv", "venv"})
"""Directories never walked, whatever ``include`` says: bytecode caches and virtual environments
(so is any directory holding a ``pyvenv.cfg``). An artifact holds code, lock files and small
config; a runner builds environments itself."""

VENV_MARKER = "pyvenv.cfg"


class SelectedFile(NamedTuple):
    """A selected file with the stat (symlinks followed) a build compares to find changes."""

    path: str  # POSIX, relative to root
    size: int
    mtime_ns: int
    inode: int
    executable: bool


def scan(config: WorkflowConfig) -> list[SelectedFile]:
    """The selected files with their stat, sorted by path."""
    rules = _Rules(config)
    files = sorted(_Walk(config, rules).run())
    rules.check_every_include_matches([f.path for f in files])
    log.debug("selection.scanned", root=str(config.root), files=len(files))
    return files


# --- patterns -------------------------------------------------------------------------------------


def _compile(patterns: Iterable[str], source: str) -> GitIgnoreSpec:
    try:
        return GitIgnoreSpec.from_lines(list(patterns))
    except ValueError as exc:
        raise InvalidInput(f"{source}: invalid pattern: {exc}; fix the pattern") from exc


class _Reach:
    """Whether any include pattern could match something below a directory, from the patterns'
    literal leading segments. It errs towards "yes": it only decides what not to walk."""

    def __init__(self, patterns: list[str]) -> None:
        self.anywhere = False  # an unanchored pattern ("*.py") matches at any depth
        self.anchored: list[list[str]] = []
        for pattern in patterns:
            text = pattern.strip()
            if not text or text.startswith(("#", "!")):
                continue
            if "/" not in text.rstrip("/"):
                self.anywhere = True
            else:
                self.anchored.append(text.strip("/").split("/"))

    def below(self, parts: list[str]) -> bool:
        return self.anywhere or any(_segments_reach(segments, parts) for segments in self.anchored)


def _segments_reach(segments: list[str], parts: list[str]) -> bool:
    for index, part in enumerate(parts):
        if index >= len(segments):
            return True  # the pattern names an ancestor directory: everything below matches
        segment = segments[index]
        if "**" in segment or "\\" in segment or "[" in segment:
            return True
        if not fnmatch.fnmatchcase(part, segment):
            return False
    return True


class _Ignore(NamedTuple):
    """One ``.gitignore``: its rules see paths relative to its own directory."""

    spec: GitIgnoreSpec
    strip: int  # characters of the root-relative path above the file's directory (nested files)
    prepend: str  # path of root relative to the file's directory (files above root)


def _is_ignored(ignores: tuple[_Ignore, ...], path: str) -> bool:
    """Git's verdict for a root-relative path (directories end with "/"): the deepest rule wins."""
    ignored = False
    for ignore in ignores:
        verdict = ignore.spec.check_file(ignore.prepend + path[ignore.strip :]).include
        if verdict is not None:
            ignored = verdict
    return ignored


def _read_gitignore(path: Path, strip: int, prepend: str) -> _Ignore:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}; fix its permissions") from exc
    return _Ignore(_compile(lines, str(path)), strip, prepend)


def _outer_ignores(root: Path, project_dir: Path) -> tuple[_Ignore, ...]:
    """``.gitignore`` files above root: up to the git repository's top, else the project dir."""
    ancestors = list(root.parents)
    top = next((d for d in (root, *ancestors) if (d / ".git").exists()), None)
    last = top if top is not None else project_dir
    if last == root or last not in ancestors:
        return ()
    above = ancestors[: ancestors.index(last) + 1]
    return tuple(
        _read_gitignore(directory / ".gitignore", 0, root.relative_to(directory).as_posix() + "/")
        for directory in reversed(above)
        if (directory / ".gitignore").is_file()
    )


class _Rules:
    """The compiled ``[build]`` patterns of one config."""

    def __init__(self, config: WorkflowConfig) -> None:
        build = config.build
        self.source = str(config.path)
        self.root = config.root
        for pattern in build.include:
            if ".." in pattern.split("/"):
                raise InvalidInput(
                    f"{config.path}: build.include pattern {pattern!r} leaves the root "
                    f"{config.root}; move the files under it or change workflow.root"
                )
        self.include_patterns = list(build.include)
        self.include = _compile(build.include, f"{config.path}: build.include")
        self.exclude = _compile(build.exclude, f"{config.path}: build.exclude")
        # with a negated exclude ("!keep.py"), a directory's verdict says nothing about its files
        self.exclude_prunes = not any(p.strip().startswith("!") for p in build.exclude)
        self.reach = _Reach(build.include)
        self.use_gitignore = build.use_gitignore
        self.outer = _outer_ignores(config.root, config.project_dir) if build.use_gitignore else ()

    def check_every_include_matches(self, selected: list[str]) -> None:
        for pattern in self.include_patterns:
            text = pattern.strip()
            if not text or text.startswith(("#", "!")):
                continue
            spec = _compile([pattern], f"{self.source}: build.include")
            if not any(spec.match_file(path) for path in selected):
                raise InvalidInput(
                    f"{self.source}: build.include pattern {pattern!r} matches no file under "
                    f"{self.root} (after exclude and .gitignore rules); fix or remove the pattern"
                )


# --- the walk -------------------------------------------------------------------------------------


class _Dir(NamedTuple):
    prefix: str  # root-relative POSIX path with a trailing "/", "" for root
    path: str  # where it is on disk (through symlinks)
    chain: tuple[str, ...]  # real paths of this directory and its ancestors on this walk
    ignores: tuple[_Ignore, ...]


class _Walk:
    def __init__(self, config: WorkflowConfig, rules: _Rules) -> None:
        self.config = config
        self.rules = rules
        self.root_real = os.path.realpath(config.root)

    def run(self) -> list[SelectedFile]:
        selected: list[SelectedFile] = []
        stack = [_Dir("", str(self.config.root), (self.root_real,), self.rules.outer)]
        while stack:
            directory = stack.pop()
            entries = self._entries(directory.path)
            if directory.prefix and any(e.name == VENV_MARKER for e in entries):
                log.debug("selection.virtualenv_skipped", directory=directory.prefix)
                continue
            directory = directory._replace(ignores=self._with_gitignore(directory, entries))
            for entry in entries:
                if entry.name in NEVER_SELECTED:
                    continue
                if entry.is_dir():
                    if entry.name in NEVER_WALKED:
                        continue
                    child = self._enter(directory, entry)
                    if child is not None:
                        stack.append(child)
                elif self._wanted(directory, directory.prefix + entry.name):
                    selected.append(self._file(directory.prefix, entry))
        return selected

    def _entries(self, path: str) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(path) as iterator:
                return list(iterator)
        except OSError as exc:
            raise InvalidInput(f"cannot list {path}: {exc.strerror}; fix its permissions") from exc

    def _with_gitignore(
        self, directory: _Dir, entries: list[os.DirEntry[str]]
    ) -> tuple[_Ignore, ...]:
        if not self.rules.use_gitignore:
            return directory.ignores
        for entry in entries:
            if entry.name == ".gitignore" and entry.is_file():
                nested = _read_gitignore(Path(entry.path), len(directory.prefix), "")
                return (*directory.ignores, nested)
        return directory.ignores

    def _wanted(self, directory: _Dir, path: str) -> bool:
        rules = self.rules
        return (
            rules.include.match_file(path)
            and not rules.exclude.match_file(path)
            and not _is_ignored(directory.ignores, path)
        )

    def _enter(self, directory: _Dir, entry: os.DirEntry[str]) -> _Dir | None:
        """The subdirectory to walk, or None to prune it."""
        path = directory.prefix + entry.name
        as_dir = path + "/"
        rules = self.rules
        if _is_ignored(directory.ignores, as_dir):
            return None
        if rules.exclude_prunes and rules.exclude.match_file(as_dir):
            return None
        if not rules.reach.below(path.split("/")):
            return None
        real = os.path.join(directory.chain[-1], entry.name)
        if entry.is_symlink():
            real = self._link_target(path, entry)
            if any(seen == real or seen.startswith(real + os.sep) for seen in directory.chain):
                log.debug("selection.symlink_loop_skipped", link=path, target=real)
                return None
        return _Dir(as_dir, entry.path, (*directory.chain, real), directory.ignores)

    def _file(self, prefix: str, entry: os.DirEntry[str]) -> SelectedFile:
        path = prefix + entry.name
        if entry.is_symlink():
            self._link_target(path, entry)
        if not entry.is_file():
            raise InvalidInput(
                f"{self.config.root / path} is not a regular file (broken symlink, fifo, socket or "
                "device); remove it or exclude it in [build]"
            )
        try:
            info = entry.stat()
        except OSError as exc:
            raise InvalidInput(f"cannot stat {entry.path}: {exc.strerror}") from exc
        executable = bool(info.st_mode & 0o111)
        return SelectedFile(path, info.st_size, info.st_mtime_ns, info.st_ino, executable)

    def _link_target(self, path: str, entry: os.DirEntry[str]) -> str:
        real = os.path.realpath(entry.path)
        if real != self.root_real and not real.startswith(self.root_real + os.sep):
            raise InvalidInput(
                f"symlink {self.config.root / path} points outside the workflow root "
                f"{self.config.root} (to {real}); copy the files in, or exclude the link in [build]"
            )
        return real
