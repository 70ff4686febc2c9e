"""Event-store contract suite: runs against every real backend (embedded Valkey, system Redis,
a Valkey Cluster)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import msgspec
import pytest
import redis

from tests.servers import ClusterProcess, ServerProcess
from tilebox_core.domain.errors import ConcurrencyError, StoreUnavailable
from tilebox_core.domain.events import ClusterCreated, UnknownEvent
from tilebox_core.domain.ids import new_id, utcnow
from tilebox_core.redis.eventstore import CONTROL, EventStore
from tilebox_core.redis.keys import Keys

pytestmark = pytest.mark.cluster


def made(team: str, slug: str) -> ClusterCreated:
    return ClusterCreated(id=new_id(), at=utcnow(), actor="user:t", team=team, slug=slug, name=slug)


@pytest.fixture
def store(server: ServerProcess | ClusterProcess, team: str) -> Iterator[EventStore]:
    with server.redis_client() as client:
        yield EventStore(client, Keys("tilebox", team))


def test_append_checks_the_expected_last_position(store: EventStore, team: str) -> None:
    assert store.last_position(CONTROL) == "0-0"
    first = store.append(CONTROL, [made(team, "a")], expected="0-0")
    assert not first.duplicate and store.last_position(CONTROL) == first.positions[0]
    with pytest.raises(ConcurrencyError, match=r"expected the log at 0-0, it has \S+ after that"):
        store.append(CONTROL, [made(team, "b")], expected="0-0")
    assert len(store.read(CONTROL)) == 1
    store.append(CONTROL, [made(team, "b")], expected=first.positions[0])
    assert [s.event.slug for s in store.replay(CONTROL)] == ["a", "b"]  # type: ignore[union-attr]


def test_a_batched_entry_counts_as_one_position(store: EventStore, team: str) -> None:
    # The task scripts write a call's events as one entry (field "b"): the writer that has read
    # it expects the position of that entry, however many events it held.
    batch = store.codec.encode(made(team, "a")) + store.codec.encode(made(team, "b"))
    entry = store.redis.xadd(store.keys.log(CONTROL), {"b": b"\x92" + batch}).decode()
    read = store.read(CONTROL)
    assert len(read) == 2 and read[-1].position == entry == store.last_position(CONTROL)
    store.append(CONTROL, [made(team, "c")], expected=read[-1].position)
    assert [s.event.slug for s in store.replay(CONTROL)] == ["a", "b", "c"]  # type: ignore[union-attr]


def test_reappending_the_same_batch_is_a_no_op(store: EventStore, team: str) -> None:
    batch = [made(team, "a"), made(team, "b")]
    first = store.append(CONTROL, batch, expected="0-0")
    again = store.append(CONTROL, batch, expected="0-0")  # a retry after a lost reply
    assert again.duplicate and again.positions == first.positions[:1]
    assert len(store.read(CONTROL)) == 2


def test_batches_are_remembered_for_a_window_then_forgotten(store: EventStore, team: str) -> None:
    current, previous = store.keys.dedup(CONTROL), store.keys.dedup_previous(CONTROL)

    def age() -> None:
        """The current generation a window old: as if the server's clock had moved on."""
        store.redis.hset(current, "~since", "0")

    a, b, c = ([made(team, slug)] for slug in "abc")
    store.append(CONTROL, a)
    assert store.append(CONTROL, a).duplicate  # a retry within the window
    age()
    store.append(CONTROL, b)  # starts a new generation; a's is the previous one
    assert store.redis.hexists(previous, a[0].id) and not store.redis.hexists(current, a[0].id)
    assert store.append(CONTROL, a).duplicate  # still remembered: at least a window
    age()
    store.append(CONTROL, c)  # a's generation is dropped: more than a window old
    assert not store.redis.hexists(previous, a[0].id)
    assert store.append(CONTROL, b).duplicate and store.append(CONTROL, c).duplicate
    assert not store.append(CONTROL, a).duplicate  # beyond the window it is a new append
    assert [s.event.slug for s in store.replay(CONTROL)] == ["a", "b", "c", "a"]  # type: ignore[union-attr]


def test_the_dedup_hash_stays_small_however_many_appends(
    server: ServerProcess | ClusterProcess, team: str
) -> None:
    with server.redis_client() as client:
        store = EventStore(client, Keys("tilebox", team), dedup_window_ms=0)  # a new one each time
        legacy = store.keys.dedup(CONTROL)
        store.redis.hset(legacy, mapping={new_id(): "1-0" for _ in range(100)})  # from before
        batches = [[made(team, f"c{i}")] for i in range(50)]
        for batch in batches:
            store.append(CONTROL, batch)
        # each hash holds one batch and when it started, whatever was appended before
        assert store.redis.hlen(legacy) == 2
        assert store.redis.hlen(store.keys.dedup_previous(CONTROL)) == 2
        assert store.append(CONTROL, batches[-1]).duplicate
        assert store.append(CONTROL, batches[-2]).duplicate  # in the previous generation


def test_batch_append_is_atomic_and_ordered(store: EventStore, team: str) -> None:
    batch = [made(team, f"c{i}") for i in range(500)]
    result = store.append(CONTROL, batch)
    assert len(result.positions) == 500
    replayed = list(store.replay(CONTROL))
    assert [s.event for s in replayed] == batch
    assert [s.position for s in replayed] == result.positions


def test_replay_from_any_position_and_until(store: EventStore, team: str) -> None:
    positions = [store.append(CONTROL, [made(team, f"c{i}")]).positions[0] for i in range(12)]
    after_five = [s.position for s in store.replay(CONTROL, after=positions[4])]
    assert after_five == positions[5:]
    upto = [s.position for s in store.replay(CONTROL, until=positions[3])]
    assert upto == positions[:4]


def test_replay_pages_through_long_logs(store: EventStore, team: str) -> None:
    for _ in range(3):
        store.append(CONTROL, [made(team, "x") for _ in range(4_000)])
    assert sum(1 for _ in store.replay(CONTROL)) == 12_000


def test_blocking_wait_sees_a_concurrent_append(store: EventStore, team: str) -> None:
    start = store.append(CONTROL, [made(team, "a")]).positions[0]
    appended = made(team, "b")
    timer = threading.Timer(0.2, lambda: store.append(CONTROL, [appended]))
    timer.start()
    try:
        got = store.wait(CONTROL, after=start, block_ms=5_000)
    finally:
        timer.join()
    assert [s.event for s in got] == [appended]
    assert store.wait(CONTROL, after=got[-1].position, block_ms=50) == []


def test_subscription_resumes_from_its_checkpoint(store: EventStore, team: str) -> None:
    for slug in "abc":
        store.append(CONTROL, [made(team, slug)])
    assert store.load_checkpoint("auditor") == "0-0"
    seen = store.read(CONTROL, after=store.load_checkpoint("auditor"), count=2)
    store.save_checkpoint("auditor", seen[-1].position)
    store.append(CONTROL, [made(team, "d")])
    # A restarted consumer continues after what it processed, not from "$" (which would miss "d").
    rest = store.read(CONTROL, after=store.load_checkpoint("auditor"))
    assert [s.event.slug for s in rest] == ["c", "d"]  # type: ignore[union-attr]


def test_every_key_of_a_team_shares_one_hash_tag(store: EventStore, team: str) -> None:
    store.append(CONTROL, [made(team, "a")], projection=[("HSET", "default/w", "r1")])
    store.save_checkpoint("x", "1-0")
    store.put_artifact("sha256:abc", b"data")
    keys = [k.decode() for k in store.redis.scan_iter(match=f"*{team}*")]
    assert len(keys) >= 4
    assert all(k.startswith(f"tilebox:{{{team}}}:") for k in keys)
    assert {k[k.index("{") + 1 : k.index("}")] for k in keys} == {team}


def test_unknown_event_types_are_read_not_fatal(store: EventStore, team: str) -> None:
    store.append(CONTROL, [made(team, "a")])
    future = {"type": "ClusterRenamed", "id": new_id(), "at": utcnow(), "actor": "x", "team": team}
    store.redis.xadd(store.keys.log(CONTROL), {"e": msgspec.msgpack.encode(future)})
    store.redis.xadd(store.keys.log(CONTROL), {"e": b"\xc1not msgpack"})
    events = [s.event for s in store.replay(CONTROL)]
    assert isinstance(events[1], UnknownEvent) and events[1].type == "ClusterRenamed"
    assert isinstance(events[2], UnknownEvent) and events[2].type == "<undecodable>"


def test_batched_entries_read_as_their_events_in_order(store: EventStore, team: str) -> None:
    # The task scripts append a call's events as one entry: a msgpack array in field "b".
    future = {"type": "ClusterRenamed", "id": new_id(), "at": utcnow(), "actor": "x", "team": team}
    batch = [store.codec.encode(made(team, "a")), msgspec.msgpack.encode(future),
             store.codec.encode(made(team, "b"))]  # fmt: skip
    log = store.keys.log(CONTROL)
    store.redis.xadd(log, {"b": b"\x93" + b"".join(batch)})  # 0x93: an array of three
    store.append(CONTROL, [made(team, "c")])
    for read in (list(store.replay(CONTROL)), store.read(CONTROL), store.wait(CONTROL, "0-0", 10)):
        assert [getattr(s.event, "slug", s.event.type) for s in read] == [
            "a",
            "ClusterRenamed",
            "b",
            "c",
        ]
        assert len({s.position for s in read[:3]}) == 1 and read[3].position > read[0].position
    store.redis.xadd(log, {"b": b"\xc1broken"})
    assert store.read(CONTROL)[-1].event.type == "<undecodable>"


def test_materialised_projection_changes_with_the_append(store: EventStore, team: str) -> None:
    store.append(CONTROL, [made(team, "a")], projection=[("HSET", "dev/scenes", "r1")])
    assert store.deployments() == {("dev", "scenes"): "r1"}
    with pytest.raises(ConcurrencyError):
        store.append(CONTROL, [made(team, "b")], "0-0", projection=[("HDEL", "dev/scenes", "")])
    assert store.deployments() == {("dev", "scenes"): "r1"}  # refused append changed nothing


def test_artifacts_are_content_addressed(store: EventStore) -> None:
    data = bytes(range(256)) * 5_000  # several chunks
    assert store.put_artifact("sha256:d1", data) is True
    assert store.put_artifact("sha256:d1", data) is False
    assert store.get_artifact("sha256:d1") == data
    assert store.redis.ttl(store.keys.artifact("sha256:d1")) == -1
    assert not list(store.redis.scan_iter(match="*:upload:*"))


def test_driver_errors_become_store_unavailable(private_server: ServerProcess, team: str) -> None:
    with redis.Redis.from_url(private_server.url, socket_connect_timeout=1) as client:
        store = EventStore(client, Keys("tilebox", team))
        store.append(CONTROL, [made(team, "a")])
        private_server.kill()
        with pytest.raises(StoreUnavailable):
            store.append(CONTROL, [made(team, "b")])
        with pytest.raises(StoreUnavailable):
            list(store.replay(CONTROL))
