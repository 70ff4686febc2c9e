"""Leaner live rows (issue 14): task-plane events are compact in the task logs and a finished
task's hash is rewritten compact, and every reader still reads them; entries written before, in
map form, still decode. The byte bound is measured on the real servers (memory figures repeat,
unlike times)."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.tasks_fixture import Leaf, Root, Step
from tilebox_core import Client, ExecutionContext, Task
from tilebox_core.domain.events import (
    CLAIM_WITH_RESULT,
    TASK_EVENTS,
    WIRE_FIELDS,
    WIRE_TAGS,
    Codec,
    Event,
    JobCancelled,
    JobSubmitted,
    TaskClaimed,
    TaskCompleted,
    TaskFailed,
    TaskSkipped,
    TaskSubmitted,
    UnknownEvent,
)
from tilebox_core.redis.taskstore import TASKS

ID_FIELDS = {"id", "job_id", "task_id", "parent_id", "release_id"}
ID_LISTS = {"root_task_ids", "depends_on", "subtask_ids", "task_ids", "job_ids"}
BASE = {"id", "at", "actor", "team"}

# --- the codec (pure) ------------------------------------------------------------------------------

# Ids as the system makes them (canonical UUID text), and any other text, which stays text: an
# uppercase UUID, one without hyphens, one hyphenated elsewhere, arbitrary strings.
ids = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: u.hex),
    st.uuids().map(
        lambda u: "-".join((u.hex[:7], u.hex[7:11], u.hex[11:15], u.hex[15:19], u.hex[19:]))
    ),
    st.text(max_size=40),
)
times = st.datetimes(
    min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2300, 1, 1), timezones=st.just(dt.UTC)
)
texts = st.text(max_size=30)


def field_strategy(name: str, kind: Any) -> st.SearchStrategy[Any]:
    if name in ID_LISTS:
        return st.lists(ids, max_size=4)
    if name in ID_FIELDS:
        return st.none() | ids if kind == (str | None) else ids
    if kind is bool:
        return st.booleans()
    if kind is int:
        return st.integers(min_value=-(2**62), max_value=2**63 - 1)
    if kind is float:
        return st.floats(allow_nan=False)
    if kind == dict[str, list[int]]:
        return st.dictionaries(
            texts, st.lists(st.integers(-(2**40), 2**40), max_size=2), max_size=3
        )
    if kind == (str | None):
        return st.none() | texts
    assert kind is str, (name, kind)
    return texts


def events_of(cls: type[Event]) -> st.SearchStrategy[Event]:
    fields = {
        f.name: field_strategy(f.name, f.type)
        for f in msgspec.structs.fields(cls)
        if f.name not in BASE
    }
    return st.builds(cls, id=ids, at=times, actor=texts, team=texts, **fields)


any_task_event = st.one_of(*(events_of(cls) for cls in TASK_EVENTS))


def entry(kind: bytes, body: bytes, actor: str) -> list[bytes]:
    """A raw log entry as the task scripts write it (its hash is not checked here)."""
    return [kind, body, b"a", actor.encode(), b"h", b"0" * 40]


def batch(*items: bytes) -> bytes:
    assert len(items) < 16
    return bytes([0x90 + len(items)]) + b"".join(items)


def test_the_wire_tags_and_layouts_never_change() -> None:
    # Stored task logs and archive segments are read by these for ever: a tag or a field's
    # position changed would misread every entry written before. New ones are appended.
    assert {cls.__name__: tag for cls, tag in WIRE_TAGS.items()} == {
        "JobSubmitted": 1, "TaskSubmitted": 2, "TaskClaimed": 3, "TaskCompleted": 4,
        "TaskFailed": 5, "TaskLeaseExpired": 6, "TaskReleased": 7, "JobRetried": 8,
        "JobCancelled": 9, "TaskSkipped": 10, "JobsDeleted": 12,
    }  # fmt: skip
    assert CLAIM_WITH_RESULT == 11
    assert WIRE_FIELDS[TaskCompleted][:4] == ("job_id", "task_id", "runner_id", "compute_seconds")
    assert WIRE_FIELDS[TaskSubmitted][:6] == (
        "job_id", "task_id", "name", "version", "cluster", "input"
    )  # fmt: skip
    assert set(WIRE_TAGS) == set(TASK_EVENTS)
    # and the bytes of one event, for good measure
    claimed = TaskClaimed(
        id="01a23c63-3018-719a-aacc-03b65f47814c", at=dt.datetime(2026, 1, 2, 3, 4, 5, 6, dt.UTC),
        actor="user:a", team="t", job_id="01a23c63-3019-74b6-95d3-95ab50af4341",
        task_id="01a23c63-3018-719a-aacc-03b74d5baa65", runner_id="r-1",
    )  # fmt: skip
    golden = bytes.fromhex(  # [3, id, at, nil (the recorded actor), job, task, runner]
        "9703c41001a23c633018719aaacc03b65f47814cd7ff00005dc0695735a5c0c41001a23c63301974b695d3"
        "95ab50af4341c41001a23c633018719aaacc03b74d5baa65a3722d31"
    )
    assert Codec(team="t", actor="user:a").compact(claimed) == golden
    assert Codec(team="t").decode_entry(entry(b"e", golden, "user:a")) == [claimed]


@settings(max_examples=300, deadline=None)
@given(any_task_event, st.booleans())
def test_every_task_event_reads_back_from_its_compact_form(event: Event, elided: bool) -> None:
    codec = Codec(team=event.team, actor=event.actor if elided else "someone else")
    data = codec.compact(event)
    assert data[0] & 0xF0 == 0x90 or data[0] in (0xDC, 0xDD)  # an array, not a map
    assert codec.decode(data) == event
    # in an entry, the actor it records is the events' actor, whatever they name
    recorded = msgspec.structs.replace(event, actor="user:recorded")
    assert codec.decode_entry(entry(b"e", data, "user:recorded")) == [recorded]
    assert codec.decode_entry(entry(b"b", batch(data, data), "user:recorded")) == [recorded] * 2
    assert len(data) <= len(Codec().encode(event))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([TaskCompleted, TaskFailed, TaskSkipped]).flatmap(events_of), times, ids)
def test_a_claim_recorded_with_its_result_reads_back_from_it(
    result: Any, at: dt.datetime, claim_id: str
) -> None:
    codec = Codec(team=result.team, actor=result.actor)
    claim = TaskClaimed(
        id=claim_id, at=at, actor=result.actor, team=result.team, job_id=result.job_id,
        task_id=result.task_id, runner_id=result.runner_id, release_id=result.release_id,
    )  # fmt: skip
    short = codec.compact_claim(claim, result)
    assert short[1] == CLAIM_WITH_RESULT and len(short) < len(codec.compact(claim))
    both = batch(short, codec.compact(result))
    assert codec.decode_many(both) == [claim, result]
    assert codec.decode_entry(entry(b"b", both, result.actor)) == [claim, result]
    # a claim of another runner than the result's is written whole
    other = msgspec.structs.replace(claim, runner_id=result.runner_id + "x")
    assert codec.compact_claim(other, result) == codec.compact(other)


def test_a_claim_whose_result_is_missing_or_unknown_reads_as_unknown() -> None:
    codec = Codec(team="t", actor="a")
    stamp = {"id": str(uuid.uuid4()), "at": dt.datetime.now(dt.UTC), "actor": "a", "team": "t"}
    result = TaskCompleted(**stamp, job_id="j", task_id="k", runner_id="r")
    short = codec.compact_claim(
        TaskClaimed(**stamp, job_id="j", task_id="k", runner_id="r"), result
    )
    future = msgspec.msgpack.encode([99, b"x" * 16, stamp["at"], None])
    events = codec.decode_many(batch(result_bytes := codec.compact(result), short, future))
    assert events[0] == result
    assert isinstance(events[1], UnknownEvent) and isinstance(events[2], UnknownEvent)
    assert events[2].type == "#99" and events[2].team == "t"
    assert codec.decode_many(batch(short, result_bytes))[0].type == "TaskClaimed"
    assert isinstance(codec.decode_entry(entry(b"e", short, "a"))[0], UnknownEvent)


@settings(max_examples=100, deadline=None)
@given(st.lists(any_task_event, min_size=1, max_size=5))
def test_entries_of_map_form_events_still_read(events: list[Event]) -> None:
    # as every version before wrote the task logs; a batch may mix both forms (a rolling upgrade)
    old, new = Codec(), Codec(team="the team", actor="user:x")
    for event in events:
        recorded = msgspec.structs.replace(event, actor="user:x")
        assert new.decode_entry(entry(b"e", old.encode(event), "user:x")) == [recorded]
        assert new.decode_entry([b"e", old.encode(event)]) == [event]  # from before actors
    mixed = [old.encode(e) if i % 2 else new.compact(e) for i, e in enumerate(events)]
    expected = [
        msgspec.structs.replace(e, actor="user:x", team=e.team if i % 2 else "the team")
        for i, e in enumerate(events)
    ]
    assert new.decode_entry(entry(b"b", batch(*mixed), "user:x")) == expected


# --- on the servers ----------------------------------------------------------------------------------


class Noop(Task):
    i: int

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "test.Noop", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        pass


class Fan(Task):
    n: int

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "test.Fan", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        context.submit_subtasks([Noop(i) for i in range(self.n)])


class Odd(Task):
    """A name of any kind: quotes, a backslash, a newline (its spec's JSON escapes them)."""

    @staticmethod
    def identifier() -> tuple[str, str]:
        return 'odd "name" \\ with\na newline', "v2.3"

    def execute(self, context: ExecutionContext) -> None:
        pass


def run(client: Client, tmp_path: Path) -> None:
    client.runner(tasks=[Root, Step, Leaf, Noop, Fan, Odd], cache_root=tmp_path).run_all()


def row_bytes(client: Client, tasks: int) -> tuple[float, set[bytes]]:
    """MEMORY USAGE of the team's task hashes and task log per task, and the encodings of the
    task hashes."""
    redis = client.redis
    shard = client.tasks.shards[0]
    total, encodings = int(redis.memory_usage(shard.log(TASKS), samples=0) or 0), set()
    for key in redis.scan_iter(match=shard.task("*"), count=1000):
        total += int(redis.memory_usage(key, samples=0) or 0)
        encodings.add(redis.object("encoding", key))
    return total / tasks, encodings


@pytest.mark.parametrize("shape", ["single-task jobs", "fan-out"])
def test_a_finished_no_op_task_keeps_at_most_600_bytes_in_redis(
    client: Client, tmp_path: Path, shape: str
) -> None:
    # Issue 14's target for the live window: its task hash and its share of the task log. On
    # default settings: hash-max-listpack-value 64 makes one long value cost a hash a table.
    n = 2000
    if shape == "fan-out":
        client.jobs().submit("fan-out", Fan(n))
        n += 1
    else:
        client.jobs().submit_many(("single", Noop(i)) for i in range(n))
    run(client, tmp_path)
    per_task, encodings = row_bytes(client, n)
    assert encodings == {b"listpack"}
    assert per_task <= 600, f"{per_task:.0f} B per finished task"


def test_finished_tasks_keep_what_their_readers_read(client: Client, tmp_path: Path) -> None:
    job = client.jobs().submit("tree", Root(1), max_retries=2)
    run(client, tmp_path)
    done = client.jobs().find(job.id, with_dependencies=True)
    assert done.state == "completed" and done.tasks_by_state == {"computed": 6}
    root = next(t for t in done.tasks if t.name == "test.Root")
    steps = [t for t in done.tasks if t.name == "test.Step"]
    leaves = [t for t in done.tasks if t.name == "test.Leaf"]
    assert len(steps) == 3 and len(leaves) == 2
    assert all(t.parent_id == root.id for t in steps) and root.parent_id is None
    assert {t.parent_id for t in leaves} == {steps[0].id}
    assert steps[1].depends_on == [steps[0].id]
    assert sorted(steps[2].depends_on) == sorted([steps[0].id, steps[1].id])
    assert all(t.version == "v1.0" and t.cluster == "default" for t in done.tasks)
    assert all(t.runner_id and t.compute_seconds >= 0 for t in done.tasks)
    assert done.progress[0].done == done.progress[0].total == 3
    # a finished hash holds no input, lane entry id, dependency count or plain chain
    shard = client.tasks.shard(job.id)
    leaf = {k.decode(): v for k, v in client.redis.hgetall(shard.task(leaves[0].id)).items()}
    assert set(leaf) == {"state", "spec", "finished_ms", "parent", "runner"} | (
        {"compute_ms"} & set(leaf)
    )
    assert leaf["spec"] == b"v1.0\ndefault\ntest.Leaf"
    assert "chain" in {k.decode() for k in client.redis.hkeys(shard.task(steps[0].id))}
    rows = client.tasks.tasks([root.id], ["id", "job", "lane", "max_retries", "input"], job.id)
    assert rows == [{"id": root.id, "job": job.id, "max_retries": "2", "input": "",
                     "lane": client.tasks.lane("default", "test.Root", "v1.0", job.id)}]  # fmt: skip
    # and the history reads and verifies
    events = [s.event for s in client.tasks.replay()]
    assert not [e for e in events if isinstance(e, UnknownEvent)]
    claims = [e for e in events if isinstance(e, TaskClaimed)]
    assert sorted(c.task_id for c in claims) == sorted(t.id for t in done.tasks)
    assert all(c.team == client.team and c.actor for c in claims)
    assert isinstance(events[0], JobSubmitted) and events[0].team == client.team
    assert client.events().verify().ok


def test_a_task_log_written_in_map_form_still_reads(client: Client, tmp_path: Path) -> None:
    # entries of a version before compact events, then new ones, in one log
    stamp = {"at": dt.datetime.now(dt.UTC), "actor": "user:old", "team": client.team}
    old = [
        JobSubmitted(**stamp, id=str(uuid.uuid4()), job_id="j-old", name="old", cluster="default",
                     root_task_ids=["t-old"]),
        TaskSubmitted(**stamp, id=str(uuid.uuid4()), job_id="j-old", task_id="t-old",
                      name="n", version="v1.0", cluster="default", input="{}"),
        JobCancelled(**stamp, id=str(uuid.uuid4()), job_id="j-old"),
    ]  # fmt: skip
    log = client.tasks.shards[0].log(TASKS)
    client.redis.xadd(log, {"e": Codec().encode(old[0])})
    client.redis.xadd(log, {"b": batch(*(Codec().encode(e) for e in old[1:])), "a": "user:old"})
    job = client.jobs().submit("new", Leaf("x"))
    run(client, tmp_path)
    events = [s.event for s in client.tasks.replay()]
    assert events[:3] == old
    assert [type(e) for e in events[3:]] == [JobSubmitted, TaskSubmitted, TaskClaimed,
                                             TaskCompleted]  # fmt: skip
    assert all(e.job_id == job.id for e in events[3:])  # type: ignore[attr-defined]


def test_any_name_and_the_retry_policy_are_kept_on_a_finished_task(
    client: Client, tmp_path: Path
) -> None:
    odd, leaf = client.jobs().submit_many([("odd", Odd()), ("leaf", Leaf("b"))], max_retries=3)
    run(client, tmp_path)
    for job, name, version in ((odd, Odd.identifier()[0], "v2.3"), (leaf, "test.Leaf", "v1.0")):
        task = client.jobs().find(job.id).tasks[0]
        assert (task.name, task.version, task.state, task.cluster) == (
            name, version, "computed", "default"
        )  # fmt: skip
        key = client.tasks.shard(job.id).task(task.id)
        assert client.redis.object("encoding", key) == b"listpack"
        assert client.tasks.tasks([task.id], ["max_retries"], job.id) == [{"max_retries": "3"}]
