"""Archive segments (domain.segments): named by their digest, chained to the one before, and
carrying the log's hash chain on into the live log after the archived entries are trimmed."""

from __future__ import annotations

import msgspec
import pytest
import zstandard

from tests.servers import ClusterProcess, ServerProcess
from tilebox_core.domain import chain, segments
from tilebox_core.domain.chain import GENESIS, link
from tilebox_core.domain.events import ClusterCreated
from tilebox_core.domain.ids import new_id, utcnow
from tilebox_core.domain.segments import SegmentError, open_segment, seal, verify_segments
from tilebox_core.redis.eventstore import CONTROL, EventStore
from tilebox_core.redis.keys import Keys


def entries(n: int, start: str = GENESIS, first: int = 1) -> list[tuple[str, list[bytes]]]:
    rows, prev = [], start
    for i in range(first, first + n):
        body = f"event {i}".encode()
        prev = link(prev, b"e", body)
        rows.append((f"{i}-0", [b"e", body, b"h", prev.encode()]))
    return rows


def archive(rows: list[tuple[str, list[bytes]]], size: int) -> list[tuple[str, bytes]]:
    """``rows`` sealed into segments of ``size`` entries, each naming the one before."""
    stored: list[tuple[str, bytes]] = []
    previous: str | None = None
    start: str | None = None
    for at in range(0, len(rows), size):
        name, data = seal("control", rows[at : at + size], previous, start)
        stored.append((name, data))
        previous, start = name, open_segment(name, data).chain_end
    return stored


def test_an_untouched_archive_verifies_and_ends_where_its_log_does() -> None:
    rows = entries(10)
    stored = archive(rows, 4)
    check = verify_segments(stored)
    assert check.problem is None and (check.segments, check.entries) == (3, 10)
    assert check.chain_end == rows[-1][1][3].decode()
    segment = open_segment(*stored[1])
    assert (segment.first, segment.last, segment.previous) == ("5-0", "8-0", stored[0][0])


def test_an_edited_byte_in_a_segment_is_found() -> None:
    stored = archive(entries(10), 4)
    name, data = stored[1]
    edited = data[:20] + bytes([data[20] ^ 1]) + data[21:]
    check = verify_segments([stored[0], (name, edited), stored[2]])
    assert check.problem is not None and f"segment {name} holds bytes" in check.problem
    assert check.segments == 1


def test_a_replaced_segment_is_found() -> None:
    rows = entries(10)
    stored = archive(rows, 4)
    # the same entries with an event changed and every hash after it recomputed: a consistent
    # segment on its own, named by its own digest, but not the one its successor names
    start = open_segment(*stored[0]).chain_end
    assert start is not None
    forged, prev = [], start
    for position, fields in rows[4:8]:
        body = b"forged" if position == "5-0" else fields[1]
        prev = link(prev, b"e", body)
        forged.append((position, [b"e", body, b"h", prev.encode()]))
    replacement = seal("control", forged, stored[0][0], start)
    check = verify_segments([stored[0], replacement, stored[2]])
    assert (
        check.problem is not None
        and f"follows {stored[1][0]}, not {replacement[0]}" in check.problem
    )
    assert check.segments == 2  # the replacement itself is consistent
    # and a segment removed from the middle
    check = verify_segments([stored[0], stored[2]])
    assert check.problem is not None and "follows" in check.problem


def test_a_break_is_not_sealed() -> None:
    rows = entries(5)
    rows[2][1][1] = b"edited"
    with pytest.raises(SegmentError, match="breaks at 3-0"):
        seal("control", rows, None, None)


def test_unreadable_bytes_under_their_own_digest_are_refused() -> None:
    junk = zstandard.ZstdCompressor().compress(msgspec.msgpack.encode({"not": "a segment"}))
    with pytest.raises(SegmentError, match="not a readable segment"):
        open_segment(segments.digest(junk), junk)


@pytest.mark.cluster
def test_the_live_log_carries_on_from_the_archive_after_a_trim(
    server: ServerProcess | ClusterProcess, team: str
) -> None:
    with server.redis_client() as client:
        store = EventStore(client, Keys("tilebox", team))
        for i in range(12):
            event = ClusterCreated(
                id=new_id(), at=utcnow(), actor="user:t", team=team, slug=f"c{i}", name="c"
            )
            store.append(CONTROL, [event])
        stream = store.keys.log(CONTROL)
        live = [(p, f) for p, f in store._xrange(stream, "0-0", "+", 100)]
        stored = archive(live[:8], 5)
        check = verify_segments(stored)
        assert check.problem is None
        client.xtrim(stream, minid=live[8][0], approximate=False)  # archived: trimmed
        assert client.xlen(stream) == 4
        _, result = store.verify_stream(stream, start=check.chain_end)
        assert result.ok and result.entries == 4
        _, alone = store.verify_stream(stream)  # without the archive it starts mid-chain
        assert alone.broken is not None and alone.broken.kind == chain.BreakKind.MISMATCH
