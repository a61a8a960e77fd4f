"""Shadow scoring: the challenger scores live requests off the hot path, for the gate.

The request thread only enqueues the model rows it already built and the champion's scores
(never blocking: a full queue drops the shadow, not the request). One background thread
scores whatever has queued in a single challenger call, and appends both models' scores,
keyed by request id, to the shadow log in a single write: per request, the shadow costs a
queue put on the hot path and a share of one batched prediction off it.
"""

import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, TypeAdapter

from service.events.log import EventLog
from service.scoring.model_registry import LoadedScorer

log = logging.getLogger(__name__)
QUEUE_SIZE = 10_000
# Small, frequent batches: one large batch holds the GIL long enough to show in /score's p99.
BATCH_REQUESTS = 100
BATCH_WAIT_S = 0.1


class ShadowRecord(BaseModel):
    """One request scored by both models; `event_id` is the request id."""

    type: Literal["shadow_score"] = "shadow_score"
    event_id: str
    timestamp: datetime
    user_id: str
    tip_ids: list[str]
    champion_version: str
    champion_scores: list[float]
    challenger_version: str
    challenger_scores: list[float]


SHADOW_SCHEMA: TypeAdapter[ShadowRecord] = TypeAdapter(ShadowRecord)


def shadow_log(root: Path, writer_id: str | None = None) -> EventLog:
    """The shadow log: an event log of ShadowRecords."""
    return EventLog(root, writer_id=writer_id, schema=SHADOW_SCHEMA)


@dataclass(frozen=True)
class _Job:
    request_id: str
    user_id: str
    tip_ids: list[str]
    rows: np.ndarray  # the champion's model rows for this request
    champion_scores: np.ndarray
    at: datetime


class ShadowScorer:
    def __init__(self, challenger: LoadedScorer, champion_version: str, root: Path) -> None:
        self.challenger = challenger
        self.champion_version = champion_version
        self.log = shadow_log(root, writer_id=f"shadow-{threading.get_native_id()}")
        self.dropped = 0
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
        self._thread.start()

    def submit(
        self,
        request_id: str,
        user_id: str,
        tip_ids: list[str],
        rows: np.ndarray,
        champion_scores: np.ndarray,
    ) -> None:
        job = _Job(request_id, user_id, tip_ids, rows, champion_scores, datetime.now(UTC))
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.dropped += 1

    def _next_batch(self) -> tuple[list[_Job], bool]:
        """Queued jobs (waiting up to BATCH_WAIT_S after the first); True once closed."""
        first = self._queue.get()
        if first is None:
            return [], True
        batch, deadline = [first], time.monotonic() + BATCH_WAIT_S
        while len(batch) < BATCH_REQUESTS:
            try:
                job = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                break
            if job is None:
                return batch, True
            batch.append(job)
        return batch, False

    def _run(self) -> None:
        closed = False
        while not closed:
            batch, closed = self._next_batch()
            if batch:
                try:
                    self._score(batch)
                except Exception:  # the shadow must never take the service down
                    log.exception("shadow scoring failed for %d requests", len(batch))

    def _score(self, batch: list[_Job]) -> None:
        scores = self.challenger.accept_probability(np.vstack([job.rows for job in batch]))
        bounds = np.cumsum([len(job.rows) for job in batch])[:-1]
        self.log.append(
            ShadowRecord(
                event_id=job.request_id,
                timestamp=job.at,
                user_id=job.user_id,
                tip_ids=job.tip_ids,
                champion_version=self.champion_version,
                champion_scores=job.champion_scores.tolist(),
                challenger_version=self.challenger.version,
                challenger_scores=challenger.tolist(),
            )
            for job, challenger in zip(batch, np.split(scores, bounds), strict=True)
        )

    def close(self, timeout: float = 5.0) -> None:
        """Score what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout)
