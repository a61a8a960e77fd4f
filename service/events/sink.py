"""Where the service's own events go: the event lake, or JetStream and its consumer.

    TIPML_EVENT_SINK=local       the default, no servers: the service appends to the lake
    TIPML_EVENT_SINK=jetstream   the service publishes to TIPML_NATS_URL, in the streams of
                                 TIPML_NATS_NAMESPACE; `tipml consume` is the lake's only writer

The service records two kinds of event, and a failure to record them is answered differently:

- Feedback (`/feedback`) is the caller's: the recommender holds it and retries. `append`
  makes it durable before it returns, or raises DependencyFailed, and the caller gets a 503
  naming the dependency: "retry with the same event_id". Nothing is kept on this replica. A
  local copy answered with 200 would live on one disk, out of every reader's sight until it
  was sent on; the caller's copy is the one that survives this replica. The retry is safe
  because of the event_id: JetStream stores a `Nats-Msg-Id` once within its duplicate
  window, and the lake's readers keep one copy per event_id whatever the window.
- A decision (`/generate` with an experiment) is the service's own: its tip is already
  written, so the request must not fail, and nobody else holds the event to retry it.
  `record` never raises. In jetstream mode a decision whose publish fails is appended to
  this replica's spool, and what failed is returned for the response's
  `dependency_fallbacks`; only when the spool cannot take it either is it lost (both are
  reported). In local mode the spool would share the lake's disk, so there is none.

What is durable when:

- local: an append that returned is in the lake (fsynced and renamed into place: lake.py).
- jetstream: a publish that returned has the server's PubAck, so the event is in its stream;
  the consumer acks it only once it is in the lake. A spooled decision is in a small event
  lake of its own under `data/spool/`, written as the lake writes (fsynced before `record`
  returns). A replay task on each worker publishes every spool file with its events' own
  event_ids as msg ids, and deletes a file only once each of its events has a PubAck; the
  files of a worker that died are replayed by any worker on the same data dir.
- A crash loses nothing that was acknowledged: feedback without its 200 is retried by the
  caller, and a decision is in the stream or the spool before its response is sent. It may
  duplicate: a replay whose PubAck was lost, two workers replaying the same file. The msg
  id and the lake's readers count each such event once.

A dead NATS fails fast. Each worker connects at start-up within CONNECT_TIMEOUT_S, or starts
without it and keeps trying in the background. Every publish from a request goes through a
Breaker (service/circuit.py) with PUBLISH_BUDGET_S, and while the connection is down a
publish fails at once instead of waiting in nats-py's reconnect buffer.
"""

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import nats.errors
import pyarrow as pa
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from pydantic import ValidationError

from service.circuit import Breaker, DependencyFailed
from service.events.jetstream import NatsUnavailable, Topology, connect, ensure_streams, publish
from service.events.lake import EventLake, open_lake
from service.events.models import Event
from service.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
EVENT_LOG = "event_log"
JETSTREAM = "jetstream"
SPOOL = "event_spool"
# An fsync on a busy disk takes tens of milliseconds; seconds means the disk is in trouble.
EVENT_LOG_BUDGET_S = 2.0
# A PubAck takes a millisecond or two; a second means the server or the network is in trouble.
PUBLISH_BUDGET_S = 1.0
# What a worker's readiness waits for NATS, at most, before it starts without it.
CONNECT_TIMEOUT_S = 2.0
# How often a worker retries its connection and looks for spooled events to send.
REPLAY_INTERVAL_S = 1.0


class EventSink(Protocol):
    def start(self) -> None:
        """Connect, at worker start-up: bounded, and the worker starts whatever happens."""

    def append(self, event: Event) -> None:
        """Make `event` durable, or raise DependencyFailed: for events the caller retries."""

    def record(self, event: Event) -> dict[str, str]:
        """Keep `event` however this sink can; dependency -> why it failed, for the response."""

    def close(self) -> None: ...


def _failures(append: Callable[[Event], None], event: Event) -> dict[str, str]:
    try:
        append(event)
    except DependencyFailed as exc:
        return {exc.dependency: exc.reason}
    return {}


class LocalSink:
    """The service appends to the lake itself."""

    def __init__(self, settings: Settings, writer_id: str) -> None:
        self._lake = open_lake(settings, writer_id)
        self._breaker = Breaker(EVENT_LOG, (OSError,), budget=EVENT_LOG_BUDGET_S)

    def start(self) -> None:
        """Nothing to connect: the first append creates the lake's directories."""

    def append(self, event: Event) -> None:
        self._breaker.call(self._lake.append, [event])

    def record(self, event: Event) -> dict[str, str]:
        return _failures(self.append, event)

    def close(self) -> None:
        """Nothing held open: every append closed its files."""


class Spool:
    """Events not yet published: write-once Parquet files in the lake's layout, each deleted
    once all its events are in the stream."""

    def __init__(self, directory: Path, writer_id: str) -> None:
        self._lake = EventLake(directory, writer_id)

    def append(self, events: Sequence[Event]) -> None:
        self._lake.append(events)

    def files(self) -> list[str]:
        return self._lake.files()

    def read(self, path: str) -> list[Event]:
        """One file's events, as written."""
        return self._lake.file_events(path)

    def delete(self, path: str) -> None:
        """Delete a replayed file; one another worker replayed and deleted first is gone."""
        with contextlib.suppress(FileNotFoundError):
            self._lake.storage.delete([path])


class JetStreamSink:
    """Publishes to JetStream from a thread of its own, and spools what it could not publish.

    The NATS client lives on this sink's own event loop, on a daemon thread: requests publish
    from any thread (sync endpoints run on BentoML's, /generate's decisions on anyio's) and
    the replay task runs there too, whatever the web server's loop is doing.
    """

    def __init__(self, settings: Settings, writer_id: str) -> None:
        self._url = settings.nats_url
        self._topology = Topology(namespace=settings.nats_namespace)
        self._name = f"tipml-{writer_id}"
        self._spool = Spool(settings.spool_dir, writer_id)
        self._breaker = Breaker(JETSTREAM, (OSError, nats.errors.Error), budget=PUBLISH_BUDGET_S)
        self._spool_breaker = Breaker(SPOOL, (OSError,), budget=EVENT_LOG_BUDGET_S)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="event-sink", daemon=True
        )
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._keeper: asyncio.Task[None] | None = None
        # Spool files that cannot be read: left in place for a person, warned about once.
        self._unreadable: set[str] = set()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def start(self) -> None:
        self._thread.start()
        self._run(self._connect())
        self._keeper = self._run(self._spawn_keeper())

    async def _spawn_keeper(self) -> asyncio.Task[None]:
        return asyncio.create_task(self._keep_up())

    async def _connect(self) -> None:
        """One bounded try; creates the streams, so events are kept before any consumer runs."""
        nc = None
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                nc = await connect(
                    self._url, self._name, CONNECT_TIMEOUT_S, buffer_while_reconnecting=False
                )
                js = nc.jetstream(timeout=PUBLISH_BUDGET_S)
                await ensure_streams(js, self._topology)
        except (OSError, nats.errors.Error) as exc:  # TimeoutError is an OSError
            log.warning("jetstream sink: not connected to %s (%r); retrying", self._url, exc)
            if nc is not None:
                await nc.close()
            return
        log.info("jetstream sink: connected to %s", self._url)
        self._nc, self._js = nc, js

    async def _keep_up(self) -> None:
        """Until closed: connect if never connected (nats-py reconnects a connection it had),
        and send what the spool holds."""
        while True:
            await asyncio.sleep(REPLAY_INTERVAL_S)
            try:
                if self._js is None:
                    await self._connect()
                if self._js is not None:
                    await self._replay(self._js)
            except Exception:  # a round's bug must not end replays for the worker's life
                log.exception("jetstream sink: spool replay failed; trying again")

    async def _replay(self, js: JetStreamContext) -> None:
        for path in await asyncio.to_thread(self._spool.files):
            if path in self._unreadable:
                continue
            try:
                events = await asyncio.to_thread(self._spool.read, path)
            except FileNotFoundError:
                continue  # another worker replayed it
            except (OSError, pa.ArrowException, ValidationError) as exc:
                self._unreadable.add(path)
                log.error("jetstream sink: spool file %s unreadable, left: %r", path, exc)
                continue
            try:
                for event in events:
                    await publish(js, event, self._topology)
            except (OSError, nats.errors.Error) as exc:
                log.info("jetstream sink: spool replay waits for NATS (%r)", exc)
                return
            await asyncio.to_thread(self._spool.delete, path)
            log.info("jetstream sink: %d spooled events published from %s", len(events), path)

    def _publish(self, event: Event) -> None:
        js = self._js
        if js is None:
            raise NatsUnavailable(f"not connected to {self._url}")
        self._run(publish(js, event, self._topology))

    def append(self, event: Event) -> None:
        self._breaker.call(self._publish, event)

    def _spool_append(self, event: Event) -> None:
        self._spool_breaker.call(self._spool.append, [event])

    def record(self, event: Event) -> dict[str, str]:
        failures = _failures(self.append, event)
        if failures:
            failures |= _failures(self._spool_append, event)
            if SPOOL in failures:
                log.error("jetstream sink: %s neither published nor spooled", event.event_id)
        return failures

    def close(self) -> None:
        if self._thread.is_alive():
            self._run(self._stop())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()

    async def _stop(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        if self._nc is not None:
            await self._nc.close()


def open_sink(settings: Settings, writer_id: str) -> EventSink:
    """The settings' event sink; `writer_id` names this worker's files."""
    if settings.event_sink == "jetstream":
        return JetStreamSink(settings, writer_id)
    return LocalSink(settings, writer_id)
