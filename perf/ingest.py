"""Benchmark: events/s from JetStream into the durable event lake, ours vs the baselines.

What is measured, in one run, on the NATS server at TIPML_NATS_URL (default 127.0.0.1:4222). The
events are --events simulator events (flows/simulation/world.py: task events, impressions, feedback,
decisions, so both intake streams) in time order, as a live stream arrives, of which a --duplicates
fraction is published twice, the copy right after the original, as a retrying producer would.
Each phase works in a namespace of its own (streams SIGNALS_<ns>, FEEDBACK_<ns>, DLQ_<ns>, deleted
afterwards) and a scratch data home:

  publish  the raw publish rate, the first baseline: publish_many() (pipelined, every PubAck
           awaited) of all the events and duplicates, no consumer. The server's dedupe must
           store exactly --events messages.
  ours     for each --batch: `python -m tipml.consume_cli --batch B --max-messages N` (what
           `tipml consume` runs) in its own process, started and subscribed first; then the
           clock starts, this process publishes everything as above, and the clock stops
           when the consumer has appended (durable files per batch) and acked every event and
           exited. End to end: publish -> consume -> durable append. The lake is then read
           back (dedupe on event_id) and must hold exactly --events distinct events; the
           rows stored, duplicates included, are printed beside them.
  naive    the second baseline: a consumer that fetches one message at a time, appends it
           (one durable file per event) and acks it, on --naive-events messages of the signals
           stream published beforehand (its time is consume only, so it is flattered).

Printed: events/s per phase, the ratios ours/naive and ours/publish, and the issue's goal
(ours >= 5000 events/s end to end) as MET / NOT MET; nothing asserts on timings. The machine
is shared and noisy: compare by the ratios measured in the same run (the load average is
printed first).

    .venv/bin/python -m perf.ingest [--events 50000] [--batch 100 500 1000]
                                     [--duplicates 0.05] [--naive-events 3000]
"""

import argparse
import asyncio
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError

from flows.simulation.world import World
from service.events.jetstream import (
    DEFAULT_NATS_URL,
    INTAKE_STREAMS,
    NATS_URL_ENV,
    STREAM_OF_TYPE,
    Topology,
    connect,
    ensure_streams,
    publish_many,
)
from service.events.lake import EventLake
from service.events.models import EVENT_ADAPTER, Event
from service.settings import ENV_VARS, Settings

GOAL_EVENTS_PER_S = 5_000
REPO = Path(__file__).resolve().parents[1]


def simulated_events(count: int) -> list[Event]:
    # ~200 events per simulated user over 28 days: enough users for `count`.
    world = World(users=count // 150 + 10, days=28, seed=7, end=datetime(2026, 11, 20, tzinfo=UTC))
    events = list(itertools.islice(world.events(), count))
    if len(events) < count:
        raise SystemExit(f"the world made only {len(events)} events")
    # A live stream arrives in time order, so a batch spans minutes of every user, not one
    # user's month: the consumer writes one file per event type and UTC day of a batch.
    return sorted(events, key=lambda e: e.timestamp)


def with_duplicates(events: list[Event], fraction: float) -> list[Event]:
    """Every (1/fraction)-th event twice in a row: a producer retrying a publish."""
    if fraction <= 0:
        return events
    every = max(1, round(1 / fraction))
    return [copy for i, e in enumerate(events) for copy in ([e, e] if i % every == 0 else [e])]


@asynccontextmanager
async def namespace(url: str) -> AsyncIterator[tuple[JetStreamContext, Topology]]:
    """Fresh streams in a namespace of their own, deleted afterwards."""
    nc = await connect(url, name="tipml-bench-ingest")
    topology = Topology(namespace=f"bench{uuid.uuid4().hex[:8]}")
    js = nc.jetstream()
    try:
        await ensure_streams(js, topology)
        yield js, topology
    finally:
        for root in (*INTAKE_STREAMS, "dlq"):
            with suppress(NotFoundError):
                await js.delete_stream(topology.stream_name(root))
        await nc.close()


async def publish_phase(url: str, stream: list[Event]) -> tuple[float, int, int]:
    async with namespace(url) as (js, topology):
        started = time.perf_counter()
        report = await publish_many(js, stream, topology)
        return time.perf_counter() - started, report.stored, report.duplicates


async def ours_phase(
    url: str, stream: list[Event], unique: int, batch: int
) -> tuple[float, int, int]:
    """Seconds end to end, then (distinct, raw) lines read back from the log."""
    home = Path(tempfile.mkdtemp(prefix="tipml-bench-ingest-"))
    try:
        async with namespace(url) as (js, topology):
            env = os.environ | {ENV_VARS["home"]: str(home), NATS_URL_ENV: url}
            command = [sys.executable, "-m", "tipml.consume_cli", "--namespace"]
            args = [topology.namespace, "--batch", str(batch), "--max-messages", str(unique)]
            consumer = subprocess.Popen(
                [*command, *args],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            await subscribed(js, topology)
            started = time.perf_counter()
            await publish_many(js, stream, topology)
            output, _ = await asyncio.to_thread(consumer.communicate, timeout=300)
            seconds = time.perf_counter() - started
            if consumer.returncode != 0:
                raise SystemExit(f"consumer failed:\n{output.decode()}")
        lake = EventLake(Settings(home=home).events_location)
        distinct = sum(1 for _ in lake.records())
        raw = sum(
            pq.read_metadata(path).num_rows
            for kind in lake.types()
            for day in lake.days(kind)
            for path in lake.day_files(kind, day)
        )
        return seconds, distinct, raw
    finally:
        shutil.rmtree(home, ignore_errors=True)


def consumer_rate(
    events: int = 50_000, batch: int = 500, duplicates: float = 0.05, url: str | None = None
) -> tuple[float, int]:
    """The `ours` phase on its own, for other benchmarks: events/s end to end for one batch
    size, and the distinct events read back from the lake."""
    url = url or os.environ.get(NATS_URL_ENV) or DEFAULT_NATS_URL
    stream = with_duplicates(simulated_events(events), duplicates)
    seconds, distinct, _ = asyncio.run(ours_phase(url, stream, events, batch))
    return events / seconds, distinct


async def subscribed(js: JetStreamContext, topology: Topology, timeout: float = 30) -> None:
    """Wait until the consumer process has its durable consumers on both streams."""
    deadline = time.monotonic() + timeout
    for root in INTAKE_STREAMS:
        while True:
            try:
                info = await js.consumer_info(
                    topology.stream_name(root), topology.consumer_name(root)
                )
                if info.num_waiting > 0:  # a pull request is waiting: it is fetching
                    break
            except NotFoundError:
                pass  # the consumer has not created its durable yet: keep polling
            if time.monotonic() > deadline:
                raise SystemExit("the consumer process did not subscribe in time")
            await asyncio.sleep(0.05)


async def naive_phase(url: str, events: list[Event], count: int) -> float:
    """One fetch, one fsynced append and one ack per message; seconds for `count` of them."""
    signals = [e for e in events if STREAM_OF_TYPE[e.type] == "signals"][:count]
    home = Path(tempfile.mkdtemp(prefix="tipml-bench-naive-"))
    try:
        async with namespace(url) as (js, topology):
            await publish_many(js, signals, topology)
            stream = topology.stream_name("signals")
            config = ConsumerConfig(
                durable_name="naive",
                ack_policy=AckPolicy.EXPLICIT,
                filter_subject=topology.stream_subjects("signals"),
                ack_wait=30,
            )
            await js.add_consumer(stream, config)
            sub = await js.pull_subscribe_bind(durable="naive", stream=stream)
            log = EventLake(home, writer_id="naive")
            started = time.perf_counter()
            for _ in range(len(signals)):
                (msg,) = await sub.fetch(1, timeout=5)
                log.append([EVENT_ADAPTER.validate_json(msg.data)])
                await msg.ack()
            seconds = time.perf_counter() - started
            await sub.unsubscribe()
        if sum(1 for _ in EventLake(home).records()) != len(signals):
            raise SystemExit("the naive consumer lost events")
        return seconds
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def run(
    url: str, count: int, batches: list[int], duplicates: float, naive_count: int
) -> None:
    nc = await connect(url, name="tipml-bench-ingest")
    version = nc.connected_server_version
    version_text = f"{version.major}.{version.minor}.{version.patch}"
    await nc.close()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"NATS {version_text} at {url}; {os.cpu_count()} CPUs, load average {load}")
    events = simulated_events(count)
    stream = with_duplicates(events, duplicates)
    mix = ", ".join(f"{t} {n}" for t, n in sorted(Counter(e.type for e in events).items()))
    print(f"{count} simulator events ({mix}) + {len(stream) - count} published twice\n")
    print(f"{'phase':<9}{'batch':>6}{'events/s':>10}{'seconds':>9}  check")

    seconds, stored, dropped = await publish_phase(url, stream)
    publish_rate = len(stream) / seconds
    ok = "ok" if stored == count else "WRONG"
    print(
        f"{'publish':<9}{'-':>6}{publish_rate:>10.0f}{seconds:>9.2f}  "
        f"{stored} stored, {dropped} dropped as duplicates by the server ({ok})"
    )

    rates: dict[int, float] = {}
    for batch in batches:
        seconds, distinct, raw = await ours_phase(url, stream, count, batch)
        rates[batch] = count / seconds
        ok = "ok" if distinct == count else "WRONG"
        print(
            f"{'ours':<9}{batch:>6}{rates[batch]:>10.0f}{seconds:>9.2f}  "
            f"log: {distinct} distinct events, {raw} lines ({ok})"
        )

    seconds = await naive_phase(url, events, naive_count)
    naive_rate = naive_count / seconds
    print(f"{'naive':<9}{1:>6}{naive_rate:>10.0f}{seconds:>9.2f}  one fetch+fsync+ack each")

    best = max(rates, key=lambda b: rates[b])
    print(
        f"\nours (batch {best}) / naive: {rates[best] / naive_rate:.1f}x; "
        f"ours / raw publish: {rates[best] / publish_rate:.2f}"
    )
    met = "MET" if rates[best] >= GOAL_EVENTS_PER_S else "NOT MET"
    print(f"goal: >= {GOAL_EVENTS_PER_S} events/s end to end: {met} ({rates[best]:.0f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--duplicates", type=float, default=0.05)
    parser.add_argument("--naive-events", type=int, default=3_000)
    args = parser.parse_args()
    url = os.environ.get(NATS_URL_ENV) or DEFAULT_NATS_URL
    asyncio.run(run(url, args.events, args.batch, args.duplicates, args.naive_events))


if __name__ == "__main__":
    main()
