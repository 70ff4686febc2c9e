"""Control-plane rules as plain tables (no I/O), and projection properties against a real server."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.servers import ServerProcess
from tilebox_core import Client
from tilebox_core.client import position_time
from tilebox_core.domain import control
from tilebox_core.domain.errors import Conflict, Incompatible, InvalidInput, NotFound, TileboxError
from tilebox_core.domain.events import ClusterCreated, Origin, ReleaseTask
from tilebox_core.domain.projection import ControlState, fold
from tilebox_core.redis.eventstore import CONTROL

T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


_counter = itertools.count()

pytestmark = pytest.mark.cluster


def origin() -> Origin:
    return Origin("acme", "user:ana", T0, lambda: f"id-{next(_counter)}")


def run(state: ControlState, events: list) -> ControlState:
    return fold(((f"{i + 1}-0", e) for i, e in enumerate(events)), state)


def schema(**fields: str) -> dict:
    return {
        "$ref": "#/$defs/T",
        "$defs": {
            "T": {
                "type": "object",
                "properties": {name: {"type": kind} for name, kind in fields.items()},
                "required": sorted(fields),
            }
        },
    }


def published(state: ControlState, workflow: str, digest: str, tasks=None) -> str:
    tasks = tasks or [ReleaseTask("acme.Fetch", "v1.0", schema(scene="string"))]
    release_id, events = control.publish_release(
        state, origin(), workflow=workflow, digest=digest, size=10, tasks=tasks,
        runner="m:runner", command=None, fingerprint=digest,
    )  # fmt: skip
    run(state, events)
    return release_id


@pytest.fixture
def state() -> ControlState:
    s = ControlState()
    run(s, control.create_cluster(s, origin(), "Dev"))
    run(s, control.create_cluster(s, origin(), "Prod EU", "prod-eu"))
    run(s, control.create_workflow(s, origin(), "Scenes"))
    run(s, control.create_workflow(s, origin(), "Other"))
    return s


def test_every_team_has_an_undeletable_default_cluster() -> None:
    s = ControlState()
    assert "default" in s.clusters
    with pytest.raises(Conflict, match="default cluster cannot be deleted"):
        control.delete_cluster(s, origin(), "default")


@pytest.mark.parametrize(
    ("name", "slug", "expected"),
    [("Dev", None, "dev"), ("Prod EU 1", None, "prod-eu-1"), ("Ünïcode Ç", None, "unicode-c"),
     ("x", "my-slug", "my-slug")],
)  # fmt: skip
def test_cluster_slugs_are_derived_or_validated(name: str, slug: str | None, expected: str) -> None:
    (event,) = control.create_cluster(ControlState(), origin(), name, slug)
    assert event.slug == expected  # type: ignore[attr-defined]


@pytest.mark.parametrize("slug", ["Bad Slug", "-x", "x-", "a" * 64, "UPPER", "a_b"])
def test_invalid_slugs_are_refused(slug: str) -> None:
    with pytest.raises(InvalidInput, match="invalid cluster slug"):
        control.create_cluster(ControlState(), origin(), "n", slug)


def test_duplicates_are_refused(state: ControlState) -> None:
    with pytest.raises(Conflict, match="cluster 'dev' already exists"):
        control.create_cluster(state, origin(), "Dev")
    with pytest.raises(Conflict, match="workflow 'scenes' already exists"):
        control.create_workflow(state, origin(), "scenes")


def test_publishing_identical_content_returns_the_existing_release(state: ControlState) -> None:
    first = published(state, "scenes", "sha256:aa")
    again, events = control.publish_release(
        state, origin(), workflow="scenes", digest="sha256:aa", size=10,
        tasks=[ReleaseTask("acme.Fetch", "v1.0", schema(scene="string"))], runner="m:runner",
        command=None, fingerprint="sha256:aa",
    )  # fmt: skip
    assert again == first and events == []


def test_publish_needs_a_known_workflow(state: ControlState) -> None:
    with pytest.raises(NotFound, match="unknown workflow 'nope'"):
        published(state, "nope", "sha256:aa")


def test_deploy_sets_one_active_release_per_workflow_and_cluster(state: ControlState) -> None:
    r1 = published(state, "scenes", "sha256:01")
    r2 = published(state, "scenes", "sha256:02")
    run(state, control.deploy(state, origin(), clusters=["dev", "prod-eu"], release_id=r1).events)
    plan = control.deploy(state, origin(), clusters=["dev"], latest_of="scenes")
    (event,) = plan.events
    assert event.release_id == r2 and event.requested == "latest"  # type: ignore[attr-defined]
    assert event.previous_release_id == r1  # type: ignore[attr-defined]
    run(state, plan.events)
    assert state.mapping() == {"dev": {"scenes": r2}, "prod-eu": {"scenes": r1}}
    # Deploying what is already active changes nothing.
    assert control.deploy(state, origin(), clusters=["dev"], release_id=r2).events == []


def test_deploy_without_clusters_uses_the_default_cluster(state: ControlState) -> None:
    r1 = published(state, "scenes", "sha256:01")
    run(state, control.deploy(state, origin(), clusters=[], release_id=r1).events)
    assert state.mapping() == {"default": {"scenes": r1}}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"release_id": "nope"}, NotFound, "unknown release 'nope'"),
        ({"release_id": "R", "latest_of": "scenes"}, InvalidInput, "exactly one of"),
        ({}, InvalidInput, "exactly one of"),
        ({"latest_of": "other"}, NotFound, "has no releases"),
        ({"release_id": "R", "clusters": ["mars"]}, NotFound, "unknown cluster 'mars'"),
        ({"release_id": "R", "workflow": "other"}, Conflict, "belongs to workflow 'scenes'"),
    ],
)
def test_deploy_refusals(state: ControlState, kwargs: dict, error: type, match: str) -> None:
    release = published(state, "scenes", "sha256:01")
    if kwargs.get("release_id") == "R":
        kwargs = {**kwargs, "release_id": release}
    kwargs.setdefault("clusters", ["dev"])
    with pytest.raises(error, match=match):
        control.deploy(state, origin(), **kwargs)


def test_incompatible_schema_is_refused_unless_forced(state: ControlState) -> None:
    r1 = published(state, "scenes", "sha256:01")
    run(state, control.deploy(state, origin(), clusters=["dev"], release_id=r1).events)
    breaking = [ReleaseTask("acme.Fetch", "v1.1", schema(scene="integer"))]
    with pytest.raises(Incompatible, match=r"bump the task's major version|Bump the task's major"):
        published(state, "scenes", "sha256:02", breaking)
    _, events = control.publish_release(
        state, origin(), workflow="scenes", digest="sha256:02", size=1, tasks=breaking,
        runner="m:r", command=None, fingerprint="f2", force=True,
    )  # fmt: skip
    assert events[0].forced and events[0].incompatibilities  # type: ignore[attr-defined]


def test_undeploy_removes_only_the_mapping(state: ControlState) -> None:
    r1 = published(state, "scenes", "sha256:01")
    run(state, control.deploy(state, origin(), clusters=["dev"], release_id=r1).events)
    run(state, control.undeploy(state, origin(), workflow="scenes", clusters=["dev"]).events)
    assert state.mapping() == {} and r1 in state.releases and "scenes" in state.workflows
    again = control.undeploy(state, origin(), workflow="scenes", clusters=["dev"])
    assert again.events == [] and not again.changes[0].changed  # nothing to change


def test_deleting_a_cluster_records_its_removed_deployments(state: ControlState) -> None:
    r1 = published(state, "scenes", "sha256:01")
    run(state, control.deploy(state, origin(), clusters=["dev"], release_id=r1).events)
    with pytest.raises(Conflict, match=r"cluster 'dev' has deployment \(scenes: .*--force"):
        control.delete_cluster(state, origin(), "dev")
    with pytest.raises(Conflict, match="has 2 unfinished jobs"):
        control.delete_cluster(state, origin(), "prod-eu", unfinished_jobs=2)
    events = control.delete_cluster(state, origin(), "dev", force=True)
    assert [e.type for e in events] == ["DeploymentRemoved", "ClusterDeleted"]
    assert control.deployment_ops(events) == [("HDEL", "dev/scenes", "")]


# --- properties, against a real server ------------------------------------------------------------

CLUSTERS = ["default", "dev", "prod"]
WORKFLOWS = ["wa", "wb"]

commands = st.lists(
    st.one_of(
        st.tuples(st.just("cluster"), st.sampled_from(CLUSTERS)),
        st.tuples(st.just("delete"), st.sampled_from(CLUSTERS)),
        st.tuples(st.just("workflow"), st.sampled_from(WORKFLOWS)),
        st.tuples(st.just("publish"), st.sampled_from(WORKFLOWS), st.integers(0, 3)),
        st.tuples(
            st.just("deploy"), st.integers(0, 9), st.lists(st.sampled_from(CLUSTERS), max_size=2)
        ),
        st.tuples(st.just("latest"), st.sampled_from(WORKFLOWS), st.sampled_from(CLUSTERS)),
        st.tuples(st.just("undeploy"), st.sampled_from(WORKFLOWS), st.sampled_from(CLUSTERS)),
    ),
    max_size=30,
)


def perform(client: Client, command: tuple) -> None:
    kind, *args = command
    workflows = client.workflows()
    if kind == "cluster":
        client.clusters().create(args[0])
    elif kind == "delete":
        client.clusters().delete(args[0], force=True)
    elif kind == "workflow":
        workflows.create(args[0])
    elif kind == "publish":
        tasks = [ReleaseTask(f"{args[0]}.T", "v1.0", {})]
        workflows.publish_release(args[0], f"{args[0]}-{args[1]}".encode(), tasks, runner="m:r")
    elif kind == "deploy":
        releases = list(client.state().releases)
        if releases:
            workflows.deploy_release(releases[args[0] % len(releases)], clusters=args[1])
    elif kind == "latest":
        workflows.deploy_release(latest_of=args[0], clusters=[args[1]])
    elif kind == "undeploy":
        workflows.undeploy_release(args[0], clusters=[args[1]])


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(commands)
def test_incremental_projection_equals_replay_and_as_of(
    server: ServerProcess, script: list
) -> None:
    with Client(server.url, team="p-" + uuid.uuid4().hex[:10], actor="user:prop") as client:
        points: list[tuple[str, dict]] = []
        for command in script:
            try:
                perform(client, command)
            except TileboxError:
                continue  # refused commands append nothing
            state = client.state()
            points.append((state.position, state.snapshot()))
        replayed = fold(client.store.replay(CONTROL))
        assert client.state().snapshot() == replayed.snapshot()
        assert client.deployments().materialised() == replayed.mapping()
        view = client.deployments()
        for position, snapshot in points:
            # As of a point: exactly the events up to it (by log position) ...
            assert fold(client.store.replay(CONTROL, until=position)).snapshot() == snapshot
            # ... and as of a wall-clock time: the state after the last event of that millisecond.
            when = position_time(position)
            last_same_ms = max(j for j, (p, _) in enumerate(points) if position_time(p) == when)
            assert view.state_as_of(when).snapshot() == points[last_same_ms][1]


def test_a_batched_entry_in_the_control_log_does_not_block_later_writes(
    client: Client, team: str
) -> None:
    """Bug: the projection counted a version per event, the append script the stream's entries, so
    after one entry holding a batch of events (field "b", as the task scripts write) every
    control-plane write gave up after its concurrent-write retries."""
    store = client.store
    batch = [
        ClusterCreated(**origin().stamp(), slug=slug, name=slug)
        for slug in ("batched-a", "batched-b")
    ]
    encoded = b"\x92" + b"".join(store.codec.encode(event) for event in batch)  # msgpack array of 2
    store.redis.xadd(store.keys.log(CONTROL), {"b": encoded})
    client.clusters().create("after")
    client.workflows().create("scenes")
    assert {"batched-a", "batched-b", "after"} <= set(client.state().clusters)
    assert fold(store.replay(CONTROL)).snapshot() == client.state().snapshot()
