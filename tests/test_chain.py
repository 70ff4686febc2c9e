"""The hash chain of the event logs (domain.chain) and ``audit verify``, on real servers: the
append scripts' hashes agree with the verifier's, an untouched history verifies, and each kind of
tampering with a stream is found at the right entry."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.conftest import Cli
from tests.tasks_fixture import Leaf, Top
from tilebox_core import Client
from tilebox_core.client import position_time
from tilebox_core.domain import chain
from tilebox_core.domain.chain import GENESIS, BreakKind, link
from tilebox_core.domain.events import ClusterCreated
from tilebox_core.domain.ids import new_id, utcnow
from tilebox_core.redis import eventstore
from tilebox_core.redis.eventstore import CONTROL
from tilebox_core.redis.keys import chain_head

pytestmark = pytest.mark.cluster

RawEntry = tuple[bytes, list[bytes]]


def raw(client: Client, stream: str) -> list[RawEntry]:
    """The stream's entries as the server holds them: (id, [field, value, ...])."""
    return [
        (position, [item for pair in fields.items() for item in pair])
        for position, fields in client.redis.xrange(stream)
    ]


def rewrite(
    client: Client, stream: str, change: Callable[[list[RawEntry]], list[RawEntry]]
) -> None:
    """Replace the stream by ``change`` of its entries, each re-added with its explicit id (what
    someone with write access to the server could do); its head is left as it was."""
    entries = change(raw(client, stream))
    client.redis.delete(stream)
    for position, fields in entries:
        client.redis.xadd(stream, dict(zip(fields[::2], fields[1::2])), id=position)


def with_field(fields: list[bytes], name: bytes, value: bytes | None) -> list[bytes]:
    """``fields`` with field ``name`` set to ``value`` (None: removed)."""
    out: list[bytes] = []
    for key, old in zip(fields[::2], fields[1::2]):
        if key == name:
            if value is not None:
                out += (key, value)
        else:
            out += (key, old)
    return out


def body(fields: list[bytes]) -> tuple[bytes, bytes]:
    for key, value in zip(fields[::2], fields[1::2]):
        if key in chain.KINDS:
            return key, value
    raise AssertionError(f"no event field in {fields!r}")


def hashed(fields: list[bytes]) -> bytes:
    return dict(zip(fields[::2], fields[1::2]))[b"h"]


def made(client: Client, slug: str) -> ClusterCreated:
    return ClusterCreated(
        id=new_id(), at=utcnow(), actor="user:t", team=client.team, slug=slug, name=slug
    )


def busy_team(client: Client, tmp_path: Path) -> None:
    """Control events, and task logs with single-event and batched entries on every shard."""
    for name in ("a", "b", "c"):
        client.clusters().create(name)
    client.workflows().create("w")
    client.jobs().submit_many([(f"j{i}", Leaf(str(i))) for i in range(12)])
    client.jobs().submit("wide", Top(40))
    client.runner(tasks=[Leaf, Top], cache_root=tmp_path / "cache").run_all()


def control(client: Client) -> str:
    return client.store.keys.log(CONTROL)


def task_log(client: Client, entries: int = 5) -> str:
    """The longest task log (on a cluster, of the shard with the most entries), with single jobs
    submitted until it has ``entries``."""
    while True:
        stream = max(client.tasks.log_streams(), key=lambda s: int(client.redis.xlen(s)))
        if int(client.redis.xlen(stream)) >= entries:
            return stream
        client.jobs().submit("more", Leaf("more"))


def broken(client: Client, stream: str) -> chain.Break:
    audit = client.events().verify()
    found = {s.stream: s.result.broken for s in audit.streams}
    assert not audit.ok and [s.stream for s in audit.broken] == [stream], audit
    result = found[stream]
    assert result is not None
    return result


# --- the verifier alone ---------------------------------------------------------------------------


def chained(bodies: list[bytes], start: str = GENESIS) -> tuple[list[RawEntry], str]:
    entries, prev = [], start
    for i, value in enumerate(bodies):
        prev = link(prev, b"e", value)
        entries.append((f"{i + 1}-0".encode(), [b"e", value, b"h", prev.encode()]))
    return entries, prev


def test_segments_carry_the_chain_on_from_the_hash_before() -> None:
    # how archive segments will be verified: each from the hash its predecessor ended with
    entries, head = chained([f"event {i}".encode() for i in range(10)])
    whole = chain.verify(entries, None, head)
    first = chain.verify(entries[:4], None, check_head=False)
    rest = chain.verify(entries[4:], first.last, head)
    assert whole.ok and first.ok and rest.ok and rest.last == whole.last == head
    assert (rest.entries, rest.start) == (6, "5-0")
    wrong = chain.verify(entries[4:], GENESIS, head)  # a segment taken up from the wrong hash
    assert wrong.broken is not None and (wrong.broken.kind, wrong.broken.number) == (
        BreakKind.MISMATCH, 1,
    )  # fmt: skip
    # from a start hash, every entry must be chained
    unhashed = (b"11-0", [b"e", b"x"])
    late = chain.verify([*entries[4:], unhashed], first.last, head)
    assert late.broken is not None and late.broken.kind == BreakKind.UNCHAINED


def test_an_entry_in_any_field_order_verifies_and_batches_are_counted() -> None:
    batch = b"\x93" + b"abc"  # msgpack: an array of three
    prev = link(GENESIS, b"b", batch)
    big = b"\xdc\x01\x00" + b"x" * 256  # array 16 of 256
    last = link(prev, b"b", big)
    entries = [
        (b"1-0", [b"h", prev.encode(), b"b", batch]),
        (b"2-0", [b"b", big, b"h", last.encode()]),
    ]
    result = chain.verify(entries, None, last)
    assert result.ok and result.events == 3 + 256
    assert chain.events_in(b"b", b"\xdd\x00\x01\x00\x00") == 65536
    assert chain.events_in(b"b", b"\xc1broken") == 1


# --- the scripts and the verifier agree ---------------------------------------------------------


def test_every_entry_links_to_the_one_before_as_chain_defines(
    client: Client, tmp_path: Path
) -> None:
    busy_team(client, tmp_path)
    kinds: set[bytes] = set()
    for stream in [control(client), *client.tasks.log_streams()]:
        prev = GENESIS
        for _, fields in raw(client, stream):
            kind, value = body(fields)
            kinds.add(kind)
            assert hashed(fields).decode() == link(prev, kind, value)
            prev = link(prev, kind, value)
        head = client.redis.get(chain_head(stream))
        assert (head.decode() if head else GENESIS) == prev
    assert kinds == {b"e", b"b"}  # single events and batches were both checked


@pytest.mark.parametrize(
    "payload",
    [b"", b"\n", b"\x00\xff\n\ne\n", bytes(range(256)) * 40, "événement".encode()],
    ids=["empty", "newline", "binary", "long", "utf8"],
)
def test_the_append_script_hashes_any_bytes_as_link_does(client: Client, payload: bytes) -> None:
    # append.lua never decodes an event: any bytes go through it as they are.
    store = client.store
    args: list[Any] = ["", 2, store.dedup_window_ms, new_id(), payload, new_id(), payload + b"!"]
    keys = [control(client), store.keys.dedup(CONTROL), store.keys.deployments,
            store.keys.log_head(CONTROL), store.keys.dedup_previous(CONTROL)]  # fmt: skip
    store._append(keys=keys, args=args)
    first, second = raw(client, control(client))
    assert hashed(first[1]).decode() == link(GENESIS, b"e", payload)
    assert hashed(second[1]).decode() == link(link(GENESIS, b"e", payload), b"e", payload + b"!")
    assert client.events().verify().ok


# --- verify ---------------------------------------------------------------------------------------


def test_an_untouched_history_verifies_with_its_counts(client: Client, tmp_path: Path) -> None:
    assert client.events().verify().ok and client.events().verify().events == 0
    busy_team(client, tmp_path)
    audit = client.events().verify()
    assert audit.ok, audit.broken
    assert audit.events == sum(1 for _ in client.events().list())
    assert audit.entries == sum(int(client.redis.xlen(s.stream)) for s in audit.streams)
    assert audit.streams[0].log == CONTROL
    assert all(s.log.startswith("tasks") for s in audit.streams[1:])
    for s in audit.streams:
        assert s.anchor is None and s.result.unchained == 0
        assert s.result.start == (
            raw(client, s.stream)[0][0].decode() if s.result.entries else None
        )


def test_entries_from_before_the_chain_are_reported_not_broken(client: Client) -> None:
    store = client.store
    old = [store.codec.encode(made(client, f"old{i}")) for i in range(3)]
    for event in old:  # as a version without the chain appended them
        client.redis.xadd(control(client), {"e": event})
    batch = msgspec.msgpack.encode([msgspec.Raw(e) for e in old])
    client.redis.xadd(control(client), {"b": batch})
    client.clusters().create("new")
    audit = client.events().verify()
    assert audit.ok
    result = audit.streams[0].result
    first_chained = raw(client, control(client))[4][0].decode()
    assert (result.unchained, result.start, result.events) == (4, first_chained, 7)
    # but an unchained entry after the chain started is a rewrite
    client.redis.xadd(control(client), {"e": old[0]})
    found = broken(client, control(client))
    assert (found.kind, found.number) == (BreakKind.UNCHAINED, 6)


def edit_body(entries: list[RawEntry], at: int) -> list[RawEntry]:
    position, fields = entries[at]
    kind, value = body(fields)
    flipped = value[:-1] + bytes([value[-1] ^ 1])
    return [*entries[:at], (position, with_field(fields, kind, flipped)), *entries[at + 1 :]]


def order(position: bytes | str) -> tuple[int, int]:
    ms, seq = (position.decode() if isinstance(position, bytes) else position).split("-")
    return int(ms), int(seq)


def renumbered(entries: list[RawEntry]) -> list[RawEntry]:
    """``entries`` with ids that grow: one that is empty or not after the one before is given
    the id right after it."""
    out: list[RawEntry] = []
    for position, fields in entries:
        if out and (not position or order(position) <= order(out[-1][0])):
            ms, seq = order(out[-1][0])
            position = f"{ms}-{seq + 1}".encode()
        out.append((position, fields))
    return out


def swap(entries: list[RawEntry], at: int) -> list[RawEntry]:
    """Entries ``at`` and ``at + 1`` exchanged, each keeping its place's id (ids must grow)."""
    (p1, f1), (p2, f2) = entries[at], entries[at + 1]
    return [*entries[:at], (p1, f2), (p2, f1), *entries[at + 2 :]]


@pytest.mark.parametrize("log", ["control", "tasks"])
@pytest.mark.parametrize(
    "tamper",
    ["edited event", "edited hash", "removed hash", "deleted entry", "reordered", "inserted"],
)
def test_tampering_with_a_stream_is_found_at_its_entry(
    client: Client, tmp_path: Path, log: str, tamper: str
) -> None:
    busy_team(client, tmp_path)
    stream = control(client) if log == "control" else task_log(client)
    entries = raw(client, stream)
    assert len(entries) >= 4, "too few entries to tamper with the middle"
    at = 2  # the third entry
    expected_kind, expected_at = BreakKind.MISMATCH, at
    if tamper == "edited event":
        rewrite(client, stream, lambda e: edit_body(e, at))
    elif tamper == "edited hash":
        fields = with_field(entries[at][1], b"h", b"f" * 40)
        rewrite(client, stream, lambda e: [*e[:at], (e[at][0], fields), *e[at + 1 :]])
    elif tamper == "removed hash":
        fields = with_field(entries[at][1], b"h", None)
        rewrite(client, stream, lambda e: [*e[:at], (e[at][0], fields), *e[at + 1 :]])
        expected_kind = BreakKind.UNCHAINED
    elif tamper == "deleted entry":
        client.redis.xdel(stream, entries[at][0])  # the next entry then breaks, at the same place
    elif tamper == "reordered":
        rewrite(client, stream, lambda e: swap(e, at))
    else:  # an entry copied in, with the hash it had where it came from
        copied = entries[0][1]
        rewrite(client, stream, lambda e: renumbered([*e[:at], (b"", copied), *e[at:]]))
    found = broken(client, stream)
    assert found.kind == expected_kind
    assert found.number == expected_at + 1
    assert found.position == raw(client, stream)[expected_at][0].decode()


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> int:
    """Verification reads pages of 5 entries: a few entries make many pages."""
    monkeypatch.setattr(eventstore, "VERIFY_PAGE", 5)
    return 5


def test_pages_are_verified_as_one_chain(client: Client, small_pages: int) -> None:
    for i in range(4 * small_pages + 2):
        client.store.append(CONTROL, [made(client, f"c{i}")])
    audit = client.events().verify()
    assert audit.ok and audit.streams[0].result.entries == 4 * small_pages + 2
    at = 3 * small_pages + 1  # on the fourth page
    rewrite(client, control(client), lambda e: edit_body(e, at))
    found = broken(client, control(client))
    assert (found.number, found.position) == (at + 1, raw(client, control(client))[at][0].decode())
    # stopped at a break on the first page, the next page asked for: the connection is freed
    # (its reply dropped), and the client's next commands get their own replies
    rewrite(client, control(client), lambda e: edit_body(e, 0))
    for _ in range(3):
        assert broken(client, control(client)).number == 1
        assert client.store.last_position(CONTROL) == raw(client, control(client))[-1][0].decode()


@pytest.mark.parametrize("server", ["valkey"], indirect=True)
def test_a_connection_lost_while_verifying_reads_on(
    client: Client, small_pages: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(4 * small_pages):
        client.store.append(CONTROL, [made(client, f"c{i}")])
    stream = control(client)
    retried: list[str] = []
    paged = client.store._xrange
    monkeypatch.setattr(
        client.store, "_xrange", lambda s, after, *a: retried.append(after) or paged(s, after, *a)
    )
    entries = client.store._entries(stream, "0-0", "+")
    first = [next(entries) for _ in range(small_pages)]  # the second page is asked for
    client.redis.client_kill_filter(_type="normal", skipme=True)
    rest = list(entries)
    assert [e[0] for e in first + rest] == [e[0] for e in raw(client, stream)]
    assert retried  # the rest was read again, page by page, from where it was lost
    assert client.events().verify().ok


def test_deleted_last_entries_break_at_the_head(client: Client, tmp_path: Path) -> None:
    busy_team(client, tmp_path)
    stream = control(client)
    entries = raw(client, stream)
    client.redis.xdel(stream, entries[-1][0])
    found = broken(client, stream)
    assert (found.kind, found.position, found.number) == (
        BreakKind.HEAD, entries[-2][0].decode(), len(entries) - 1,
    )  # fmt: skip
    client.redis.delete(chain_head(stream))  # and a deleted head is a break too
    assert broken(client, stream).kind == BreakKind.HEAD


def test_since_takes_the_chain_up_from_the_entry_before(client: Client) -> None:
    def append(slug: str) -> str:
        return client.store.append(CONTROL, [made(client, slug)]).positions[0]

    before = [append(f"b{i}") for i in range(3)]
    boundary = append("boundary")
    deadline = time.monotonic() + 10
    while order(boundary)[0] == order(before[-1])[0]:  # --since is in ms: a later one
        assert time.monotonic() < deadline
        before.append(boundary)
        boundary = append("boundary")
    after = [boundary, append("a1"), append("a2")]
    since = position_time(boundary)
    rewrite(client, control(client), lambda e: edit_body(e, 1))  # before --since: not looked at
    audit = client.events().verify(since)
    assert audit.ok
    checked = audit.streams[0]
    assert checked.anchor == before[-1] and checked.result.entries == len(after)
    rewrite(client, control(client), lambda e: edit_body(e, len(before) + 1))
    found = client.events().verify(since).streams[0].result.broken
    assert found is not None and (found.position, found.number) == (after[1], 2)
    assert not client.events().verify().ok  # from the beginning, the first edit shows


# --- the command ---------------------------------------------------------------------------------


def test_audit_verify_prints_ok_or_the_first_break(
    client: Client, cli: Cli, tmp_path: Path
) -> None:
    busy_team(client, tmp_path)
    out = cli("audit", "verify").output
    assert out.startswith("OK") and f"{sum(1 for _ in client.events().list()):,} events" in out
    report = json.loads(cli("audit", "verify", "--json").output)
    assert report["ok"] is True and report["logs"][0]["log"] == "control"
    stream = task_log(client)
    rewrite(client, stream, lambda e: edit_body(e, 1))
    position = raw(client, stream)[1][0].decode()
    result = cli("audit", "verify", ok=False)
    assert result.exit_code == 1
    assert "BROKEN" in result.output and stream in result.output and position in result.output
    result = cli("audit", "verify", "--json", ok=False)
    assert result.exit_code == 1
    report = json.loads(result.output)
    (bad,) = [log for log in report["logs"] if log["broken"]]
    assert bad["stream"] == stream and bad["broken"]["position"] == position
    assert bad["broken"]["entry"] == 2 and bad["broken"]["kind"] == "mismatch"
