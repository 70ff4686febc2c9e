"""Child side of the build's runtime check (see ``tilebox_core.build.discovery`` for the contract).

``python -m tilebox_runner.discover module:object`` imports the runner a ``tilebox.workflow.toml``
names, from the working directory (the unpacked artifact), and prints its tasks as JSON.
Workflows started by a ``command`` call ``emit_discovery(runner)`` themselves when
``TILEBOX_DISCOVER`` is set::

    if os.environ.get("TILEBOX_DISCOVER"):
        emit_discovery(runner)
        sys.exit(0)

Anything the workflow prints while being imported goes to stderr, so that stdout carries only the
JSON document; failures end with one explanatory line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any, TextIO

import msgspec

from tilebox_core.build.discovery import PROTOCOL, DiscoveredTask, DiscoveryReport
from tilebox_core.domain.errors import InvalidInput
from tilebox_core.domain.identifiers import TaskIdentifier
from tilebox_core.execution.registry import Runner
from tilebox_core.task import input_schema


class _Failure(Exception):
    """A discovery problem whose message is the last line the parent shows."""


def discovery_report(runner: Runner) -> DiscoveryReport:
    tasks = [
        DiscoveredTask(identifier.name, identifier.version, _schema(runner, identifier))
        for identifier in runner.identifiers()
    ]
    return DiscoveryReport(PROTOCOL, tasks)


def emit_discovery(runner: Runner, stream: TextIO | None = None) -> None:
    """Write the discovery document of ``runner`` as one line (stdout unless ``stream``)."""
    out = stream if stream is not None else sys.stdout
    out.write(msgspec.json.encode(discovery_report(runner)).decode() + "\n")
    out.flush()


def _schema(runner: Runner, identifier: TaskIdentifier) -> dict[str, Any]:
    try:
        return input_schema(runner.tasks[identifier])
    except (TypeError, ValueError) as exc:
        raise _Failure(
            f"cannot derive the input schema of task {identifier}: {exc}; use JSON-compatible "
            "field types"
        ) from exc


def load_runner(spec: str, artifact_dir: str) -> Runner:
    """Import ``module:object`` and check it is a ``Runner`` loaded from ``artifact_dir``."""
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except InvalidInput as exc:  # the project's own one-line message: no type name, no traceback
        raise _Failure(f"cannot import module {module_name!r} from the artifact: {exc}") from exc
    except Exception as exc:
        traceback.print_exc()
        raise _Failure(
            f"cannot import module {module_name!r} from the artifact: {type(exc).__name__}: {exc}"
        ) from exc
    _check_origin(module_name, getattr(module, "__file__", None), artifact_dir)
    found: object = module
    for name in attribute.split("."):
        if not hasattr(found, name):
            raise _Failure(
                f"module {module_name!r} has no attribute {attribute!r}; fix [workflow] runner"
            )
        found = getattr(found, name)
    if not isinstance(found, Runner):
        raise _Failure(
            f"{spec!r} is a {type(found).__name__}, not a tilebox_runner.Runner; point [workflow] "
            "runner at Runner(tasks=[...])"
        )
    return found


def _check_origin(module_name: str, module_file: str | None, artifact_dir: str) -> None:
    # an editable install or PYTHONPATH could serve the module from the working tree instead
    if module_file is None:
        return
    real = os.path.realpath(module_file)
    if not real.startswith(os.path.realpath(artifact_dir) + os.sep):
        raise _Failure(
            f"module {module_name!r} was imported from {real}, not from the artifact; add it to "
            "[build] include"
        )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or ":" not in args[0]:
        print("usage: python -m tilebox_runner.discover module:object", file=sys.stderr)
        return 2
    artifact_dir = os.getcwd()
    if sys.path[0] != artifact_dir:
        sys.path.insert(0, artifact_dir)
    stdout, sys.stdout = sys.stdout, sys.stderr
    try:
        emit_discovery(load_runner(args[0], artifact_dir), stdout)
    except _Failure as exc:
        print(str(exc), file=sys.stderr)
        return 1
    finally:
        sys.stdout = stdout
    return 0


if __name__ == "__main__":
    sys.exit(main())
