"""The one backoff policy: its bounds as a table, and its retry loop against real failures."""

from __future__ import annotations

import random
import threading

import pytest

from tests.servers import ServerProcess
from tilebox_core import Client, ConcurrencyError, StoreUnavailable, retries, session
from tilebox_core.domain import control
from tilebox_core.domain.events import Event, Origin
from tilebox_core.domain.projection import ControlState
from tilebox_core.redis.eventstore import CONTROL

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "most"),
    [
        (1, 0.05, 5.0, 0.05),
        (2, 0.05, 5.0, 0.1),
        (5, 0.05, 5.0, 0.8),
        (7, 0.05, 5.0, 3.2),
        (8, 0.05, 5.0, 5.0),  # 6.4 capped
        (60, 0.05, 5.0, 5.0),
        (1, 2.0, 60.0, 2.0),  # a failed release's first restart
        (6, 2.0, 60.0, 60.0),  # 64 capped
        (200, 0.001, 0.05, 0.05),
    ],
)
def test_delay_is_full_jitter_up_to_the_capped_exponential(
    attempt: int, base: float, cap: float, most: float
) -> None:
    random.seed(attempt)
    waits = [retries.delay(attempt, base=base, cap=cap) for _ in range(2_000)]
    assert all(0 <= wait <= most for wait in waits)
    assert max(waits) > 0.9 * most and min(waits) < 0.1 * most  # spread over the whole range


def test_retrying_rides_out_a_server_that_comes_back(
    private_server: ServerProcess, team: str
) -> None:
    with Client(private_server.url, team=team, retries=0) as client:
        store = client.store
        first = store.append(CONTROL, control.create_cluster(ControlState(), client.origin(), "a"))
        private_server.kill()
        told: list[tuple[str, float]] = []

        def on_retry(error: BaseException, wait: float) -> None:
            told.append((type(error).__name__, wait))
            if len(told) == 3:
                private_server.start()  # back on the same port and AOF

        for attempt in retries.retrying(
            StoreUnavailable, attempts=10, base=0.001, cap=0.01, on_retry=on_retry
        ):
            with attempt:
                position = store.last_position(CONTROL)
        assert position == first.positions[-1]
        assert [name for name, _ in told] == ["StoreUnavailable"] * 3
        assert all(0 <= wait <= 0.01 for _, wait in told)

        private_server.kill()
        with pytest.raises(StoreUnavailable, match="lost the connection"):
            for attempt in retries.retrying(StoreUnavailable, attempts=2, base=0.001, cap=0.001):
                with attempt:
                    store.last_position(CONTROL)


def test_a_decision_that_lost_a_race_is_made_again_on_fresh_state(client: Client) -> None:
    """A real concurrent write (another client's, between this one's read and its append) fails the
    append with the server's concurrency error; ``decide`` backs off and decides again."""
    seen: list[set[str]] = []
    other = Client(client.url, team=client.team, actor="user:other")
    raced = threading.Event()

    def rule(state: ControlState, origin: Origin) -> tuple[str, list[Event]]:
        seen.append(set(state.clusters))
        if not raced.is_set():
            raced.set()
            other.clusters().create("rival")  # appended after this rule read the state
        return "mine", control.create_cluster(state, origin, "mine")

    with other:
        assert client.decide(rule) == "mine"
    assert seen == [{"default"}, {"default", "rival"}]
    assert {"rival", "mine"} <= set(client.state().clusters)


def test_a_decision_gives_up_after_its_retries(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session, "MAX_RETRIES", 5)  # 200 by default: seconds of losing races
    other = Client(client.url, team=client.team, actor="user:other")
    count = 0

    def rule(state: ControlState, origin: Origin) -> tuple[None, list[Event]]:
        nonlocal count
        count += 1
        other.clusters().create(f"rival-{count}")  # always one write ahead
        return None, control.create_cluster(state, origin, "never")

    with other, pytest.raises(ConcurrencyError, match="gave up after 5 concurrent-write"):
        client.decide(rule)
    assert count == 6 and "never" not in client.state().clusters
