"""Job caches: bytes shared by the tasks of one job, as Tilebox's ``tilebox.workflows.cache``.

A runner is given a cache (``client.runner(..., cache=...)``, ``Runner(..., cache=...)``); each
task sees its job's group of it as ``context.job_cache``. Keys are strings, values bytes; a group
is a cache of its own under a key, like a directory: it lists only its direct keys, and reading a
group as a key raises KeyError. ``"a/b"`` is key ``b`` of group ``a``.

Backends: ``InMemoryCache`` (one process), ``LocalFileSystemCache`` (one machine or a shared
mount; the default, under ``TILEBOX_HOME``), and object stores through obstore:
``AmazonS3Cache``, ``GoogleStorageCache``, ``AzureBlobStorageCache``, or
``ObstoreCache`` over any obstore store.
"""

from __future__ import annotations

import abc
import copy
import os
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from tilebox_core.domain.errors import InvalidInput

if TYPE_CHECKING:
    from obstore.store import ObjectStore


def check_key(key: object) -> str:
    """A cache key or group name: segments separated by ``/``, none empty and none starting with
    ``.`` (no ``..`` out of a group, no clash with a local cache's temporary files)."""
    if not isinstance(key, str) or not key:
        raise InvalidInput(f"invalid job cache key {key!r}: use a non-empty name like 'scene/42'")
    if any(not part or part.startswith(".") for part in key.split("/")):
        raise InvalidInput(
            f"invalid job cache key {key!r}: use a relative name like 'scene/42', without empty "
            "parts or parts that start with '.'"
        )
    return key


class JobCache(abc.ABC):
    """Bytes under string keys, with groups of keys; what ``context.job_cache`` is."""

    @abc.abstractmethod
    def __contains__(self, key: object) -> bool:
        """Whether a value is stored under ``key`` (a group is not a value)."""

    @abc.abstractmethod
    def __setitem__(self, key: str, value: bytes) -> None: ...

    @abc.abstractmethod
    def __getitem__(self, key: str) -> bytes:
        """The value under ``key``; KeyError if there is none (also when ``key`` is a group)."""

    @abc.abstractmethod
    def __iter__(self) -> Iterator[str]:
        """The keys of this group's values, not those of its groups' values."""

    @abc.abstractmethod
    def group(self, key: str) -> JobCache:
        """The group under ``key``: a cache of its own (empty until something is stored)."""

    def items(self) -> Iterator[tuple[str, bytes]]:
        for key in self:
            yield key, self[key]


def _value(value: object, key: str) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise InvalidInput(
        f"job cache value of {key!r} is a {type(value).__name__}; store bytes (for text: "
        "value.encode(), for objects: pickle.dumps or json.dumps(...).encode())"
    )


class InMemoryCache(JobCache):
    """A cache in this process's memory, for tests and development: shared by the threads of one
    runner, lost when it stops, never seen by another process."""

    def __init__(self) -> None:
        self.cache: dict[str, bytes | InMemoryCache] = {}
        self._lock = threading.Lock()  # a group is created once, even by two threads at once

    def _parent(self, key: str, create: bool) -> tuple[InMemoryCache | None, str]:
        """The group holding the last part of ``key``, and that part; None when a group on the
        way is missing (and not to be created) or is a value."""
        *groups, last = check_key(key).split("/")
        node = self
        for part in groups:
            child = node._child(part, create)
            if child is None:
                return None, last
            node = child
        return node, last

    def _child(self, name: str, create: bool) -> InMemoryCache | None:
        found = self.cache.get(name)
        if found is None and create:
            with self._lock:
                found = self.cache.setdefault(name, InMemoryCache())
        return found if isinstance(found, InMemoryCache) else None

    def __contains__(self, key: object) -> bool:
        parent, last = self._parent(check_key(key), create=False)
        return parent is not None and isinstance(parent.cache.get(last), bytes)

    def __setitem__(self, key: str, value: bytes) -> None:
        data = _value(value, key)
        parent, last = self._parent(key, create=True)
        if parent is None or isinstance(parent.cache.get(last), InMemoryCache):
            raise InvalidInput(
                f"cannot store job cache key {key!r}: a part of it is a value, or it is a group "
                "(a name is either a value or a group, as a file or a directory)"
            )
        parent.cache[last] = data

    def __getitem__(self, key: str) -> bytes:
        parent, last = self._parent(key, create=False)
        found = parent.cache.get(last) if parent is not None else None
        if not isinstance(found, bytes):
            raise KeyError(f"{key} is not cached")
        return found

    def __iter__(self) -> Iterator[str]:
        return iter([k for k, v in list(self.cache.items()) if isinstance(v, bytes)])

    def group(self, key: str) -> InMemoryCache:
        parent, last = self._parent(key, create=True)
        group = parent._child(last, create=True) if parent is not None else None
        # a name that is a value has no keys under it: an empty group, as in Tilebox
        return group if group is not None else InMemoryCache()


class LocalFileSystemCache(JobCache):
    """A cache in a directory: keys are files, groups directories. Shared by every runner that
    mounts the same directory (one machine, or network storage)."""

    def __init__(self, root: Path | str = Path("cache")) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def __contains__(self, key: object) -> bool:
        return self._path(check_key(key)).is_file()

    def __setitem__(self, key: str, value: bytes) -> None:
        data = _value(value, key)
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)  # atomic: concurrent readers never see half a value
        except (IsADirectoryError, NotADirectoryError, FileExistsError):
            raise InvalidInput(
                f"cannot store job cache key {key!r} in {self.root}: a part of it is a value, or "
                "it is a group (a name is either a value or a group, as a file or a directory)"
            ) from None

    def __getitem__(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyError(f"{key} is not cached") from None

    def __iter__(self) -> Iterator[str]:
        try:
            entries = sorted(os.scandir(self.root), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return iter(())
        # dot files are a writer's temporary files (keys never start with a dot)
        return iter([e.name for e in entries if e.is_file() and not e.name.startswith(".")])

    def group(self, key: str) -> LocalFileSystemCache:
        return LocalFileSystemCache(self._path(key))


class ObstoreCache(JobCache):
    """A cache in an object store, through obstore:
    keys are objects under ``prefix``, groups are prefixes ending in ``/``."""

    def __init__(self, store: ObjectStore, prefix: str | PurePosixPath = ".") -> None:
        self.store = store
        self.prefix = PurePosixPath(prefix)

    def _path(self, key: str) -> str:
        return str(self.prefix / check_key(key))

    def __contains__(self, key: object) -> bool:
        import obstore

        try:
            obstore.head(self.store, self._path(check_key(key)))
        except FileNotFoundError:  # obstore's "not found"
            return False
        except Exception as exc:
            if _below_a_value(exc):
                return False
            raise
        return True

    def __setitem__(self, key: str, value: bytes) -> None:
        import obstore

        obstore.put(self.store, self._path(key), _value(value, key))

    def __getitem__(self, key: str) -> bytes:
        import obstore

        try:
            return bytes(obstore.get(self.store, self._path(key)).bytes())
        except FileNotFoundError:  # obstore's "not found"
            raise KeyError(f"{key} is not cached") from None
        except Exception as exc:
            if _below_a_value(exc):
                raise KeyError(f"{key} is not cached") from None
            raise

    def __iter__(self) -> Iterator[str]:
        import obstore

        top = self.prefix == PurePosixPath(".")
        listed = obstore.list_with_delimiter(self.store, None if top else str(self.prefix))
        strip = "" if top else f"{self.prefix}/"
        names = [str(o["path"]).removeprefix(strip) for o in listed["objects"]]
        return iter(sorted(n for n in names if n and "/" not in n))

    def group(self, key: str) -> ObstoreCache:
        group = copy.copy(self)  # the same store and class, one level down
        group.prefix = PurePosixPath(self._path(key))
        return group


def _below_a_value(error: Exception) -> bool:
    """Whether obstore's ``error`` says a key was looked for below a value ("a/b" where "a" is a
    value), which only a local store can tell (as "Not a directory"); that key is not cached.
    Other errors (network, permissions) are not a missing key and are raised."""
    return "Not a directory" in str(error)


def _obstore_class(name: str) -> Any:
    try:
        import obstore.store
    except ImportError:
        raise ImportError("object store caches need obstore: pip install obstore") from None
    return getattr(obstore.store, name)


class AmazonS3Cache(ObstoreCache):
    """A cache in an S3 bucket (or any S3 API: MinIO, Ceph, R2), as Tilebox's
    ``AmazonS3Cache(bucket, prefix)``. Credentials, region and endpoint come from the usual
    ``AWS_*`` variables, or from ``config`` (obstore's ``S3Config`` keys, e.g.
    ``endpoint="http://localhost:9000"``, ``region="eu-central-1"``)."""

    def __init__(
        self, bucket: str, prefix: str | PurePosixPath = "jobs", *,
        client_options: dict[str, Any] | None = None, **config: Any,
    ) -> None:  # fmt: skip
        store = _obstore_class("S3Store")(bucket, client_options=client_options, **config)
        super().__init__(store, prefix)
        self.bucket = bucket


class GoogleStorageCache(ObstoreCache):
    """A cache in a Google Cloud Storage bucket, as Tilebox's ``GoogleStorageCache(bucket,
    prefix)``. ``bucket`` is its name, or a ``google.cloud.storage`` Bucket (its name is used);
    credentials come from ``GOOGLE_*`` variables or application default credentials, or from
    ``config`` (obstore's ``GCSConfig`` keys)."""

    def __init__(
        self, bucket: Any, prefix: str | PurePosixPath = "jobs", *,
        client_options: dict[str, Any] | None = None, **config: Any,
    ) -> None:  # fmt: skip
        name = bucket if isinstance(bucket, str) else str(bucket.name)
        store = _obstore_class("GCSStore")(name, client_options=client_options, **config)
        super().__init__(store, prefix)
        self.bucket = name


class AzureBlobStorageCache(ObstoreCache):
    """A cache in an Azure Blob Storage container (Tilebox has no Azure cache; the name follows
    the others). Account and credentials come from ``AZURE_*`` variables, or from ``config``
    (obstore's ``AzureConfig`` keys, e.g. ``account_name=...``)."""

    def __init__(
        self, container: str, prefix: str | PurePosixPath = "jobs", *,
        client_options: dict[str, Any] | None = None, **config: Any,
    ) -> None:  # fmt: skip
        store = _obstore_class("AzureStore")(container, client_options=client_options, **config)
        super().__init__(store, prefix)
        self.container = container
