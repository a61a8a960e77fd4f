"""The service's event sink in jetstream mode, against real nats-servers and `bentoml serve`.

Each test runs its own nats-server (tests/conftest.py `private_nats`), so that stopping it
is ours to do, and works in a namespace of its own. What is checked is what the design in
service/events/sink.py promises: feedback NATS did not take is a 503 and kept nowhere; a
decision NATS did not take is spooled, sent once NATS is back, and the spool emptied; with
two replicas and `tipml consume`, every event lands in the lake exactly once.
"""

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.featurestore.event_frames import load_event_frames
from service.circuit import DependencyFailed
from service.events.jetstream import Topology
from service.events.lake import open_lake
from service.events.models import EVENT_ADAPTER, Decision, Event, Feedback
from service.events.sink import CONNECT_TIMEOUT_S, JETSTREAM, Spool, open_sink
from service.settings import ENV_VARS, Settings
from tests.conftest import PrivateNats, wait_until
from tests.service.test_jetstream import ConsumerProcess, jetstream
from tests.service.test_service_hostile import GENERATE
from tipml.serving import PROJECT_DIR, bentoml_serve

NOW = datetime.now(UTC)
ids = st.from_regex(r"[A-Za-z0-9._:@-]{1,128}", fullmatch=True)


def feedback(event_id: str) -> Feedback:
    return Feedback(
        event_id=event_id,
        user_id="u000003",
        tip_id="tip-1",
        reaction="accepted",
        prompt_version="v1",
        timestamp=NOW,
    )


def decision(event_id: str, **changes: object) -> Decision:
    fields = {
        "event_id": event_id,
        "user_id": "u000003",
        "timestamp": NOW,
        "request_id": "r1",
        "tip_id": "r1",
        "experiment": "prompt-bandit",
        "arm": "v2-mentor",
        "propensity": 0.25,
        "policy": "thompson",
        "policy_version": "rev-1",
        "outcome": "ok",
        "latency_ms": 12.5,
    }
    return Decision.model_validate(fields | changes)


decisions = st.builds(
    lambda event_id, user_id, timestamp, propensity, latency: decision(
        event_id, user_id=user_id, timestamp=timestamp, propensity=propensity, latency_ms=latency
    ),
    ids,
    ids,
    st.datetimes(
        min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30), timezones=st.just(UTC)
    ),
    st.floats(min_value=0.0, max_value=1.0, exclude_min=True),
    st.floats(min_value=0.0, max_value=1e9),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.lists(decisions, min_size=1, max_size=4), max_size=5))
def test_spooled_events_read_back_as_written_until_deleted(tmp_path, batches):
    spool = Spool(tmp_path / f"spool-{uuid.uuid4().hex}", "w1")
    for batch in batches:
        spool.append(batch)
    unread = [e for b in batches for e in b]
    for path in spool.files():
        for event in spool.read(path):
            unread.remove(event)  # equal to one written, and read once
        spool.delete(path)
        spool.delete(path)  # a file another worker deleted first is no error
    assert unread == []
    assert spool.files() == []


async def _stored(url: str, topology: Topology) -> list[Event]:
    """Every message in the namespace's feedback stream, in order, duplicates included."""
    async with jetstream(url) as js:
        stream = topology.stream_name("feedback")
        last = (await js.stream_info(stream)).state.last_seq
        return [
            EVENT_ADAPTER.validate_json((await js.get_msg(stream, seq)).data or b"")
            for seq in range(1, last + 1)
        ]


def stored_ids(nats: PrivateNats, namespace: str) -> list[str]:
    return [e.event_id for e in asyncio.run(_stored(nats.url, Topology(namespace=namespace)))]


def appended(append, event: Event) -> bool:
    """Whether `append` took the event; False while the breaker waits out its cooldown."""
    try:
        append(event)
    except DependencyFailed:
        return False
    return True


def test_a_sink_spools_decisions_while_nats_is_away_and_sends_each_once_when_it_is_back(
    private_nats, tmp_path
):
    settings = Settings(
        home=tmp_path / "home",
        event_sink="jetstream",
        nats_url=private_nats.url,
        nats_namespace="sink",
    )
    spool = Spool(settings.spool_dir, "reader")
    private_nats.stop()
    sink = open_sink(settings, "w1")
    started = time.monotonic()
    sink.start()  # NATS is down: the worker starts anyway, within the bound
    assert time.monotonic() - started < CONNECT_TIMEOUT_S + 1
    try:
        with pytest.raises(DependencyFailed) as refused:
            sink.append(feedback("f-down"))
        assert (refused.value.dependency, refused.value.reason) == (JETSTREAM, "unavailable")
        assert sink.record(decision("d-1")) == {JETSTREAM: "circuit_open"}
        assert [e.event_id for p in spool.files() for e in spool.read(p)] == ["d-1"]

        private_nats.start()  # the sink connects by itself and replays its spool
        wait_until(lambda: not spool.files(), 15, "the spool sent")
        assert stored_ids(private_nats, "sink") == ["d-1"]
        wait_until(lambda: appended(sink.append, feedback("f-up")), 15, "the breaker closed")

        private_nats.stop()  # now a connection that was up goes away
        started = time.monotonic()
        with pytest.raises(DependencyFailed):
            sink.append(feedback("f-gone"))
        assert time.monotonic() - started < 1.5, "a dead NATS must fail fast"
        assert sink.record(decision("d-2")) == {JETSTREAM: "circuit_open"}
        private_nats.start()
        wait_until(lambda: not spool.files(), 15, "the spool sent")
        time.sleep(1)  # room for a publish that failed to land late: none may
        # f-gone was refused and is nowhere: its caller holds it and retries.
        assert stored_ids(private_nats, "sink") == ["d-1", "f-up", "d-2"]
    finally:
        sink.close()


@pytest.fixture(scope="module")
def sink_home(served_home, tmp_path_factory) -> Settings:
    """A copy of the served home: its spool and lake are this module's alone."""
    home = Settings(
        home=tmp_path_factory.mktemp("sink"), mlflow_tracking_uri=served_home.tracking_uri
    )
    shutil.copytree(served_home.data_dir, home.data_dir)
    return home


def serve_env(nats: PrivateNats, namespace: str) -> dict[str, str]:
    return {
        ENV_VARS["event_sink"]: "jetstream",
        ENV_VARS["nats_url"]: nats.url,
        ENV_VARS["nats_namespace"]: namespace,
        "TIPML_SERVICE_WORKERS": "1",
    }


def post_until_accepted(url: str, body: dict, timeout: float = 20) -> httpx.Response:
    """POST /feedback as the recommender does: retry a 503 with the same body."""
    deadline = time.monotonic() + timeout
    while (answer := httpx.post(f"{url}/feedback", json=body, timeout=10)).status_code == 503:
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.5)
    return answer


@pytest.mark.integration  # runs bentoml serve
def test_served_feedback_is_a_503_and_a_decision_is_spooled_while_nats_is_down(
    sink_home, private_nats, tmp_path
):
    namespace = f"s{uuid.uuid4().hex[:8]}"
    spool = Spool(sink_home.spool_dir, "reader")
    body = {
        "event_id": f"fb-{namespace}",
        "user_id": "u000003",
        "tip_id": "tip-1",
        "reaction": "accepted",
        "prompt_version": "v1",
        "timestamp": NOW.isoformat(),
    }
    private_nats.stop()
    with bentoml_serve(
        sink_home, tmp_path / "serve.log", **serve_env(private_nats, namespace)
    ) as url:
        down = httpx.post(f"{url}/feedback", json=body, timeout=10)  # it started without NATS
        assert down.status_code == 503 and down.json()["detail"][0]["type"] == JETSTREAM
        private_nats.start()
        assert post_until_accepted(url, body).json()["status"] == "appended"

        private_nats.stop()
        again = body | {"event_id": f"fb2-{namespace}"}
        refused = httpx.post(f"{url}/feedback", json=again, timeout=10)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "jetstream is unavailable; retry with the same event_id"
        tip = httpx.post(
            f"{url}/generate", json=GENERATE | {"experiment": "prompt-bandit"}, timeout=30
        )
        assert tip.status_code == 200, tip.text
        assert tip.json()["dependency_fallbacks"] == {JETSTREAM: "circuit_open"}
        [spooled] = [e for p in spool.files() for e in spool.read(p)]
        assert spooled.type == "decision" and spooled.tip_id == tip.json()["tip_id"]

        private_nats.start()
        wait_until(lambda: not spool.files(), 20, "the spool sent")
        assert post_until_accepted(url, again).json()["status"] == "appended"
        stored = asyncio.run(_stored(private_nats.url, Topology(namespace=namespace)))
        assert [e.event_id for e in stored] == [
            body["event_id"],
            spooled.event_id,
            again["event_id"],
        ]
        assert stored[1] == spooled
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert 'dependency="jetstream",endpoint="feedback"' in metrics
        assert 'dependency="jetstream",endpoint="generate"' in metrics


@contextlib.contextmanager
def consuming(
    home: Settings, nats: PrivateNats, namespace: str, output: Path
) -> Iterator[ConsumerProcess]:
    """`tipml consume` as its own process, told where by the same settings as the service."""
    env = os.environ | {
        ENV_VARS["home"]: str(home.home),
        ENV_VARS["nats_url"]: nats.url,
        ENV_VARS["nats_namespace"]: namespace,
    }
    with open(output, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tipml.consume_cli"],
            cwd=PROJECT_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    consumer = ConsumerProcess(process, output)
    try:
        yield consumer
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.integration  # runs bentoml serve twice, and tipml consume
def test_two_replicas_and_one_consumer_land_every_feedback_in_the_lake_exactly_once(
    sink_home, private_nats, tmp_path
):
    namespace = f"r{uuid.uuid4().hex[:8]}"
    env = serve_env(private_nats, namespace)
    run = uuid.uuid4().hex[:8]

    def body(i: int) -> dict:
        return {
            "event_id": f"fb-{run}-{i}",
            "user_id": f"u{i % 50:06d}",
            "tip_id": f"tip-{run}-{i}",
            "reaction": ["accepted", "dismissed", "ignored"][i % 3],
            "prompt_version": "v1",
            "timestamp": NOW.isoformat(),
        }

    with (
        bentoml_serve(sink_home, tmp_path / "a.log", **env) as a,
        bentoml_serve(sink_home, tmp_path / "b.log", **env) as b,
        consuming(sink_home, private_nats, namespace, tmp_path / "consume.out") as consumer,
    ):
        sends = (
            [(a, i) for i in range(0, 20)]  # each replica's own
            + [(b, i) for i in range(20, 40)]
            + [(replica, i) for i in range(40, 50) for replica in (a, b)]  # sent to both
            + [(a, i) for i in range(0, 10)]  # retried where first sent
            + [(b, i) for i in range(10, 15)]  # retried on the other replica
        )
        statuses = [post_until_accepted(url, body(i)).json()["status"] for url, i in sends]
        # A retry on the replica that took it is its duplicate; elsewhere it is published
        # again, and the stream's msg-id window stores it once.
        assert statuses == ["appended"] * 60 + ["duplicate"] * 10 + ["appended"] * 5
        sent = {body(i)["event_id"] for i in range(50)}

        def landed() -> set[str]:
            today = open_lake(sink_home).read("feedback", start=NOW.date(), columns=["event_id"])
            return sent & set(today["event_id"].to_pylist())

        deadline = time.monotonic() + 30
        while landed() != sent:
            assert time.monotonic() < deadline and consumer.process.poll() is None, consumer.text()
            time.sleep(0.2)
        consumer.process.send_signal(signal.SIGTERM)
        assert consumer.wait(15) == 0, consumer.text()

    lake = open_lake(sink_home)
    raw = [
        event_id
        for path in lake.day_files("feedback", NOW.date())
        for event_id in pq.read_table(path, columns=["event_id"])["event_id"].to_pylist()
        if event_id in sent
    ]
    assert sorted(raw) == sorted(sent)  # one row each, not just one after the readers' dedup
    assert not lake.skipped
    frames = load_event_frames(lake, start=NOW.date())
    ours = frames.feedback[frames.feedback["tip_id"].str.startswith(f"tip-{run}-")]
    assert len(ours) == 50
    assert dict(zip(ours["tip_id"], ours["reaction"], strict=True)) == {
        body(i)["tip_id"]: body(i)["reaction"] for i in range(50)
    }
