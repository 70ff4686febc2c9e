"""Task inputs with protobuf message fields serialise as Tilebox serialises a task's fields: a JSON
object, each message the base64 text of its binary encoding; read back into the field's type,
also inside lists, dicts and optional fields, and through a real server and runner."""

from __future__ import annotations

import base64
import json

import msgspec
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from tilebox_core import Client, ExecutionContext, InMemoryCache, JobState, Task
from tilebox_core.domain.events import TaskFailed
from tilebox_core.task import decode_input, encode_input, input_schema


class Window(msgspec.Struct):
    start: Timestamp
    length: Duration


class ProcessScene(Task):
    scene_id: str
    acquired: Timestamp
    window: Window
    extras: list[Timestamp]
    metadata: dict[str, Struct]
    previous: Timestamp | None = None

    @staticmethod
    def identifier() -> tuple[str, str]:
        return "test.ProcessScene", "v1.0"

    def execute(self, context: ExecutionContext) -> None:
        summary = {
            "acquired": self.acquired.ToJsonString(),
            "window": [self.window.start.seconds, self.window.length.seconds],
            "extras": [t.seconds for t in self.extras],
            "metadata": {k: dict(v) for k, v in self.metadata.items()},
            "previous": self.previous.seconds if self.previous is not None else None,
        }
        context.job_cache["summary"] = json.dumps(summary).encode()


def b64(message: object) -> str:
    return base64.b64encode(message.SerializeToString()).decode("ascii")  # type: ignore[attr-defined]


def scene() -> ProcessScene:
    acquired = Timestamp(seconds=1_755_513_000, nanos=5)
    meta = Struct()
    meta.update({"cloud_cover": 0.25, "tile": "32TPT"})
    return ProcessScene(
        "S2A_20260818_32TPT", acquired, Window(Timestamp(seconds=60), Duration(seconds=3600)),
        [Timestamp(seconds=1), Timestamp(seconds=2)], {"s2": meta},
    )  # fmt: skip


def test_messages_serialise_as_tilebox_does() -> None:
    task = scene()
    # What Tilebox's serialize_task writes for a task of several fields (_serialize_as_dict:
    # messages base64-encoded, nested dataclasses as objects, lists and dicts element-wise).
    tilebox = {
        "scene_id": "S2A_20260818_32TPT",
        "acquired": b64(task.acquired),
        "window": {"start": b64(task.window.start), "length": b64(task.window.length)},
        "extras": [b64(t) for t in task.extras],
        "metadata": {"s2": b64(task.metadata["s2"])},
        "previous": None,
    }
    assert json.loads(encode_input(task)) == tilebox
    assert decode_input(json.dumps(tilebox), ProcessScene) == task
    again = decode_input(encode_input(task), ProcessScene)
    assert again.acquired.nanos == 5 and isinstance(again.window.length, Duration)


def test_a_message_field_has_a_schema() -> None:
    schema = input_schema(ProcessScene)
    fields = schema["$defs"]["ProcessScene"]["properties"]
    assert fields["acquired"] == {
        "type": "string",
        "contentEncoding": "base64",
        "description": "protobuf message google.protobuf.Timestamp, binary, base64-encoded",
    }
    assert fields["extras"]["items"]["contentEncoding"] == "base64"


@pytest.mark.parametrize(
    ("acquired", "problem"),
    [("not base64!", "not the base64 text of a Timestamp message"),
     (base64.b64encode(b"\xff\xff\xff").decode(), "not a Timestamp message"),
     (42, "expected the base64 text of a Timestamp message, got 42")],
)  # fmt: skip
def test_an_input_that_is_no_message_is_refused(acquired: object, problem: str) -> None:
    data = json.loads(encode_input(scene()))
    data["acquired"] = acquired
    with pytest.raises(msgspec.ValidationError, match=problem) as caught:
        decode_input(json.dumps(data), ProcessScene)
    assert "$.acquired" in str(caught.value)


def test_a_job_with_message_inputs_runs(client: Client) -> None:
    cache = InMemoryCache()
    task = scene()
    task.previous = Timestamp(seconds=7)
    job = client.jobs().submit("proto", task)
    # A client without the task's code submits the same input by name, as Tilebox would send it.
    by_name = client.jobs().submit_by_name(
        "proto-by-name", "test.ProcessScene", "v1.0", encode_input(task)
    )
    bad = json.loads(encode_input(task))
    bad["window"]["length"] = "%%%"
    broken = client.jobs().submit_by_name("broken", "test.ProcessScene", "v1.0", json.dumps(bad))
    client.runner(tasks=[ProcessScene], cache=cache).run_all()
    expected = {
        "acquired": "2025-08-18T10:30:00.000000005Z",
        "window": [60, 3600],
        "extras": [1, 2],
        "metadata": {"s2": {"cloud_cover": 0.25, "tile": "32TPT"}},
        "previous": 7,
    }
    for submitted in (job, by_name):
        assert client.jobs().find(submitted).state is JobState.COMPLETED
        assert json.loads(cache.group(submitted.id)["summary"]) == expected
    assert client.jobs().find(broken).state is JobState.FAILED
    failure = next(
        s.event for s in client.tasks.replay()
        if isinstance(s.event, TaskFailed) and s.event.job_id == broken.id
    )  # fmt: skip
    assert failure.reason == "input"
    assert "not the base64 text of a Duration message" in failure.error
    assert "$.window.length" in failure.error


def test_an_unknown_field_type_is_one_clear_error() -> None:
    class Opaque:
        pass

    class Holds(Task):
        thing: object

        def execute(self, context: ExecutionContext) -> None: ...

    with pytest.raises(
        NotImplementedError, match="cannot serialise an Opaque value in a task input"
    ):
        encode_input(Holds(Opaque()))
