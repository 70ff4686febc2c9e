"""Input-schema compatibility between two releases of the same task (same name and major version).

Tasks submitted to a deployed release must still decode in its replacement when a failed job is
retried, so a task's input may only widen within a major version: a field may gain a default or
accept more types, but it may not disappear, become newly required, or accept less. Everything here
is a pure function of two JSON schemas (as ``msgspec.json.schema`` writes them); constraints such as
``minLength`` or ``maximum`` are not compared.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .events import ReleaseTask
from .identifiers import parse_version

Schema = dict[str, Any]

_MAX_DEPTH = 32  # recursive types (a Struct containing itself) stop comparing here


def release_incompatibilities(
    deployed_tasks: list[ReleaseTask], new_tasks: list[ReleaseTask]
) -> list[str]:
    """Problems of each new task whose (name, major) matches a deployed task, prefixed with it."""
    problems: list[str] = []
    for new in new_tasks:
        for old in deployed_tasks:
            if old.name != new.name or _major(old.version) != _major(new.version):
                continue
            prefix = f"{new.name}@{new.version} (deployed {old.version})"
            for problem in schema_incompatibilities(old.input_schema, new.input_schema):
                message = f"{prefix}: {problem}"
                if message not in problems:
                    problems.append(message)
    return problems


def schema_incompatibilities(old: Schema, new: Schema) -> list[str]:
    """Why input valid under ``old`` may be rejected by ``new``; empty when ``new`` accepts it all.

    An empty schema means "unknown" (e.g. a release published without schemas): nothing to compare.
    """
    if not old or not new:
        return []
    return list(_Comparison(old.get("$defs", {}), new.get("$defs", {})).fields(old, new, "", 0))


def _major(version: str) -> int:
    return parse_version(version)[0]


class _Comparison:
    """Walks two schemas side by side; each side resolves ``$ref`` against its own ``$defs``."""

    def __init__(self, old_defs: dict[str, Schema], new_defs: dict[str, Schema]) -> None:
        self.old_defs = old_defs
        self.new_defs = new_defs

    def fields(self, old: Schema, new: Schema, prefix: str, depth: int) -> Iterator[str]:
        """Problems between two object schemas with named properties."""
        old = _resolve(old, self.old_defs)
        new = _resolve(new, self.new_defs)
        old_props: dict[str, Schema] = old.get("properties", {})
        new_props: dict[str, Schema] = new.get("properties", {})
        old_required = set(old.get("required", []))
        for name in old_props:
            if name not in new_props:
                yield f"field '{prefix}{name}' removed"
        for name in new.get("required", []):
            if name not in old_required:
                yield f"field '{prefix}{name}' is newly required"
        for name, old_prop in old_props.items():
            if name in new_props:
                yield from self.value(old_prop, new_props[name], f"{prefix}{name}", depth + 1)

    def value(self, old: Schema, new: Schema, path: str, depth: int) -> Iterator[str]:
        """Problems between the schemas of one field (or array item)."""
        if depth > _MAX_DEPTH:
            return
        old_alts = _alternatives(old, self.old_defs)
        new_alts = _alternatives(new, self.new_defs)
        if not all(any(_accepts(n, o) for n in new_alts) for o in old_alts):
            yield (
                f"field '{path}' changed type from {_describe(old_alts)} to {_describe(new_alts)}"
            )
            return
        old_objects, new_objects = _of_kind(old_alts, "struct"), _of_kind(new_alts, "struct")
        if len(old_objects) == 1 and len(new_objects) == 1:
            yield from self.fields(old_objects[0], new_objects[0], f"{path}.", depth)
        for kind, key, suffix in (("array", "items", "[]"), ("dict", "additionalProperties", "{}")):
            old_containers, new_containers = _of_kind(old_alts, kind), _of_kind(new_alts, kind)
            if len(old_containers) == 1 and len(new_containers) == 1:
                yield from self.value(
                    _members(old_containers[0], key), _members(new_containers[0], key),
                    f"{path}{suffix}", depth + 1,
                )  # fmt: skip


def _resolve(schema: Schema, defs: dict[str, Schema]) -> Schema:
    seen: set[str] = set()
    while "$ref" in schema and schema["$ref"] not in seen:
        ref = schema["$ref"]
        seen.add(ref)
        schema = defs.get(ref.rsplit("/", 1)[-1], {})
    return schema


def _alternatives(schema: Schema, defs: dict[str, Schema]) -> list[Schema]:
    """A schema as a flat list of single-kind alternatives (anyOf, oneOf, type lists unrolled)."""
    schema = _resolve(schema, defs)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return [alt for member in schema[key] for alt in _alternatives(member, defs)]
    kinds = schema.get("type")
    if isinstance(kinds, list):
        return [{**schema, "type": kind} for kind in kinds]
    return [schema]


def _kind(schema: Schema) -> str:
    if "enum" in schema or "const" in schema:
        return "enum"
    kind = schema.get("type")
    if kind == "object":
        return "struct" if "properties" in schema else "dict"
    return str(kind) if kind else "any"


def _of_kind(alternatives: list[Schema], kind: str) -> list[Schema]:
    return [alt for alt in alternatives if _kind(alt) == kind]


def _enum_values(schema: Schema) -> list[Any]:
    return list(schema["enum"]) if "enum" in schema else [schema["const"]]


_JSON_KIND = {str: "string", bool: "boolean", int: "integer", float: "number", type(None): "null"}


def _accepts(new: Schema, old: Schema) -> bool:
    """Whether every value ``old`` (one alternative) allows is also allowed by ``new``."""
    new_kind, old_kind = _kind(new), _kind(old)
    if new_kind == "any":
        return True
    if old_kind == "enum":
        values = _enum_values(old)
        if new_kind == "enum":
            return all(value in _enum_values(new) for value in values)
        return all(_accepts(new, {"type": _JSON_KIND.get(type(v), "any")}) for v in values)
    if new_kind != old_kind:
        return new_kind == "number" and old_kind == "integer"
    if new_kind == "string":
        # a format narrows a string (date-time, uuid, ...); dropping it widens
        return new.get("format") in (None, old.get("format"))
    return True  # structs, arrays and dicts are compared member by member by the caller


def _members(container: Schema, key: str) -> Schema:
    """The schema of an array's items or a dict's values; absent (or ``true``) means any."""
    members = container.get(key)
    return members if isinstance(members, dict) else {}


def _describe(alternatives: list[Schema]) -> str:
    return " | ".join(_describe_one(alt) for alt in alternatives)


def _describe_one(schema: Schema) -> str:
    kind = _kind(schema)
    if kind == "enum":
        return "one of " + ", ".join(repr(v) for v in _enum_values(schema))
    if kind == "struct":
        return f"object {schema['title']}" if "title" in schema else "object"
    if kind == "array":
        return "array"
    if kind == "string" and "format" in schema:
        return f"string ({schema['format']})"
    return "object" if kind == "dict" else kind
