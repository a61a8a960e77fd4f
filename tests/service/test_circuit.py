"""Budgets and breakers on the request path's dependencies, against real sockets and stores."""

import socket
import threading
from collections.abc import Iterator

import pytest

from service.circuit import Breaker, DependencyFailed
from service.experiments.bandit_state import (
    Batch,
    RedisBanditStore,
    Reward,
    SqliteBanditStore,
    StateCache,
)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP server that accepts connections and never answers: a hung dependency."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in [*held, server]:
        conn.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ask(port: int) -> bytes:
    """One request-response over TCP, as a store client makes it (with its own long timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(b"PING\r\n")
        return conn.recv(64)


def test_a_hung_dependency_costs_the_budget_then_the_breaker_skips_it(silent_port):
    breaker = Breaker("store", (OSError,), budget=0.05, cooldown=60)
    with pytest.raises(DependencyFailed) as first:
        breaker.call(ask, silent_port)
    assert first.value.reason == "timeout" and breaker.is_open
    with pytest.raises(DependencyFailed) as second:
        breaker.call(ask, silent_port)
    assert second.value.reason == "circuit_open"


def test_a_refused_connection_opens_the_breaker_until_the_cooldown_ends():
    breaker = Breaker("store", (OSError,), budget=1.0, cooldown=0.0)
    with pytest.raises(DependencyFailed) as failed:
        breaker.call(ask, closed_port())
    assert failed.value.reason == "unavailable"
    assert not breaker.is_open  # a zero cooldown: the next call tries the dependency again
    assert breaker.call(len, b"ok") == 2


def test_errors_that_are_not_the_dependencys_pass_through_and_leave_it_closed():
    breaker = Breaker("store", (OSError,), budget=1.0, cooldown=60)

    def bad_input() -> None:
        raise ValueError("this request's own data")

    with pytest.raises(ValueError, match="own data"):
        breaker.call(bad_input)
    assert not breaker.is_open
    assert breaker.call(sum, [1, 2]) == 3


def test_a_hung_bandit_store_answers_with_the_prior_then_the_last_state_read(tmp_path, silent_port):
    hung = StateCache(RedisBanditStore(f"127.0.0.1:{silent_port}"), budget=0.05)
    read = hung.get("prompt-bandit")
    assert read.failure == "timeout"
    assert read.state.revision == 0 and read.state.arms == {}  # the prior: replayable as r0

    healthy = SqliteBanditStore(tmp_path / "state.sqlite")
    healthy.apply(Batch(experiment="exp", rewards=(Reward(tip_id="t1", arm="v1", reward=1),)))
    cache = StateCache(healthy, ttl_seconds=0.0)
    assert cache.get("exp") == (healthy.read("exp"), None)
    cache.store = RedisBanditStore(f"127.0.0.1:{closed_port()}")
    stale = cache.get("exp")
    assert stale.failure in {"timeout", "unavailable"}
    assert stale.state == healthy.read("exp")  # the last state this process read
