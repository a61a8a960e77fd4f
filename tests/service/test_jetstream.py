"""JetStream intake against a real NATS server: streams, dedupe, dead letters, crashes, shutdown.

Every test works in its own namespace (streams SIGNALS_<ns>, FEEDBACK_<ns>, DLQ_<ns> on
<ns>.* subjects), deleted afterwards, so tests and a live `tipml consume` on the same server
never see each other's messages. The server restart runs on a private nats-server this test
starts on a free port with its own store: the shared one at 127.0.0.1:4222 is not ours to stop.
"""

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError

from feature_repo.bounds import ALL_DAY_DUE_TIME
from flows.simulation.world import World
from service.events.consumer import ConsumeParams, parse_event, run_consumers
from service.events.jetstream import (
    DEAD_LETTER_REASON,
    NATS_URL_ENV,
    ORIGINAL_SEQUENCE,
    ORIGINAL_STREAM,
    ORIGINAL_SUBJECT,
    STREAM_OF_TYPE,
    Topology,
    connect,
    ensure_streams,
    publish,
    publish_many,
)
from service.events.lake import open_lake
from service.events.models import EVENT_ADAPTER, Event, Feedback
from service.settings import ENV_VARS, Settings
from tests.conftest import NATS_HOST, require_server, wait_until
from tests.feature_repo.test_bounds import FAR_TIMES, contexts

NATS_PORT = 4222
NATS_URL = f"nats://{NATS_HOST}:{NATS_PORT}"
# Every `type` a message may carry: the values the Event union discriminates on.
EVENT_TYPES = tuple(EVENT_ADAPTER.json_schema()["discriminator"]["mapping"])
REPO = Path(__file__).resolve().parents[2]
FEEDBACK_JSON = Feedback(
    event_id="f-ok",
    user_id="u1",
    timestamp=datetime(2026, 11, 2, 12, tzinfo=UTC),
    tip_id="tip-1",
    reaction="accepted",
    prompt_version="v1",
).model_dump(mode="json")


@cache
def world_events(count: int, seed: int) -> tuple[Event, ...]:
    """A realistic mix of every event type from the simulator (both intake streams)."""
    world = World(users=120, days=28, seed=seed, end=datetime(2026, 11, 20, tzinfo=UTC))
    events = tuple(itertools.islice(world.events(), count))
    assert len(events) == count
    return events


@contextlib.asynccontextmanager
async def jetstream(url: str = NATS_URL) -> AsyncIterator[JetStreamContext]:
    nc = await connect(url, name="tipml-tests")
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def _delete_streams(topology: Topology) -> None:
    async with jetstream() as js:
        for root in ("signals", "feedback", "dlq"):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(topology.stream_name(root))


@pytest.fixture
def topology() -> Iterator[Topology]:
    require_server("NATS", NATS_HOST, NATS_PORT)
    topology = Topology(namespace=f"t{uuid.uuid4().hex[:12]}")
    yield topology
    asyncio.run(_delete_streams(topology))


def raw_ids(settings: Settings) -> list[str]:
    """Every event_id row in the lake's files, duplicates included (what readers dedupe)."""
    return [
        event_id
        for path in sorted(settings.events_dir.rglob("*.parquet"))
        for event_id in pq.read_table(path, columns=["event_id"])["event_id"].to_pylist()
    ]


def distinct_ids(settings: Settings) -> list[str]:
    return [record["event_id"] for record in open_lake(settings).records()]


async def consumer_backlog(js: JetStreamContext, topology: Topology) -> dict[str, tuple[int, int]]:
    """Per durable consumer: (messages not yet delivered, delivered but not acked)."""
    backlog = {}
    for root in ("signals", "feedback"):
        info = await js.consumer_info(topology.stream_name(root), topology.consumer_name(root))
        backlog[root] = (info.num_pending, info.num_ack_pending)
    return backlog


async def dead_letters(js: JetStreamContext, topology: Topology) -> list[RawStreamMsg]:
    stream = topology.stream_name("dlq")
    last = (await js.stream_info(stream)).state.last_seq
    return [await js.get_msg(stream, seq) for seq in range(1, last + 1)]


@dataclass
class ConsumerProcess:
    process: subprocess.Popen
    output: Path

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"still running after {timeout} s:\n{self.text()}") from exc

    def text(self) -> str:
        return self.output.read_text()


@pytest.fixture
def spawn(settings, topology) -> Iterator[Callable[..., ConsumerProcess]]:
    """Start `tipml consume` in its own process (as `python -m tipml.consume_cli`)."""
    started: list[ConsumerProcess] = []
    env = os.environ | {ENV_VARS["home"]: str(settings.home), NATS_URL_ENV: NATS_URL}
    command = [sys.executable, "-m", "tipml.consume_cli", "--namespace", topology.namespace]

    def start(*args: str) -> ConsumerProcess:
        output = settings.home.parent / f"consume-{len(started)}.out"
        with open(output, "wb") as out:
            process = subprocess.Popen(
                [*command, *args], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        started.append(ConsumerProcess(process, output))
        return started[-1]

    yield start
    for consumer in started:
        if consumer.process.poll() is None:
            consumer.process.kill()
            consumer.process.wait()


def test_every_event_type_has_a_subject_on_an_intake_stream():
    assert set(STREAM_OF_TYPE) == set(EVENT_TYPES)
    live, ns = Topology(), Topology(namespace="t1")
    assert live.subject_for("task_created") == "signals.task_created"
    assert live.subject_for("feedback") == "feedback.feedback"
    assert live.subject_for("decision") == "feedback.decision"
    assert live.stream_name("signals") == "SIGNALS"
    assert live.stream_subjects("signals") == "signals.>"
    assert ns.stream_name("dlq") == "DLQ_t1"
    assert ns.dead_letter_subject("feedback") == "t1.dlq.feedback"
    assert ConsumeParams(ack_wait=2, max_deliver=4).backoff == [2, 4, 8]


def test_streams_are_created_once_and_a_drifted_config_is_put_back(topology):
    async def scenario() -> None:
        async with jetstream() as js:
            names = [topology.stream_name(root) for root in ("signals", "feedback", "dlq")]
            assert await ensure_streams(js, topology) == dict.fromkeys(names, "created")
            assert await ensure_streams(js, topology) == dict.fromkeys(names, "unchanged")
            await js.update_stream(topology.stream_config("signals"), duplicate_window=5)
            assert (await ensure_streams(js, topology))[names[0]] == "updated"
            config = (await js.stream_info(names[0])).config
            assert config.duplicate_window == 120
            assert config.subjects == [f"{topology.namespace}.signals.>"]

    asyncio.run(scenario())


def test_10k_events_published_and_consumed_land_once_each(topology, settings):
    events = world_events(10_000, seed=1)

    async def scenario() -> None:
        async with jetstream() as js:
            await ensure_streams(js, topology)
            published = await publish_many(js, events, topology)
            assert (published.stored, published.duplicates) == (10_000, 0)
            report = await run_consumers(
                ConsumeParams(namespace=topology.namespace, max_messages=10_000), settings
            )
            assert report.handled == 10_000
            assert sum(s.appended for s in report.streams) == 10_000
            assert await consumer_backlog(js, topology) == {"signals": (0, 0), "feedback": (0, 0)}

    asyncio.run(scenario())
    ids = distinct_ids(settings)
    assert len(ids) == 10_000 and set(ids) == {e.event_id for e in events}
    assert len(raw_ids(settings)) == 10_000


def test_an_event_published_twice_is_stored_and_logged_once(topology, settings):
    event = world_events(10_000, seed=1)[0]

    async def scenario() -> None:
        async with jetstream() as js:
            await ensure_streams(js, topology)
            first, again = await publish(js, event, topology), await publish(js, event, topology)
            assert not first.duplicate and again.duplicate and again.seq == first.seq
            stream = topology.stream_name(STREAM_OF_TYPE[event.type])
            assert (await js.stream_info(stream)).state.messages == 1
            await run_consumers(
                ConsumeParams(namespace=topology.namespace, idle_exit=0.5, fetch_timeout=0.2),
                settings,
            )

    asyncio.run(scenario())
    assert raw_ids(settings) == distinct_ids(settings) == [event.event_id]


def test_poison_and_malformed_messages_go_to_the_dead_letters_and_the_rest_goes_on(
    topology, settings
):
    good = world_events(10_000, seed=1)[:2]
    feedback = FEEDBACK_JSON | {"event_id": "f-1"}
    without_reaction = {k: v for k, v in feedback.items() if k != "reaction"}
    ns = topology.namespace
    bad = [
        (f"{ns}.signals.impression", b'{"event_id": "x", "type": "impr'),
        (f"{ns}.feedback.feedback", json.dumps(without_reaction).encode()),
        (f"{ns}.signals.page_view", json.dumps(feedback | {"type": "page_view"}).encode()),
    ]

    async def scenario() -> list[RawStreamMsg]:
        async with jetstream() as js:
            await ensure_streams(js, topology)
            for subject, data in bad:
                await js.publish(subject, data)
            await publish_many(js, good, topology)
            # Until idle, so that the MSG_TERMINATED advisories of its own terms come in too.
            params = ConsumeParams(namespace=ns, idle_exit=0.5, fetch_timeout=0.2)
            report = await run_consumers(params, settings)
            assert report.handled == 5
            assert sum(s.dead_lettered for s in report.streams) == 3
            assert sum(s.appended for s in report.streams) == 2
            assert await consumer_backlog(js, topology) == {"signals": (0, 0), "feedback": (0, 0)}
            return await dead_letters(js, topology)

    stored = asyncio.run(scenario())
    # One copy each: the MSG_TERMINATED advisory's copy of a message already dead-lettered
    # is dropped by the dead-letter stream's own dedupe.
    assert len(stored) == 3
    letters = {letter.headers[ORIGINAL_SUBJECT]: letter for letter in stored}
    assert set(letters) == {subject for subject, _ in bad}
    for subject, data in bad:
        letter = letters[subject]
        assert letter.data == data
        root = subject.split(".")[1]
        assert letter.headers[ORIGINAL_STREAM] == topology.stream_name(root)
        assert letter.subject == topology.dead_letter_subject(root)
        assert int(letter.headers[ORIGINAL_SEQUENCE]) >= 1
    reasons = {subject: letter.headers[DEAD_LETTER_REASON] for subject, letter in letters.items()}
    assert reasons[bad[0][0]].startswith("not JSON")
    assert reasons[bad[1][0]] == "not a valid event: feedback.reaction: Field required"
    assert "page_view" in reasons[bad[2][0]] and "does not match" in reasons[bad[2][0]]
    assert sorted(distinct_ids(settings)) == sorted(e.event_id for e in good)


def test_a_message_another_client_terminates_is_copied_to_the_dead_letters(topology, settings):
    event = next(e for e in world_events(10_000, seed=1) if STREAM_OF_TYPE[e.type] == "signals")
    params = ConsumeParams(namespace=topology.namespace, stream="signals", fetch_timeout=0.2)
    stream, durable = topology.stream_name("signals"), topology.consumer_name("signals")

    async def scenario() -> list[RawStreamMsg]:
        async with jetstream() as js:
            await ensure_streams(js, topology)
            await publish(js, event, topology)
            # Another client of the same durable consumer holds the message...
            await js.add_consumer(stream, params.consumer_config("signals"))
            other = await js.pull_subscribe_bind(durable=durable, stream=stream)
            (held,) = await other.fetch(1, timeout=5)
            stop = asyncio.Event()
            consuming = asyncio.create_task(run_consumers(params, settings, stop))
            async with asyncio.timeout(15):
                while (await js.consumer_info(stream, durable)).num_waiting == 0:
                    await asyncio.sleep(0.02)
                # ...and terminates it while tipml consume listens to the advisories.
                await held.term()
                while (await js.stream_info(topology.stream_name("dlq"))).state.messages == 0:
                    await asyncio.sleep(0.02)
            stop.set()
            await consuming
            return await dead_letters(js, topology)

    (letter,) = asyncio.run(scenario())
    assert letter.headers[DEAD_LETTER_REASON] == "terminated by a client after 1 deliveries"
    assert letter.headers[ORIGINAL_SUBJECT] == topology.subject_for(event.type)
    assert letter.headers[ORIGINAL_SEQUENCE] == "1"
    assert json.loads(letter.data)["event_id"] == event.event_id
    assert distinct_ids(settings) == []


def test_a_message_that_keeps_failing_reaches_max_deliver_and_the_dead_letters(topology, settings):
    first, second = world_events(10_000, seed=1)[:2]
    # The log cannot be written (its directory is a file), a failure even root cannot skip.
    settings.events_dir.parent.mkdir(parents=True)
    settings.events_dir.write_text("not a directory")
    params = ConsumeParams(
        namespace=topology.namespace, ack_wait=0.2, max_deliver=3, fetch_timeout=0.2
    )

    async def scenario() -> tuple[list[RawStreamMsg], int]:
        async with jetstream() as js:
            await ensure_streams(js, topology)
            stop = asyncio.Event()
            consuming = asyncio.create_task(run_consumers(params, settings, stop))
            await publish(js, first, topology)
            dlq = topology.stream_name("dlq")
            async with asyncio.timeout(15):
                while (await js.stream_info(dlq)).state.messages == 0:
                    await asyncio.sleep(0.05)
                # The consumer is still there: once the log is writable, events flow again.
                settings.events_dir.unlink()
                await publish(js, second, topology)
                while second.event_id not in distinct_ids(settings):
                    await asyncio.sleep(0.05)
            stop.set()
            report = await consuming
            return await dead_letters(js, topology), sum(s.failed_batches for s in report.streams)

    letters, failed_batches = asyncio.run(scenario())
    assert failed_batches == 3
    assert len(letters) == 1
    letter = letters[0]
    assert letter.headers[DEAD_LETTER_REASON].startswith(
        "max_deliver reached after 3 deliveries; last error: append failed: NotADirectoryError"
    )
    assert letter.headers[ORIGINAL_SUBJECT] == topology.subject_for(first.type)
    assert json.loads(letter.data)["event_id"] == first.event_id
    assert distinct_ids(settings) == [second.event_id]


def test_sigkill_mid_stream_then_restart_loses_nothing_and_counts_nothing_twice(
    topology, settings, spawn
):
    events = world_events(6_000, seed=2)
    asyncio.run(_publish(topology, events))
    # ack-wait: past a slow disk's append (fsync stalls here reach a second), so that only the
    # batches in hand at the kill come back; the restart waits longer than that for them.
    options = ("--batch", "50", "--ack-wait", "3")

    killed = spawn(*options)
    wait_until(lambda: len(raw_ids(settings)) >= 1_500, 60, "the first 1500 events in the log")
    killed.process.send_signal(signal.SIGKILL)
    assert killed.wait(10) == -signal.SIGKILL
    at_kill = len(raw_ids(settings))
    assert at_kill < len(events), "the consumer finished before it was killed"

    restarted = spawn(*options, "--idle-exit", "5")
    assert restarted.wait(60) == 0, restarted.text()

    ids, raw = distinct_ids(settings), raw_ids(settings)
    assert len(ids) == len(events) and set(ids) == {e.event_id for e in events}  # 0 lost
    # Raw lines exceed distinct ones only by batches appended but not acked before the kill;
    # readers count those once.
    assert 0 <= len(raw) - len(ids) <= 4 * 50, (len(raw), len(ids))
    assert asyncio.run(_backlog(topology)) == {"signals": (0, 0), "feedback": (0, 0)}


def test_sigterm_finishes_the_batch_in_hand_and_exits_within_seconds(topology, settings, spawn):
    events = world_events(6_000, seed=3)
    asyncio.run(_publish(topology, events))
    # Past a slow disk's append, so that no batch is redelivered while it is being written.
    options = ("--batch", "50", "--ack-wait", "5")

    stopped = spawn(*options)
    wait_until(lambda: len(raw_ids(settings)) >= 1_000, 60, "the first 1000 events in the log")
    started = time.monotonic()
    stopped.process.send_signal(signal.SIGTERM)
    assert stopped.wait(15) == 0, stopped.text()
    # Well under nats-py's 30 s drain timeout: the pull subscriptions were closed first.
    assert time.monotonic() - started < 5
    assert "SIGTERM: finishing the batch in hand" in stopped.text()
    assert len(raw_ids(settings)) < len(events), "the consumer finished before SIGTERM"

    resumed = spawn(*options, "--idle-exit", "2.5")
    assert resumed.wait(60) == 0, resumed.text()
    # Every appended batch was acked before the exit: nothing was appended twice.
    assert sorted(raw_ids(settings)) == sorted(e.event_id for e in events)
    assert asyncio.run(_backlog(topology)) == {"signals": (0, 0), "feedback": (0, 0)}


async def _publish(topology: Topology, events: tuple[Event, ...]) -> None:
    async with jetstream() as js:
        await ensure_streams(js, topology)
        assert (await publish_many(js, events, topology)).stored == len(events)


async def _backlog(topology: Topology, url: str = NATS_URL) -> dict[str, tuple[int, int]]:
    async with jetstream(url) as js:
        return await consumer_backlog(js, topology)


def test_a_nats_restart_mid_stream_loses_nothing(private_nats, settings):
    topology = Topology(namespace="restart")
    events = world_events(5_000, seed=4)
    params = ConsumeParams(namespace="restart", batch=50, ack_wait=1, nats_url=private_nats.url)
    settled = {"signals": (0, 0), "feedback": (0, 0)}

    async def scenario() -> None:
        async with jetstream(private_nats.url) as js:
            await ensure_streams(js, topology)
            await publish_many(js, events, topology)
        stop = asyncio.Event()
        consuming = asyncio.create_task(run_consumers(params, settings, stop))
        async with asyncio.timeout(60):
            while len(raw_ids(settings)) < 1_000:
                await asyncio.sleep(0.01)
            assert len(raw_ids(settings)) < len(events), "consumed before the restart"
            await asyncio.to_thread(private_nats.restart)
            # Done when every event is in the log and the server has every ack.
            async with jetstream(private_nats.url) as js:
                while await consumer_backlog(js, topology) != settled:
                    await asyncio.sleep(0.1)
        stop.set()
        await consuming

    asyncio.run(scenario())
    ids = distinct_ids(settings)
    assert len(ids) == len(events) and set(ids) == {e.event_id for e in events}


def test_hostile_values_are_dead_lettered_and_the_rest_of_their_batch_is_appended(
    topology, settings
):
    good = world_events(10_000, seed=2)[:3]
    task = next(e for e in world_events(10_000, seed=2) if e.type == "task_created")
    feedback = FEEDBACK_JSON
    task_json = task.model_dump(mode="json")
    ns = topology.namespace
    poison = [
        # Crashed the consumer twice in a row (IsADirectoryError) and lost its batch.
        (f"{ns}.signals.task_created", task_json | {"event_id": "dir", "timezone": "America"}),
        # Stopped every batch flow for good once appended.
        (
            f"{ns}.feedback.feedback",
            feedback | {"event_id": "y2300", "timestamp": "2300-01-01T00:00:00+00:00"},
        ),
        (
            f"{ns}.feedback.feedback",
            feedback | {"event_id": "edge", "timestamp": "9999-12-31T23:59:59-12:00"},
        ),
        (f"{ns}.feedback.feedback", feedback | {"event_id": "unix", "timestamp": 1764236400}),
        (f"{ns}.feedback.feedback", feedback | {"event_id": "v9", "prompt_version": "v9-shiny"}),
        (
            f"{ns}.signals.task_created",
            task_json | {"event_id": "far-due", "due": "0001-01-01T00:00:00+14:00"},
        ),
    ]
    all_day = task_json | {"event_id": "all-day", "due": "2026-11-27"}

    async def scenario() -> None:
        async with jetstream() as js:
            await ensure_streams(js, topology)
            for subject, data in poison:
                await js.publish(subject, json.dumps(data).encode())
            await js.publish(f"{ns}.signals.task_created", json.dumps(all_day).encode())
            await publish_many(js, good, topology)
            params = ConsumeParams(namespace=ns, idle_exit=0.5, fetch_timeout=0.2)
            report = await run_consumers(params, settings)
            assert sum(s.dead_lettered for s in report.streams) == len(poison)
            assert sum(s.appended for s in report.streams) == len(good) + 1
            letters = await dead_letters(js, topology)
            assert {json.loads(m.data)["event_id"] for m in letters} == {
                data["event_id"] for _, data in poison
            }

    asyncio.run(scenario())
    stored = {r["event_id"]: r for r in open_lake(settings).records()}
    assert set(stored) == {e.event_id for e in good} | {"all-day"}
    # An all-day due date is due at the end of that day in the task's own timezone.
    new_york = stored["all-day"]["due"].astimezone(ZoneInfo(task.timezone))
    assert (new_york.date(), new_york.time()) == (date(2026, 11, 27), ALL_DAY_DUE_TIME)


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=200)
    | contexts.map(lambda ctx: {"type": "impression", "context": ctx})
    .map(lambda body: body | {"event_id": "e", "user_id": "u", "tip_id": "t"})
    .map(lambda body: body | {"category": "focus", "prompt_version": "v1"})
    .map(lambda body: body | {"timestamp": body["context"].get("timestamp")})
    .map(lambda body: json.dumps(body).encode())
    | st.sampled_from(EVENT_TYPES).flatmap(
        lambda kind: st.dictionaries(
            st.sampled_from(["event_id", "user_id", "timestamp", "timezone", "due", "task_id"]),
            st.none() | st.integers() | st.text(max_size=30) | st.sampled_from(FAR_TIMES),
        ).map(lambda body: json.dumps(body | {"type": kind}).encode())
    )
)
def test_any_message_is_an_event_or_a_one_line_reason_never_an_exception(data):
    parsed = parse_event(data)
    if isinstance(parsed, str):
        assert parsed.startswith(("not JSON", "not a valid event")) and "\n" not in parsed
    else:
        assert parse_event(parsed.model_dump_json().encode()) == parsed
