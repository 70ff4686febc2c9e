"""``tilebox.workflow.toml``: which workflow a project publishes to, what goes into its artifact,
how its runtime starts, and named deployment targets.

The file is decoded strictly (unknown keys are errors, so a typo never silently falls back to a
default) and every error is one line naming the file, the key and the fix. Paths in the result are
absolute, so nothing downstream depends on the working directory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec

from tilebox_core.domain.entrypoint import EntrypointError, check_entrypoint
from tilebox_core.domain.errors import InvalidInput, NotFound
from tilebox_core.domain.identifiers import validate_slug

CONFIG_FILE = "tilebox.workflow.toml"


class WorkflowSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    slug: str
    root: str = "."
    runner: str | None = None  # "module:object" naming a tilebox_runner.Runner
    command: list[str] | None = None  # or a command that starts the runtime


class BuildSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    include: list[str]
    exclude: list[str] = []
    use_gitignore: bool = True


class Target(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    clusters: list[str]


class _File(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    workflow: WorkflowSection
    build: BuildSection
    # converted one by one in _targets(), so that errors can name the target
    targets: dict[str, dict[str, Any]] = {}


class WorkflowConfig(msgspec.Struct, frozen=True, kw_only=True):
    """A loaded, validated ``tilebox.workflow.toml``."""

    path: Path  # the toml file, absolute
    project_dir: Path  # the directory that holds it
    root: Path  # the directory files are selected from, absolute, inside project_dir
    workflow: WorkflowSection
    build: BuildSection
    targets: dict[str, Target]

    def target_clusters(self, name: str) -> list[str]:
        target = self.targets.get(name)
        if target is None:
            known = ", ".join(sorted(self.targets)) or "none"
            raise NotFound(
                f"{self.path}: no target {name!r} (known targets: {known}); add "
                f"[targets.{name}] with clusters = [...]"
            )
        return list(target.clusters)


def find_config(start: Path) -> Path:
    """The config file ``start`` names, or the nearest one in ``start`` or a parent directory."""
    start = start.absolute()
    if start.is_file():
        return start
    if not start.is_dir():
        raise NotFound(f"{start} does not exist; pass a project directory or a {CONFIG_FILE}")
    for directory in (start, *start.parents):
        candidate = directory / CONFIG_FILE
        if candidate.is_file():
            return candidate
    raise NotFound(
        f"no {CONFIG_FILE} in {start} or any parent directory; run `tilebox workflow init` to "
        "create one"
    )


def load_config(path: Path) -> WorkflowConfig:
    path = path.absolute()
    try:
        source = path.read_bytes()
    except OSError as exc:
        raise NotFound(f"cannot read {path}: {exc.strerror}") from exc
    parsed = _decode(path, source)
    return _validated(path, parsed)


def _decode(path: Path, source: bytes) -> _File:
    try:
        return msgspec.toml.decode(source, type=_File)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"{path}: {_explain(str(exc))}") from exc
    except msgspec.DecodeError as exc:
        # msgspec reports TOML syntax errors with "(at line X, column Y)"
        raise InvalidInput(f"{path}: malformed TOML: {exc}") from exc


_UNKNOWN = re.compile(
    r"^Object contains unknown field `(?P<key>[^`]*)`(?: - at `\$(?P<at>[^`]*)`)?$"
)
_MISSING = re.compile(
    r"^Object missing required field `(?P<key>[^`]*)`(?: - at `\$(?P<at>[^`]*)`)?$"
)
_WRONG = re.compile(r"^(?P<what>.*) - at `\$(?P<at>[^`]*)`$")


def _explain(message: str, prefix: str = "") -> str:
    """msgspec's validation message, rephrased in terms of TOML tables and keys."""
    if match := _UNKNOWN.match(message):
        key, table = match["key"], _table(prefix + (match["at"] or ""))
        where = f" in [{table}]" if table else " at the top level"
        return f"unknown key {key!r}{where}; remove it or fix its spelling"
    if match := _MISSING.match(message):
        key, table = match["key"], _table(prefix + (match["at"] or ""))
        if not table:
            return f"missing [{key}] table; add it (see `tilebox workflow init`)"
        return f"missing key {key!r} in [{table}]; add it"
    if match := _WRONG.match(message):
        key = _table(prefix + match["at"])
        return f"invalid value for {key}: {match['what'].lower()}; fix the value"
    return f"{message}; fix the file"


def _table(at: str) -> str:
    """``.targets.production.clusters[1]`` -> ``targets.production.clusters[1]``."""
    return at.lstrip(".")


def _validated(path: Path, parsed: _File) -> WorkflowConfig:
    workflow = parsed.workflow
    _check_slug(path, "workflow.slug", workflow.slug, "workflow slug")
    _check_entrypoint(path, workflow)
    if not parsed.build.include:
        raise _error(
            path, "build.include", "is empty; list the files to publish, e.g. ['pkg/**/*.py']"
        )
    targets = {name: _target(path, name, raw) for name, raw in parsed.targets.items()}
    project_dir = path.parent.resolve()
    return WorkflowConfig(
        path=path,
        project_dir=project_dir,
        root=_root(path, project_dir, workflow.root),
        workflow=workflow,
        build=parsed.build,
        targets=targets,
    )


def _target(path: Path, name: str, raw: dict[str, Any]) -> Target:
    _check_slug(path, f"[targets.{name}]", name, "target name")
    try:
        target = msgspec.convert(raw, Target)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"{path}: {_explain(str(exc), f'.targets.{name}')}") from exc
    if not target.clusters:
        raise _error(path, f"targets.{name}.clusters", "is empty; list at least one cluster slug")
    for cluster in target.clusters:
        _check_slug(path, f"targets.{name}.clusters", cluster, "cluster slug")
    return target


def _error(path: Path, key: str, problem: str) -> InvalidInput:
    return InvalidInput(f"{path}: {key} {problem}")


def _check_slug(path: Path, key: str, value: str, what: str) -> None:
    try:
        validate_slug(value, what)
    except InvalidInput as exc:
        raise InvalidInput(f"{path}: {key}: {exc}") from exc


def _check_entrypoint(path: Path, workflow: WorkflowSection) -> None:
    try:
        check_entrypoint(workflow.runner, workflow.command)
    except EntrypointError as exc:
        key = f"workflow.{exc.field}" if exc.field else "[workflow]"
        raise _error(path, key, exc.problem) from exc


def _root(path: Path, project_dir: Path, root: str) -> Path:
    relative = Path(root)
    resolved = (project_dir / relative).resolve()
    if relative.is_absolute() or not resolved.is_relative_to(project_dir):
        raise _error(
            path,
            "workflow.root",
            f'{root!r} leaves the project directory {project_dir}; use a path inside it, e.g. "."',
        )
    if not resolved.is_dir():
        raise _error(
            path, "workflow.root", f"{root!r} is not a directory; create it or fix the path"
        )
    return resolved
