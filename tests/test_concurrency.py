"""Concurrency and durability with real processes and real servers."""

from __future__ import annotations

import multiprocessing as mp

from tests.servers import ServerProcess
from tilebox_core import Client
from tilebox_core.domain.events import DeploymentSet, ReleaseTask
from tilebox_core.domain.projection import fold
from tilebox_core.redis.eventstore import CONTROL

WRITERS = 20


def deploy_worker(url: str, team: str, release_id: str, barrier, results) -> None:  # type: ignore[no-untyped-def]
    with Client(url, team=team, actor=f"user:w-{release_id[-6:]}") as client:
        barrier.wait(30)
        plan = client.workflows().deploy_release(release_id, clusters=["dev"])
        results.put((release_id, plan.changes[0].changed))


def test_concurrent_deploys_leave_one_active_release(server: ServerProcess, team: str) -> None:
    with Client(server.url, team=team, actor="user:setup") as client:
        client.clusters().create("dev")
        client.workflows().create("scenes")
        releases = [
            client.workflows()
            .publish_release(
                "scenes", f"artifact {i}".encode(), [ReleaseTask("T", "v1.0")], runner="m:r"
            )
            .release.id
            for i in range(WRITERS)
        ]
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(WRITERS), ctx.Queue()
    workers = [
        ctx.Process(target=deploy_worker, args=(server.url, team, r, barrier, results))
        for r in releases
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    outcomes = dict(results.get(timeout=5) for _ in workers)
    assert sorted(outcomes) == sorted(releases) and all(outcomes.values())

    with Client(server.url, team=team) as client:
        replayed = fold(client.store.replay(CONTROL))
        deploys = [
            s.event for s in client.store.replay(CONTROL) if isinstance(s.event, DeploymentSet)
        ]
        assert sorted(e.release_id for e in deploys) == sorted(releases)  # every deploy recorded
        # The log is a chain: each deploy names the release it replaced.
        assert [e.previous_release_id for e in deploys[1:]] == [e.release_id for e in deploys[:-1]]
        assert replayed.mapping() == {"dev": {"scenes": deploys[-1].release_id}}
        assert client.deployments().materialised() == replayed.mapping()
        assert client.state().snapshot() == replayed.snapshot()


def test_state_survives_a_server_restart(private_server: ServerProcess, team: str) -> None:
    with Client(private_server.url, team=team) as client:
        client.clusters().create("dev")
        client.workflows().create("scenes")
        published = client.workflows().publish_release(
            "scenes", b"code", [ReleaseTask("T", "v1.0")], runner="m:r"
        )
        client.workflows().deploy_release(published.release.id, clusters=["dev"])
        before = client.state().snapshot()
    private_server.restart()  # kill -9, then start on the same AOF
    with Client(private_server.url, team=team) as client:
        assert client.state().snapshot() == before
        assert client.deployments().materialised() == {"dev": {"scenes": published.release.id}}
        assert client.store.get_artifact(published.release.digest) == b"code"
