"""Tracing: a job is one trace exported by OTLP/HTTP to a real receiver, a span per execution."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.servers import ServerProcess
from tests.test_release_runner import Story
from tests.traced_tasks import TASKS, Flaky, Scene, Survey
from tests.waiting import wait_for
from tilebox_core import Client, InvalidInput, Settings
from tilebox_core.settings import Otlp
from tilebox_core.tracing import span_id


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    yield r
    r.close()


def traced_client(server: ServerProcess, team: str, receiver: OtlpReceiver) -> Client:
    settings = Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                                  "OTEL_EXPORTER_OTLP_HEADERS": "x-team=acme"})  # fmt: skip
    return Client(settings=settings.override(url=server.url, team=team))


def by_task(spans: list[ReceivedSpan]) -> dict[str, list[ReceivedSpan]]:
    found: dict[str, list[ReceivedSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start_ns):
        if "tilebox.task.id" in span.attributes:
            found.setdefault(span.attributes["tilebox.task.id"], []).append(span)
    return found


@pytest.mark.cluster
def test_a_job_is_one_trace_with_task_spans_under_their_parents(
    server: ServerProcess, team: str, receiver: OtlpReceiver
) -> None:
    with traced_client(server, team, receiver) as client:
        job = client.jobs().submit("survey", Survey(2))
        runner = client.runner(tasks=TASKS)
        runner.run_all()  # flushes the spans when it ends
        done = client.jobs().find(job.id)
    assert done.state == "completed"
    trace = uuid.UUID(job.id).hex
    # Survey, 2 Scenes, Flaky twice, Flaky's Scene, and Survey's own "plan" span
    spans = receiver.wait(trace, 7)
    assert len(spans) == 7
    tasks = {t.id: t for t in done.tasks}
    runs = by_task(spans)
    assert set(runs) == set(tasks)
    [root] = runs[next(t.id for t in done.tasks if t.name == "trace.Survey")]
    assert root.parent_span_id == "" and root.name == "trace.Survey"
    assert root.span_id == f"{span_id(root.attributes['tilebox.task.id']):016x}"
    assert root.attributes == {
        "tilebox.job.id": job.id, "tilebox.task.id": root.attributes["tilebox.task.id"],
        "tilebox.task.identifier": "trace.Survey@v1.0", "tilebox.runner.id": runner.id,
        "tilebox.task.attempt": 1, "tilebox.task.outcome": "completed",
    }  # fmt: skip
    assert root.resource["service.name"] == "tilebox-runner"
    assert root.resource["tilebox.team"] == team
    [plan] = [s for s in spans if s.name == "plan"]
    assert plan.parent_span_id == root.span_id and plan.attributes == {"scenes": 2}
    flaky_id = next(t.id for t in done.tasks if t.name == "trace.Flaky")
    first, second = runs[flaky_id]
    assert first.parent_span_id == root.span_id
    assert (first.attributes["tilebox.task.attempt"], first.attributes["tilebox.task.outcome"],
            first.status, first.status_message) == (1, "retry", 2, "RuntimeError: first run fails")  # fmt: skip
    # the retry: an id of its own, under the first execution
    assert second.parent_span_id == first.span_id and second.span_id != first.span_id
    assert (second.attributes["tilebox.task.attempt"], second.status) == (2, 0)
    for task in done.tasks:
        if task.name == "trace.Scene":
            [scene] = runs[task.id]
            parent = first if task.parent_id == flaky_id else root
            assert scene.parent_span_id == parent.span_id
            assert scene.attributes["tilebox.task.outcome"] == "completed"
    assert {s.trace_id for s in spans} == {trace}
    assert len({s.span_id for s in spans}) == 7
    assert all(h.get("x-team") == "acme" for h in receiver.headers)


def test_subtasks_run_by_another_process_join_the_trace(
    server: ServerProcess, team: str, receiver: OtlpReceiver
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.url
    classes = ",".join(f"tests.traced_tasks:{c.__name__}" for c in (Scene, Flaky))
    other = subprocess.Popen(
        [sys.executable, "-m", "tests.runner_process", server.url, team, "default", classes],
        env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "ready"
        with traced_client(server, team, receiver) as client:
            job = client.jobs().submit("survey", Survey(3))
            with client.runner(tasks=[Survey]) as runner:  # the root only: the rest run there
                client.jobs().wait(job.id, timeout=60)
            done = client.jobs().find(job.id)
        assert done.state == "completed"
        trace = uuid.UUID(job.id).hex
        spans = receiver.wait(trace, 8)  # the other process exports within a second or so
        runs = by_task(spans)
        [root] = runs[next(t.id for t in done.tasks if t.name == "trace.Survey")]
        assert root.attributes["tilebox.runner.id"] == runner.id
        for task in done.tasks:
            if task.parent_id == root.attributes["tilebox.task.id"]:
                span = runs[task.id][0]
                assert span.parent_span_id == root.span_id
                assert span.attributes["tilebox.runner.id"] != runner.id  # run elsewhere
    finally:
        other.terminate()
        other.wait(30)
        if other.stdout is not None:
            other.stdout.close()


def test_nothing_of_opentelemetry_is_imported_when_tracing_is_off(
    server: ServerProcess, team: str
) -> None:
    """redis-py (8.x) imports parts of OpenTelemetry's API and metrics SDK itself where they are
    installed, as they are here: what is asserted is that running a traced task imports nothing
    more (no tracing SDK, no exporter, not our tracing module)."""
    script = textwrap.dedent(f"""
        import sys
        import redis  # what the driver imports on its own
        def otel():
            return {{m for m in sys.modules if m.startswith("opentelemetry")}}
        before = otel()
        from tilebox_core import Client
        from tilebox_core.logs import configure_logging
        from tests.traced_tasks import TASKS, Survey
        configure_logging("warning")
        with Client({server.url!r}, team={team!r}) as client:
            job = client.jobs().submit("survey", Survey(2))
            client.runner(tasks=TASKS).run_all()
            print(client.jobs().find(job.id).state)
        print(sorted(otel() - before))
        print("opentelemetry.sdk.trace" in sys.modules, "tilebox_core.execution.tracing" in sys.modules)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    # its own spans ran, as no-ops
    assert result.stdout.split("\n")[:3] == ["completed", "[]", "False False"]


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}, Otlp(endpoint="http://c:4318/v1/traces")),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
          "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://t/x", "OTEL_SERVICE_NAME": "scenes",
          "OTEL_EXPORTER_OTLP_HEADERS": "a=1,b=x%20y", "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "b=2",
          "OTEL_EXPORTER_OTLP_TIMEOUT": "2500"},
         Otlp(endpoint="https://t/x", headers={"a": "1", "b": "2"}, timeout=2.5,
              service_name="scenes")),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, None),
    ],
)  # fmt: skip
def test_tracing_settings_from_the_standard_variables(
    environ: dict[str, str], expected: Otlp | None
) -> None:
    settings = Settings.from_env(environ)
    assert settings.otlp == expected
    assert Settings.from_env(settings.environment()).otlp == expected  # handed to a child


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", "not an http:// or https:// URL"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "must be one of http/protobuf"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "token", "is not key=value"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon", "not a number of milliseconds"),
        ("OTEL_SDK_DISABLED", "yes", "must be true or false"),
    ],
)
def test_a_bad_tracing_variable_is_one_line(name: str, value: str, problem: str) -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", name: value}
    with pytest.raises(InvalidInput) as caught:
        Settings.from_env(environ)
    message = str(caught.value)
    assert message.startswith(f"{name}={value!r}: ") and problem in message
    assert message.endswith(f"fix or unset {name}") and "\n" not in message


@pytest.fixture
def story(private_server: ServerProcess, team: str, tmp_path: Path) -> Iterator[Story]:
    s = Story(private_server, team, tmp_path)
    yield s
    s.close()


def test_a_release_runner_traces_its_runtimes_tasks(story: Story, receiver: OtlpReceiver) -> None:
    story.env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.url
    story.env["OTEL_SERVICE_NAME"] = "scenes-runner"
    release = story.publish("traced")
    story.deploy(release)
    story.start_runner()
    job = story.client.jobs().submit_by_name("traced", "scenes.Fetch", "v1.0", '{"scene": "1"}')
    wait_for(lambda: story.state(job.id) == "completed")
    spans = receiver.wait(uuid.UUID(job.id).hex, 3)  # a runtime exports every second or so
    by_name = {s.name: s for s in spans}
    assert set(by_name) == {"scenes.Fetch", "scenes.Process", "scenes.Publish"}
    fetch = by_name["scenes.Fetch"]
    assert fetch.parent_span_id == ""
    assert by_name["scenes.Process"].parent_span_id == fetch.span_id
    assert by_name["scenes.Publish"].parent_span_id == fetch.span_id
    assert {s.attributes["tilebox.release.id"] for s in spans} == {release}
    assert {s.resource["service.name"] for s in spans} == {"scenes-runner"}
    assert all(s.end_ns >= s.start_ns > 0 for s in spans)
