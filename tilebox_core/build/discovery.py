"""The build's runtime check: start the workflow's runtime from the UNPACKED artifact in a fresh
Python process and read the tasks it provides.

Running the check in a child, from the artifact rather than the working tree, proves that the
artifact alone can start the runtime (a module left out by ``[build]`` fails here, not on a runner)
and keeps the user's import side effects out of the build process.

Contract with the child (protocol 1). The child runs with the unpacked artifact as its working
directory and ``TILEBOX_DISCOVER=1`` in its environment, and its LAST line on stdout is one JSON
document::

    {"protocol": 1, "tasks": [{"name": "acme.Fetch", "version": "v1.0", "input_schema": {...}}]}

where ``input_schema`` is ``msgspec.json.schema(task_class)``. Exit code 0 means success; otherwise
the last line on stderr says what went wrong. For ``runner = "module:object"`` the child is
``python -m tilebox_runner.discover module:object``. For ``command = [...]`` the command itself is
run (``python``/``python3`` as its first word mean the interpreter running this build, and the
artifact directory is put first on ``PYTHONPATH``); its entry point calls
``tilebox_runner.discover.emit_discovery(runner)`` and exits when ``TILEBOX_DISCOVER`` is set.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import structlog

from tilebox_core.domain.entrypoint import check_entrypoint
from tilebox_core.domain.errors import InvalidInput
from tilebox_core.domain.events import ReleaseTask
from tilebox_core.domain.identifiers import check_identifiers

log = structlog.get_logger(__name__)

DISCOVER_ENV = "TILEBOX_DISCOVER"
PROTOCOL = 1


class BuildError(InvalidInput):
    """The workflow's runtime could not start from the artifact, or reported invalid tasks.

    The message is one line (what failed and the child's last error line); ``details`` holds the
    child's whole stderr for ``--debug``.
    """

    code = "build_failed"

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class DiscoveredTask(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: str
    version: str
    input_schema: dict[str, Any]


class DiscoveryReport(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The JSON document a discovery child prints as its last line on stdout."""

    protocol: int
    tasks: list[DiscoveredTask]


def discover_tasks(
    unpacked_dir: Path,
    runner: str | None,
    command: list[str] | None,
    timeout: float = 120,
) -> list[ReleaseTask]:
    """The tasks the workflow runtime provides, sorted by (name, version); raises ``BuildError``."""
    check_entrypoint(runner, command)
    if runner is not None:
        what = f"runner {runner!r}"
        argv = [sys.executable, "-m", "tilebox_runner.discover", runner]
    else:
        assert command is not None
        what = f"command {shlex.join(command)!r}"
        argv = _command_argv(command)
    stdout, stderr = _run(argv, unpacked_dir, _environment(unpacked_dir), timeout, what)
    tasks = _parse(stdout, stderr, what)
    log.debug("discovery.done", entrypoint=what, tasks=len(tasks))
    return tasks


def _command_argv(command: list[str]) -> list[str]:
    if command[0] in ("python", "python3"):
        return [sys.executable, *command[1:]]
    return list(command)


def _environment(unpacked_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env[DISCOVER_ENV] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave the unpacked artifact as it was
    env.pop("PYTHONSAFEPATH", None)  # it would keep the artifact directory off sys.path
    previous = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join([str(unpacked_dir), *([previous] if previous else [])])
    return env


def _run(
    argv: list[str], cwd: Path, env: dict[str, str], timeout: float, what: str
) -> tuple[str, str]:
    try:
        # a session of its own, so that a timeout can kill whatever the child started as well
        child = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
    except OSError as exc:
        raise BuildError(
            f"runtime check could not start {what}: {exc.strerror or exc}; fix [workflow] command"
        ) from exc
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        out, err = child.communicate()
        raise BuildError(
            f"runtime check of {what} timed out after {timeout:g} s; does importing it block?",
            _text(err),
        ) from None
    stdout, stderr = _text(out), _text(err)
    if child.returncode != 0:
        # paths inside the scratch copy of the artifact read as paths of the project
        last = _last_line(stderr).replace(f"{cwd}{os.sep}", "")
        raise BuildError(
            f"runtime check of {what} failed (exit code {child.returncode}): {last}", stderr
        )
    return stdout, stderr


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no error output"


def _parse(stdout: str, stderr: str, what: str) -> list[ReleaseTask]:
    try:
        report = msgspec.json.decode(_last_line(stdout), type=DiscoveryReport)
    except msgspec.DecodeError as exc:
        raise BuildError(
            f"runtime check of {what} printed no valid discovery JSON as its last stdout line: "
            f"{exc}; call tilebox_runner.discover.emit_discovery(runner) when {DISCOVER_ENV} "
            "is set",
            stderr,
        ) from exc
    if report.protocol != PROTOCOL:
        raise BuildError(
            f"runtime check of {what} speaks discovery protocol {report.protocol}, this build "
            f"understands {PROTOCOL}; install matching tilebox versions",
            stderr,
        )
    if not report.tasks:
        raise BuildError(
            f"{what} provides no tasks; register task classes with Runner(tasks=[...])"
        )
    return _validated(report.tasks, what, stderr)


def _validated(tasks: list[DiscoveredTask], what: str, stderr: str) -> list[ReleaseTask]:
    try:
        check_identifiers((task.name, task.version) for task in tasks)
    except InvalidInput as exc:
        raise BuildError(f"{what} provides an invalid task: {exc}", stderr) from exc
    ordered = sorted(tasks, key=lambda t: (t.name, t.version))
    return [ReleaseTask(t.name, t.version, t.input_schema) for t in ordered]
