"""The JetStream consumers behind `tipml consume`: intake streams -> the event lake.

One durable pull consumer per intake stream (`tipml-signals` on SIGNALS, `tipml-feedback` on
FEEDBACK), explicit ack. Each fetched batch is validated with EVENT_ADAPTER; the valid events
are appended to the event lake (service/events/lake.py: durable write-once files, one per
event type and day of the batch), and only then acked. So delivery is at least once: a batch
appended but not acked before a crash is delivered again and appended again, and the lake's
readers keep one copy per event_id.

What cannot become an event is never retried:

- not JSON, not a valid event, an unknown `type`: copied to the dead-letter stream with the
  reason, then terminated (`term()`); a failed copy leaves the message to be redelivered.
- a batch whose append fails (disk full, log not writable) is nak'ed with the consumer's
  backoff; after `max_deliver` deliveries the server stops and publishes a MAX_DELIVERIES
  advisory, on which the consumer fetches the message by stream sequence and copies it to the
  dead-letter stream, with the last error it saw. A MSG_TERMINATED advisory (a message some
  client terminated) is copied the same way; dead-letter copies carry
  `Nats-Msg-Id: <stream>:<sequence>`, so a message this consumer already copied is stored once.

Shutdown (the `stop` event, set by SIGTERM/SIGINT in the CLI): the fetch loops finish their
batch (append + ack) and stop, the pull subscriptions are unsubscribed, then the connection
is drained, which flushes the last acks. Draining with a live pull subscription would wait out
the whole drain timeout, hence the unsubscribe first.
"""

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, Header
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.events.jetstream import (
    DEAD_LETTER_REASON,
    DELIVERIES,
    INTAKE_STREAMS,
    ORIGINAL_MSG_ID,
    ORIGINAL_SEQUENCE,
    ORIGINAL_STREAM,
    ORIGINAL_SUBJECT,
    IntakeStream,
    Topology,
    connect,
    ensure_streams,
)
from service.events.lake import EventLake, open_lake
from service.events.models import EVENT_ADAPTER, Event
from service.settings import DEFAULT_NATS_URL, Namespace, NatsUrl, Settings

logger = logging.getLogger(__name__)

ADVISORY_PREFIX = "$JS.EVENT.ADVISORY.CONSUMER"
MAX_DELIVERIES = "MAX_DELIVERIES"
MSG_TERMINATED = "MSG_TERMINATED"
# Header values are one line; a validation error's text is not.
MAX_REASON_CHARS = 500
# Last append error per stream sequence, for the dead-letter reason; bounded in case
# advisories are missed (they are not persisted by the server).
MAX_REMEMBERED_ERRORS = 10_000


class ConsumeParams(BaseModel):
    """What `tipml consume` runs: which streams, how, and when to stop."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stream: Literal["signals", "feedback", "all"] = "all"
    batch: int = Field(default=500, ge=1, le=5000, description="Messages per fetch and append.")
    max_messages: int | None = Field(
        default=None, ge=1, description="Stop once at least this many messages were handled."
    )
    idle_exit: float | None = Field(
        default=None, gt=0, description="Stop after this many seconds without a message."
    )
    ack_wait: float = Field(
        default=30.0, gt=0, le=3600, description="Seconds to ack a first delivery; doubles after."
    )
    max_deliver: int = Field(default=5, ge=2, le=20, description="Deliveries before dead-letter.")
    fetch_timeout: float = Field(default=1.0, gt=0, le=30)
    namespace: Namespace = ""
    nats_url: NatsUrl = DEFAULT_NATS_URL

    @property
    def streams(self) -> tuple[IntakeStream, ...]:
        return INTAKE_STREAMS if self.stream == "all" else (self.stream,)

    @property
    def topology(self) -> Topology:
        return Topology(namespace=self.namespace)

    @property
    def backoff(self) -> list[float]:
        """Redelivery delays: ack_wait, then doubling; the server needs fewer than max_deliver."""
        return [self.ack_wait * 2**i for i in range(self.max_deliver - 1)]

    def retry_delay(self, deliveries: int) -> float:
        return self.backoff[min(deliveries, len(self.backoff)) - 1]

    def consumer_config(self, root: IntakeStream) -> ConsumerConfig:
        name = self.topology.consumer_name(root)
        return ConsumerConfig(
            name=name,
            durable_name=name,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            backoff=self.backoff,
            # Room for a few batches in flight plus nak'ed ones waiting out their delay.
            max_ack_pending=max(1000, 4 * self.batch),
            filter_subject=self.topology.stream_subjects(root),
        )


class StreamReport(BaseModel):
    stream: str
    consumer: str
    writer: str
    appended: int = 0
    dead_lettered: int = 0
    failed_batches: int = 0


class ConsumeReport(BaseModel):
    streams: list[StreamReport]
    handled: int
    seconds: float


class _Advisory(BaseModel):
    """The fields tipml reads from a consumer advisory (MAX_DELIVERIES, MSG_TERMINATED)."""

    stream: str
    stream_seq: int
    deliveries: int


def _one_line(text: str) -> str:
    return " ".join(text.split())[:MAX_REASON_CHARS]


def _rejection(exc: ValidationError) -> str:
    """Why a message is not an event, in one line: not JSON, or which fields are wrong."""
    errors = exc.errors(include_url=False, include_input=False)
    if errors[0]["type"] == "json_invalid":
        return _one_line(f"not JSON: {errors[0]['msg']}")
    fields = "; ".join(
        f"{'.'.join(str(part) for part in e['loc']) or 'body'}: {e['msg']}" for e in errors
    )
    return _one_line(f"not a valid event: {fields}")


def parse_event(data: bytes) -> Event | str:
    """The event a message holds, or why it holds none: one line for the dead letter."""
    try:
        return EVENT_ADAPTER.validate_json(data)
    except ValidationError as exc:
        return _rejection(exc)
    except Exception as exc:  # a validator's own failure costs this message, not the batch
        logger.error("validating a message raised %r", exc)
        return f"not a valid event: validation raised {type(exc).__name__}"


class _Progress:
    """Messages handled across the stream loops, for --max-messages and --idle-exit."""

    def __init__(self, params: ConsumeParams, stop: asyncio.Event) -> None:
        self._params = params
        self._stop = stop
        self.handled = 0
        self._last_message = time.monotonic()

    def budget(self) -> int:
        if self._params.max_messages is None:
            return self._params.batch
        return max(0, min(self._params.batch, self._params.max_messages - self.handled))

    def add(self, count: int) -> None:
        self.handled += count
        self._last_message = time.monotonic()
        if self.budget() == 0:
            self._stop.set()

    def check_idle(self) -> None:
        idle_exit = self._params.idle_exit
        idle = time.monotonic() - self._last_message
        if idle_exit is not None and idle >= idle_exit and not self._stop.is_set():
            logger.info("no message for %.1f s: stopping", idle_exit)
            self._stop.set()


class _StreamConsumer:
    """One durable pull consumer: fetch -> validate -> append -> ack, and its dead letters."""

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        root: IntakeStream,
        params: ConsumeParams,
        log: EventLake,
    ) -> None:
        self._nc = nc
        self._js = js
        self._root = root
        self._params = params
        self._log = log
        self._stream = params.topology.stream_name(root)
        self._consumer = params.topology.consumer_name(root)
        self._dead_letter_subject = params.topology.dead_letter_subject(root)
        self._last_errors: dict[int, str] = {}
        self._pull: JetStreamContext.PullSubscription | None = None
        self.report = StreamReport(
            stream=self._stream, consumer=self._consumer, writer=log.writer_id
        )

    async def subscribe(self) -> None:
        # Creates the durable consumer, or updates the fields a live consumer may change.
        await self._js.add_consumer(self._stream, self._params.consumer_config(self._root))
        for kind in (MAX_DELIVERIES, MSG_TERMINATED):
            subject = f"{ADVISORY_PREFIX}.{kind}.{self._stream}.{self._consumer}"
            await self._nc.subscribe(subject, cb=self._advised(kind))
        self._pull = await self._js.pull_subscribe_bind(durable=self._consumer, stream=self._stream)
        logger.info("consuming %s as %s", self._stream, self._consumer)

    async def unsubscribe(self) -> None:
        if self._pull is not None:
            await self._pull.unsubscribe()
            self._pull = None

    async def run(self, stop: asyncio.Event, progress: _Progress) -> None:
        """Fetch and handle batches until `stop`; the batch in hand is always finished."""
        assert self._pull is not None, "subscribe() first"
        try:
            while not stop.is_set() and (wanted := progress.budget()) > 0:
                try:
                    batch = await self._pull.fetch(wanted, timeout=self._params.fetch_timeout)
                except TimeoutError:  # nats-py raises its own subclass and asyncio's
                    progress.check_idle()
                    continue
                except nats.errors.Error as exc:
                    # Reconnecting, or a transient server error: try again, never crash.
                    logger.warning("fetch from %s failed: %r", self._stream, exc)
                    progress.check_idle()
                    await asyncio.sleep(self._params.fetch_timeout)
                    continue
                await self._handle(batch)
                progress.add(len(batch))
        finally:
            # However one stream's loop ends (stop, budget, an error), the others end too.
            stop.set()

    async def _handle(self, batch: list[Msg]) -> None:
        accepted: list[tuple[Msg, Event]] = []
        for msg in batch:
            event = parse_event(msg.data)
            if isinstance(event, str):
                await self._reject(msg, event)
            else:
                accepted.append((msg, event))
        if not accepted:
            return
        try:
            await asyncio.to_thread(self._log.append, [event for _, event in accepted])
        except OSError as exc:
            self.report.failed_batches += 1
            error = _one_line(f"append failed: {exc!r}")
            logger.warning("%s: %d events not appended: %s", self._stream, len(accepted), error)
            for msg, _ in accepted:
                self._remember(msg.metadata.sequence.stream, error)
                await self._settle(msg.nak(self._params.retry_delay(msg.metadata.num_delivered)))
            return
        for msg, _ in accepted:
            self._last_errors.pop(msg.metadata.sequence.stream, None)
            await self._settle(msg.ack())
        self.report.appended += len(accepted)

    async def _settle(self, ack: Awaitable[None]) -> None:
        """Send an ack or nak; if it is lost the message comes back, which the log absorbs."""
        try:
            await ack
        except nats.errors.Error as exc:
            logger.warning("%s: ack not sent: %r", self._stream, exc)

    def _remember(self, sequence: int, error: str) -> None:
        if len(self._last_errors) >= MAX_REMEMBERED_ERRORS:
            self._last_errors.pop(next(iter(self._last_errors)))
        self._last_errors[sequence] = error

    async def _reject(self, msg: Msg, reason: str) -> None:
        meta = msg.metadata
        logger.warning("%s seq %d dead-lettered: %s", self._stream, meta.sequence.stream, reason)
        try:
            await self._copy_to_dead_letters(
                subject=msg.subject,
                sequence=meta.sequence.stream,
                data=msg.data,
                headers=msg.headers,
                deliveries=meta.num_delivered,
                reason=reason,
            )
        except nats.errors.Error as exc:
            # Not terminated: it comes back after the delay and gets another try.
            logger.warning("%s: dead-letter copy failed: %r", self._stream, exc)
            await self._settle(msg.nak(self._params.retry_delay(meta.num_delivered)))
            return
        await self._settle(msg.term())

    async def _copy_to_dead_letters(
        self,
        *,
        subject: str,
        sequence: int,
        data: bytes,
        headers: dict[str, str] | None,
        deliveries: int,
        reason: str,
    ) -> None:
        dead_letter_headers = {
            Header.MSG_ID.value: f"{self._stream}:{sequence}",
            DEAD_LETTER_REASON: _one_line(reason),
            ORIGINAL_SUBJECT: subject,
            ORIGINAL_STREAM: self._stream,
            ORIGINAL_SEQUENCE: str(sequence),
            DELIVERIES: str(deliveries),
        }
        original_id = (headers or {}).get(Header.MSG_ID.value)
        if original_id:
            dead_letter_headers[ORIGINAL_MSG_ID] = _one_line(original_id)
        ack = await self._js.publish(self._dead_letter_subject, data, headers=dead_letter_headers)
        if not ack.duplicate:
            self.report.dead_lettered += 1

    def _advised(self, kind: str) -> Callable[[Msg], Awaitable[None]]:
        async def on_advisory(msg: Msg) -> None:
            # Runs in nats-py's subscription task: log failures, never raise.
            try:
                advisory = _Advisory.model_validate_json(msg.data)
                if kind == MAX_DELIVERIES:
                    last_error = self._last_errors.pop(advisory.stream_seq, None)
                    reason = f"max_deliver reached after {advisory.deliveries} deliveries" + (
                        f"; last error: {last_error}" if last_error else ""
                    )
                else:
                    reason = f"terminated by a client after {advisory.deliveries} deliveries"
                stored = await self._js.get_msg(advisory.stream, advisory.stream_seq)
                await self._copy_to_dead_letters(
                    subject=stored.subject or "",
                    sequence=advisory.stream_seq,
                    data=stored.data or b"",
                    headers=stored.headers,
                    deliveries=advisory.deliveries,
                    reason=reason,
                )
            except (ValidationError, nats.errors.Error) as exc:
                logger.warning("%s advisory %s not handled: %r", kind, msg.subject, exc)

        return on_advisory


def writer_id(stream: str) -> str:
    """The event-log writer of one stream's consumer in this process: one file each."""
    return f"nats-{stream}-{socket.gethostname()}-{os.getpid()}"


async def run_consumers(
    params: ConsumeParams, settings: Settings, stop: asyncio.Event | None = None
) -> ConsumeReport:
    """Consume the chosen intake streams into the event lake until `stop` is set.

    Also stops by itself after `params.max_messages` messages or `params.idle_exit` idle
    seconds. Creates the streams and durable consumers when missing.
    """
    stop = stop or asyncio.Event()
    started = time.monotonic()
    progress = _Progress(params, stop)
    nc = await connect(params.nats_url, name=f"tipml-consume-{os.getpid()}")
    consumers: list[_StreamConsumer] = []
    try:
        js = nc.jetstream()
        await ensure_streams(js, params.topology)
        for root in params.streams:
            log = open_lake(settings, writer_id(params.topology.stream_name(root)))
            consumers.append(_StreamConsumer(nc, js, root, params, log))
        for consumer in consumers:
            await consumer.subscribe()
        outcomes = await asyncio.gather(
            *(consumer.run(stop, progress) for consumer in consumers), return_exceptions=True
        )
        for consumer in consumers:
            await consumer.unsubscribe()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
    finally:
        if nc.is_connected:
            await nc.drain()
        else:
            await nc.close()
    return ConsumeReport(
        streams=[consumer.report for consumer in consumers],
        handled=progress.handled,
        seconds=time.monotonic() - started,
    )
