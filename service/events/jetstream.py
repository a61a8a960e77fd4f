"""Event intake over NATS JetStream: stream and subject names, the streams, and the publisher.

Producers publish each event to `signals.<type>` (task events, impressions) or
`feedback.<type>` (feedback, decisions) with header `Nats-Msg-Id: <event_id>`; both streams
keep a duplicate window, so the server stores an event published twice inside it once.
Messages the consumers cannot take go to the dead-letter stream `DLQ` on `dlq.<stream>`, with
the reason and the original subject and stream sequence in headers. The consumers that fill
the event log are in `service/events/consumer.py`.

`ensure_streams` creates the three streams when missing and updates one whose configuration
drifted, so every consumer start (and every publisher that wants to) may call it.

A `Topology` with a namespace (`t1`: streams `SIGNALS_t1`, subjects `t1.signals.>`) keeps tests
and benchmarks apart from the live streams on the same server.
"""

import asyncio
import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Literal

from nats.aio.client import DEFAULT_PENDING_SIZE
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, Header, PubAck, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from pydantic import BaseModel, ConfigDict

from service.events.models import Event
from service.settings import DEFAULT_NATS_URL as DEFAULT_NATS_URL  # re-exported for perf/
from service.settings import ENV_VARS, Namespace

logger = logging.getLogger(__name__)

NATS_URL_ENV = ENV_VARS["nats_url"]

# Headers on a dead-lettered copy: why, and where the original is.
DEAD_LETTER_REASON = "Tipml-Dead-Letter-Reason"
ORIGINAL_SUBJECT = "Tipml-Original-Subject"
ORIGINAL_STREAM = "Tipml-Original-Stream"
ORIGINAL_SEQUENCE = "Tipml-Original-Sequence"
ORIGINAL_MSG_ID = "Tipml-Original-Msg-Id"
DELIVERIES = "Tipml-Deliveries"

# A re-publish inside this window (a producer's retry) is stored once.
DUPLICATE_WINDOW = timedelta(minutes=2)
# The intake streams are a buffer for consumers that are down, not the record: that is the log.
EVENT_RETENTION = timedelta(days=7)
DEAD_LETTER_RETENTION = timedelta(days=30)

IntakeStream = Literal["signals", "feedback"]
INTAKE_STREAMS: tuple[IntakeStream, ...] = ("signals", "feedback")
StreamRoot = IntakeStream | Literal["dlq"]
STREAM_OF_TYPE: dict[str, IntakeStream] = {
    "task_created": "signals",
    "task_completed": "signals",
    "impression": "signals",
    "feedback": "feedback",
    "decision": "feedback",
}


class Topology(BaseModel):
    """Stream, subject and durable consumer names, optionally in a namespace."""

    model_config = ConfigDict(frozen=True)

    namespace: Namespace = ""

    def _subject_root(self, root: StreamRoot) -> str:
        return f"{self.namespace}.{root}" if self.namespace else root

    def stream_name(self, root: StreamRoot) -> str:
        name = root.upper()
        return f"{name}_{self.namespace}" if self.namespace else name

    def stream_subjects(self, root: StreamRoot) -> str:
        return f"{self._subject_root(root)}.>"

    def subject_for(self, event_type: str) -> str:
        """`signals.impression`, `feedback.decision`, ...: where an event of this type goes."""
        return f"{self._subject_root(STREAM_OF_TYPE[event_type])}.{event_type}"

    def dead_letter_subject(self, root: IntakeStream) -> str:
        return f"{self._subject_root('dlq')}.{root}"

    def consumer_name(self, root: IntakeStream) -> str:
        return f"tipml-{root}"

    def stream_config(self, root: StreamRoot) -> StreamConfig:
        retention = DEAD_LETTER_RETENTION if root == "dlq" else EVENT_RETENTION
        return StreamConfig(
            name=self.stream_name(root),
            subjects=[self.stream_subjects(root)],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=retention.total_seconds(),
            duplicate_window=DUPLICATE_WINDOW.total_seconds(),
        )


def _drifted(current: StreamConfig, desired: StreamConfig) -> list[str]:
    """The fields `ensure_streams` owns whose live value differs from the desired one."""
    fields = ("retention", "storage", "discard", "max_age", "duplicate_window")
    drifted = [name for name in fields if getattr(current, name) != getattr(desired, name)]
    if sorted(current.subjects or []) != sorted(desired.subjects or []):
        drifted.append("subjects")
    return drifted


async def ensure_streams(js: JetStreamContext, topology: Topology) -> dict[str, str]:
    """Create the intake and dead-letter streams if missing, update drifted ones.

    Returns stream name -> "created", "updated" or "unchanged". Safe to call from several
    processes at once: creating a stream that exists with the same config is a no-op.
    """
    actions: dict[str, str] = {}
    for root in (*INTAKE_STREAMS, "dlq"):
        desired = topology.stream_config(root)
        name = str(desired.name)
        try:
            current = (await js.stream_info(name)).config
        except NotFoundError:
            await js.add_stream(desired)
            actions[name] = "created"
            continue
        drifted = _drifted(current, desired)
        if drifted:
            logger.info("stream %s drifted (%s): updating", name, ", ".join(drifted))
            await js.update_stream(desired)
        actions[name] = "updated" if drifted else "unchanged"
    return actions


class NatsUnavailable(ConnectionError):
    """No NATS server answered at the URL in time."""


async def connect(
    url: str, name: str, timeout: float = 10.0, buffer_while_reconnecting: bool = True
) -> NATS:
    """Connect, giving up after `timeout` seconds; once connected, reconnect for ever.

    A long-running consumer should outlive a NATS restart, but a wrong URL should fail fast.
    Without `buffer_while_reconnecting` a publish while the server is away fails at once,
    instead of waiting in nats-py's buffer to be sent on reconnect: for a publisher that must
    answer its caller now, and must not have a publish it reported as failed land later.
    """

    nc = NATS()
    # While the server is down every reconnect attempt fails the same way: say it once.
    last_error: list[str] = []

    async def on_error(exc: Exception) -> None:
        if [repr(exc)] != last_error:
            last_error[:] = [repr(exc)]
            logger.warning("nats: %r", exc)

    async def on_disconnected() -> None:
        if not nc.is_closed:  # closing disconnects too; that is no news
            logger.warning("nats: disconnected from %s; reconnecting", url)

    async def on_reconnected() -> None:
        last_error.clear()
        logger.info("nats: reconnected to %s", url)

    try:
        await asyncio.wait_for(
            nc.connect(
                url,
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
                # 0 is nats-py's "no buffer": publishing while disconnected raises at once.
                pending_size=DEFAULT_PENDING_SIZE if buffer_while_reconnecting else 0,
            ),
            timeout,
        )
    except TimeoutError as exc:
        raise NatsUnavailable(f"no NATS server answered at {url} within {timeout:g} s") from exc
    return nc


def _payload(event: Event) -> tuple[bytes, dict[str, str]]:
    return event.model_dump_json().encode(), {Header.MSG_ID.value: event.event_id}


async def publish(js: JetStreamContext, event: Event, topology: Topology | None = None) -> PubAck:
    """Publish one event to its subject with `Nats-Msg-Id = event_id`; wait for the PubAck.

    `PubAck.duplicate` is true when the server already had this event_id in its window.
    """
    data, headers = _payload(event)
    subject = (topology or Topology()).subject_for(event.type)
    return await js.publish(subject, data, headers=headers)


class PublishReport(BaseModel):
    stored: int
    duplicates: int


async def publish_many(
    js: JetStreamContext,
    events: Iterable[Event],
    topology: Topology | None = None,
    timeout: float = 30.0,
) -> PublishReport:
    """Publish events pipelined (up to the context's async window in flight), all acked.

    Raises the first failed publish, or TimeoutError when the acks have not all come back
    within `timeout` seconds of the last publish.
    """
    topology = topology or Topology()
    pending: list[asyncio.Future[PubAck]] = []
    for event in events:
        data, headers = _payload(event)
        pending.append(
            await js.publish_async(topology.subject_for(event.type), data, headers=headers)
        )
    acks = await asyncio.wait_for(asyncio.gather(*pending), timeout)
    duplicates = sum(1 for ack in acks if ack.duplicate)
    return PublishReport(stored=len(acks) - duplicates, duplicates=duplicates)
