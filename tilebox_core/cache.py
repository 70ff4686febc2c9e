"""The job cache: bytes shared by the tasks of one job."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from tilebox_core.domain.errors import InvalidInput


class JobCache:
    """Bytes shared by the tasks of one job; on the local filesystem by default."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if not key or key.startswith(("/", ".")) or ".." in key.split("/"):
            raise InvalidInput(
                f"invalid job cache key {key!r}: use a relative name like 'scene/42'"
            )
        return self.root / key

    def __setitem__(self, key: str, value: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(value)
        tmp.replace(path)  # atomic: concurrent readers never see half a value

    def __getitem__(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._path(key).is_file()

    def __iter__(self) -> Iterator[str]:
        if not self.root.exists():
            return iter(())
        return iter(
            sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file()
                   and not p.name.endswith(".tmp"))
        )  # fmt: skip

    def group(self, name: str) -> JobCache:
        return JobCache(self._path(name))
