"""The archive of the event logs (issue 14): immutable, digest-named, hash-chained segments
(domain.segments) in an object store; ``tilebox_core.archiver`` moves a log's oldest entries
there before they are trimmed from Redis.

Where: ``Settings.archive_location``, a directory under ``TILEBOX_HOME`` by default, or
``TILEBOX_ARCHIVE_URL`` (file://, s3://, gs://, az://), through obstore, as the job caches are
(``tilebox_core.cache``); S3's endpoint and credentials come from the usual ``AWS_*`` variables
(``AWS_ENDPOINT_URL``, ``AWS_ALLOW_HTTP=true`` for a plain-HTTP server), GCS's and Azure's from
theirs. Segment objects are named as ``domain.archive`` says, so that a listing is the time index.

Readers (replay, ``events list``, ``deployments --as-of``, ``audit verify``) get the archive
through ``EventStore.archive``: an ``ObjectArchive``, which keeps the segments it read last in
memory (an LRU of their bytes, bounded) and each folder's listing, listed again only past its end.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

import obstore
from obstore.store import LocalStore, ObjectStore, from_url

from tilebox_core.domain.archive import NONE, SegmentName, order, parse_name
from tilebox_core.domain.errors import StoreUnavailable
from tilebox_core.domain.segments import Segment, open_segment

CACHE_BYTES = 32 * 1024 * 1024  # segments kept in memory per process (their stored size)


class ObjectArchive:
    """Segments in an object store at URL ``location``; ``store`` (obstore's) is opened when it
    is first used (a file:// directory is created then), or given."""

    def __init__(
        self, location: str, store: ObjectStore | None = None, cache_bytes: int = CACHE_BYTES
    ) -> None:
        self._store = store
        self.location = location
        self.cache_bytes = cache_bytes
        self._segments: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._cached = 0
        self._listings: dict[str, list[SegmentName]] = {}
        self._lock = threading.Lock()

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            location = self.location
            try:
                if location.startswith("file://"):
                    self._store = LocalStore(unquote(urlsplit(location).path), mkdir=True)
                else:
                    self._store = from_url(location)
            except Exception as exc:  # obstore's errors are its own; a bad URL or config
                raise StoreUnavailable(
                    f"cannot open the archive at {location}: {exc}; fix TILEBOX_ARCHIVE_URL"
                ) from exc
        return self._store

    # --- reading --------------------------------------------------------------------------------

    def listing(self, folder: str, through: str = NONE) -> list[SegmentName]:
        """The segments in ``folder``, oldest first, from the listing read last unless it ends
        before ``through``: then only the names after its last one are listed."""
        with self._lock:
            known = self._listings.get(folder)
        if known is not None and (not known or order(known[-1].last) < order(through)):
            known = known + self._list(folder, known[-1].path if known else None)
        elif known is None:
            known = self._list(folder, None)
        with self._lock:
            self._listings[folder] = known
        return known

    def fresh_listing(self, folder: str) -> list[SegmentName]:
        """Every segment in ``folder`` as the store lists it now (``audit verify``)."""
        found = self._list(folder, None)
        with self._lock:
            self._listings[folder] = found
        return found

    def _list(self, folder: str, after: str | None) -> list[SegmentName]:
        try:
            pages = obstore.list(self.store, prefix=folder + "/", offset=after)
            paths = sorted(str(meta["path"]) for page in pages for meta in page)
        except Exception as exc:
            raise self._unavailable("list", folder, exc) from exc
        return [name for name in map(parse_name, paths) if name is not None]

    def load(self, name: SegmentName) -> Segment:
        """The segment, from the store or (its bytes) from memory. The bytes are kept, not the
        decoded segment: decoding is quick next to a fetch, and millions of decoded entries
        kept alive would slow down every garbage collection of the process."""
        with self._lock:
            data = self._segments.get(name.path)
            if data is not None:
                self._segments.move_to_end(name.path)
        if data is None:
            data = self.get(name.path)
            if data is None:
                raise StoreUnavailable(
                    f"archive segment {name.path} is missing from {self.location}: it was "
                    "deleted (tilebox audit verify tells what else is)"
                )
            with self._lock:
                self._segments[name.path] = data
                self._cached += len(data)
                while self._cached > self.cache_bytes and len(self._segments) > 1:
                    _, dropped = self._segments.popitem(last=False)
                    self._cached -= len(dropped)
        return open_segment(name.digest, data)

    def get(self, path: str) -> bytes | None:
        """The object's bytes; None if there is none."""
        try:
            return bytes(obstore.get(self.store, path).bytes())
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self._unavailable("read", path, exc) from exc

    def stored(self, folder: str) -> Iterator[tuple[SegmentName, bytes | None]]:
        """Each segment of ``folder`` listed now, with its bytes (None: gone since listed)."""
        for name in self.fresh_listing(folder):
            yield name, self.get(name.path)

    # --- writing --------------------------------------------------------------------------------

    def put(self, path: str, data: bytes) -> None:
        """Store ``data`` under ``path``. Idempotent: a segment put again has the same bytes."""
        try:
            obstore.put(self.store, path, data)
        except Exception as exc:
            raise self._unavailable("write", path, exc) from exc

    def _unavailable(self, verb: str, path: str, exc: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"cannot {verb} {path} in the archive at {self.location}: {exc}")
