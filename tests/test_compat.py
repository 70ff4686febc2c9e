"""Input-schema compatibility of two releases of a task, as plain tables of before/after types."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
import pytest

from tilebox_core.domain.compat import release_incompatibilities, schema_incompatibilities
from tilebox_core.domain.events import ReleaseTask


def schema(**fields: Any) -> dict[str, Any]:
    """The msgspec JSON schema of a Struct named Input with ``fields`` (type or (type, default))."""
    spec = [
        (name, *kind) if isinstance(kind, tuple) else (name, kind) for name, kind in fields.items()
    ]
    return msgspec.json.schema(msgspec.defstruct("Input", spec))


class Point(msgspec.Struct):
    x: int
    y: int


class PointV2(msgspec.Struct):
    x: int


class Tree(msgspec.Struct):
    value: int
    children: list[Tree] = []


CASES = [
    # (old fields, new fields, expected problems)
    ({"scene_id": str}, {"scene_id": str}, []),
    ({"scene_id": str, "limit": (int, 10)}, {"scene_id": str}, ["field 'limit' removed"]),
    ({"scene_id": str}, {"scene_id": str, "limit": int}, ["field 'limit' is newly required"]),
    ({"scene_id": str}, {"scene_id": str, "limit": (int, 10)}, []),
    ({"limit": (int, 10)}, {"limit": int}, ["field 'limit' is newly required"]),
    ({"limit": int}, {"limit": (int, 10)}, []),
    ({"y": str}, {"y": int}, ["field 'y' changed type from string to integer"]),
    ({"y": int}, {"y": float}, []),
    ({"y": float}, {"y": int}, ["field 'y' changed type from number to integer"]),
    ({"y": str}, {"y": str | None}, []),
    ({"y": str | None}, {"y": str}, ["field 'y' changed type from string | null to string"]),
    ({"y": str}, {"y": msgspec.Raw}, []),
    ({"p": Point}, {"p": PointV2}, ["field 'p.y' removed"]),
    ({"p": Point | None}, {"p": PointV2 | None}, ["field 'p.y' removed"]),
    (
        {"tags": list[str]},
        {"tags": list[int]},
        ["field 'tags[]' changed type from string to integer"],
    ),
    ({"tags": list[str]}, {"tags": str}, ["field 'tags' changed type from array to string"]),
    (
        {"d": dict[str, int]},
        {"d": dict[str, str]},
        ["field 'd{}' changed type from integer to string"],
    ),
    ({"mode": Literal["a", "b"]}, {"mode": Literal["a", "b", "c"]}, []),
    (
        {"mode": Literal["a", "b"]},
        {"mode": Literal["a"]},
        ["field 'mode' changed type from one of 'a', 'b' to one of 'a'"],
    ),
    ({"mode": Literal["a", "b"]}, {"mode": str}, []),
    (
        {"mode": str},
        {"mode": Literal["a"]},
        ["field 'mode' changed type from string to one of 'a'"],
    ),
    ({"t": Tree}, {"t": Tree}, []),
]


@pytest.mark.parametrize(("old", "new", "expected"), CASES)
def test_schema_incompatibilities(
    old: dict[str, Any], new: dict[str, Any], expected: list[str]
) -> None:
    assert schema_incompatibilities(schema(**old), schema(**new)) == expected


def test_unknown_schemas_cannot_be_compared() -> None:
    assert schema_incompatibilities({}, schema(a=int)) == []
    assert schema_incompatibilities(schema(a=int), {}) == []


def task(name: str, version: str, **fields: Any) -> ReleaseTask:
    return ReleaseTask(name, version, schema(**fields))


def test_release_incompatibilities_compare_same_name_and_major_only() -> None:
    deployed = [task("demo.Fetch", "v1.0", scene_id=str), task("demo.Store", "v1.0", key=str)]
    new = [
        task("demo.Fetch", "v1.1", scene_id=int),  # same major: compared
        task("demo.Store", "v2.0", bucket=str),  # new major: a fresh start
        task("demo.Other", "v1.0", anything=int),  # not deployed
    ]

    assert release_incompatibilities(deployed, new) == [
        "demo.Fetch@v1.1 (deployed v1.0): field 'scene_id' changed type from string to integer"
    ]
    assert release_incompatibilities(deployed, deployed) == []
