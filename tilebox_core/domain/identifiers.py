"""Pure rules for names: slugs, task identifiers and version compatibility. No I/O."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable

import msgspec

from .errors import InvalidInput

_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_VERSION = re.compile(r"^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$")
MAX_TASK_NAME_LENGTH = 256
"""As Tilebox: a task name is 1-256 characters of any kind (``tilebox.com/Fetch Scene``, ``東京``).
Where one reaches a Redis key it is percent-encoded (``keys.TaskKeys.lane``), and where it reaches
a terminal its control characters are escaped (``tilebox_cli.output.printable``)."""

MAX_NAME_LENGTH = 128
"""Display names of clusters and workflows: long enough for any real name, short enough for a table."""


def validate_slug(slug: str, what: str = "slug") -> str:
    if not _SLUG.match(slug):
        raise InvalidInput(
            f"invalid {what} {slug!r}: use 1-63 lowercase letters, digits and inner hyphens, "
            "e.g. 'prod-eu-1'"
        )
    return slug


def validate_name(name: str, what: str = "name") -> str:
    """A display name: 1-128 characters, no control characters (they break tables and logs)."""
    if not name.strip():
        raise InvalidInput(f"a {what} cannot be empty; pass a name like 'Prod EU'")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(
            f"{what} is {len(name):,} characters long, over the limit of {MAX_NAME_LENGTH}; "
            "choose a shorter name"
        )
    control = next((c for c in name if is_control(c)), None)
    if control is not None:
        raise InvalidInput(
            f"{what} {name[:40]!r} contains the control character U+{ord(control):04X}; "
            "use printable characters only"
        )
    return name


_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def is_control(char: str) -> bool:
    """C0/C1 controls, line/paragraph separators and bidi overrides: they move or break lines."""
    return unicodedata.category(char) in ("Cc", "Zl", "Zp") or char in _BIDI_CONTROLS


def slugify(name: str) -> str:
    """Derive a slug from a display name: 'My Scenes v2' -> 'my-scenes-v2'."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:63].strip("-")
    if not slug:
        raise InvalidInput(f"cannot derive a slug from name {name!r}: pass one with --slug")
    return slug


class TaskIdentifier(msgspec.Struct, frozen=True, order=True):
    """A task name plus a version ``vMAJOR.MINOR``."""

    name: str
    version: str

    @property
    def major(self) -> int:
        return parse_version(self.version)[0]

    @property
    def minor(self) -> int:
        return parse_version(self.version)[1]

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


@functools.lru_cache(maxsize=1024)  # asked for every task claimed and run; versions are few
def parse_version(version: str) -> tuple[int, int]:
    match = _VERSION.match(version)
    if match is None:
        raise InvalidInput(
            f"invalid task version {version!r}: expected 'vMAJOR.MINOR', e.g. 'v1.0'"
        )
    return int(match[1]), int(match[2])


def check_task_name(name: object) -> str:
    """The one rule for task names: every check of a name (submit, discovery, publish) ends here."""
    if not isinstance(name, str):
        raise InvalidInput(f"invalid task name {name!r}: a task name is a string")
    if not name:
        raise InvalidInput("invalid task name '': a task name needs 1-256 characters")
    if len(name) > MAX_TASK_NAME_LENGTH:
        raise InvalidInput(
            f"invalid task name {name[:40]!r}...: {len(name):,} characters, over the limit of "
            f"{MAX_TASK_NAME_LENGTH}; choose a shorter name"
        )
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        # a lone surrogate (from a mis-decoded byte) is not a character: it cannot be stored
        raise InvalidInput(
            f"invalid task name {name!r}: U+{ord(name[exc.start]):04X} at {exc.start} is not a "
            "character (a lone UTF-16 surrogate); fix the text's encoding"
        ) from None
    return name


def make_identifier(name: str, version: str) -> TaskIdentifier:
    check_task_name(name)
    parse_version(version)
    return TaskIdentifier(name, version)


def duplicate_identifier(identifier: TaskIdentifier, detail: str = "") -> InvalidInput:
    return InvalidInput(
        f"duplicate task identifier {identifier}{detail}; give each task its own name or version"
    )


def check_identifiers(tasks: Iterable[tuple[str, str]]) -> list[TaskIdentifier]:
    """The identifiers of ``tasks`` (name, version pairs), each valid and none twice."""
    seen: set[TaskIdentifier] = set()
    for name, version in tasks:
        identifier = make_identifier(name, version)
        if identifier in seen:
            raise duplicate_identifier(identifier)
        seen.add(identifier)
    return sorted(seen)


def can_run(provided: TaskIdentifier, submitted: TaskIdentifier) -> bool:
    """A runner providing vX.Y may run a task submitted as vX.Z iff Z <= Y (same name, same X)."""
    if provided.name != submitted.name:
        return False
    p_major, p_minor = parse_version(provided.version)
    s_major, s_minor = parse_version(submitted.version)
    return p_major == s_major and s_minor <= p_minor
