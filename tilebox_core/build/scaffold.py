"""``tilebox workflow init``: a new workflow project that builds and publishes as it is.

The files come from ``templates/`` with the slug and package name filled in. Nothing existing is
ever overwritten: if any file to be written is already there, nothing is written at all.
"""

from __future__ import annotations

import keyword
from importlib.resources import files
from pathlib import Path
from string import Template

from tilebox_core.domain.errors import Conflict
from tilebox_core.domain.identifiers import slugify, validate_slug

from .config import CONFIG_FILE


def init_project(directory: Path, name: str | None = None, slug: str | None = None) -> list[Path]:
    """Write a workflow project into ``directory`` (created if missing); return what was written.

    The slug is ``slug``, else derived from ``name``, else from the directory's name.
    """
    if slug is not None:
        slug = validate_slug(slug, "workflow slug")
    else:
        slug = validate_slug(slugify(name or directory.absolute().name), "workflow slug")
    package = package_name(slug)
    plan = {
        directory / CONFIG_FILE: "tilebox.workflow.toml.tmpl",
        directory / "pyproject.toml": "pyproject.toml.tmpl",
        directory / package / "__init__.py": "package_init.py.tmpl",
        directory / package / "runner.py": "runner.py.tmpl",
    }
    for path in plan:
        if path.exists() or path.is_symlink():
            raise Conflict(
                f"cannot initialise a workflow project: {path} already exists; remove it or run "
                "init in an empty directory"
            )
    contents = {
        path: _render(template, slug=slug, package=package) for path, template in plan.items()
    }
    for path, text in contents.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "x", encoding="utf-8") as handle:
            handle.write(text)
    return list(plan)


def package_name(slug: str) -> str:
    """A Python package name for a slug: 'my-scenes' -> 'my_scenes', '2-run' -> 'workflow_2_run'."""
    package = slug.replace("-", "_")
    if not package.isidentifier() or keyword.iskeyword(package):
        package = f"workflow_{package}"
    return package


def _render(template: str, **values: str) -> str:
    text = files("tilebox_core.build").joinpath("templates", template).read_text(encoding="utf-8")
    return Template(text).substitute(values)
