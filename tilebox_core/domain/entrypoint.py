"""How a release's runtime starts: exactly one of ``runner`` ("module:object", a
``tilebox_runner.Runner``) or ``command`` (an argv). The rule is written once, here; the config file,
the build's runtime check and the publish decision each call it and may name the field their way."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .errors import InvalidInput

_RUNNER = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class EntrypointError(InvalidInput):
    """``field`` is "runner" or "command" when that value is malformed, None when there is not
    exactly one of them; the message reads "<field or 'the release'> <problem>"."""

    def __init__(self, field: str | None, problem: str) -> None:
        super().__init__(f"{field or 'the release'} {problem}")
        self.field = field
        self.problem = problem


def check_entrypoint(runner: str | None, command: Sequence[str] | None) -> None:
    if runner is None and command is None:
        raise EntrypointError(
            None,
            "has neither runner nor command; add exactly one of runner ('module:object') or "
            'command, e.g. runner = "package.runner:runner"',
        )
    if runner is not None and command is not None:
        raise EntrypointError(
            None, "has both runner and command; keep exactly one of runner or command"
        )
    if runner is not None and not _RUNNER.match(runner):
        raise EntrypointError(
            "runner", f"{runner!r} is not 'module:object'; write e.g. \"scenes.runner:runner\""
        )
    if command is not None and not (command and all(command)):
        raise EntrypointError(
            "command",
            'must be a non-empty list of non-empty strings, e.g. ["python", "-m", "scenes"]',
        )
