"""Shadow scoring: the challenger scores live requests off the hot path, for the gate.

The request thread only enqueues (never blocks: a full queue drops the shadow, not the
request); one background thread scores with the challenger and appends both models' scores,
keyed by request id, to the shadow log that `tipml promote` summarises.
"""

import logging
import queue
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel

from service.eventlog import EventLog
from service.model_registry import LoadedScorer
from service.scoring import score_candidates

log = logging.getLogger(__name__)
QUEUE_SIZE = 10_000


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


class _Job(BaseModel):
    request_id: str
    user_id: str
    tip_ids: list[str]
    categories: list[str]
    profile: dict[str, float]
    context: dict[str, int]
    champion_scores: list[float]


class ShadowScorer:
    def __init__(self, challenger: LoadedScorer, champion_version: str, root: Path) -> None:
        self.challenger = challenger
        self.champion_version = champion_version
        self.log = EventLog(root, writer_id=f"shadow-{threading.get_native_id()}")
        self.dropped = 0
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
        self._thread.start()

    def submit(
        self,
        request_id: str,
        user_id: str,
        tip_ids: list[str],
        categories: list[str],
        profile: dict,
        context: dict,
        champion_scores: np.ndarray,
    ) -> None:
        job = _Job(
            request_id=request_id,
            user_id=user_id,
            tip_ids=tip_ids,
            categories=categories,
            profile=profile,
            context=context,
            champion_scores=champion_scores.tolist(),
        )
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                scores = score_candidates(
                    self.challenger.model, job.profile, job.context, job.categories
                )
                self.log.append(
                    [
                        ShadowRecord(
                            event_id=job.request_id,
                            timestamp=datetime.now(UTC),
                            user_id=job.user_id,
                            tip_ids=job.tip_ids,
                            champion_version=self.champion_version,
                            champion_scores=job.champion_scores,
                            challenger_version=self.challenger.version,
                            challenger_scores=scores.tolist(),
                        )
                    ]
                )
            except Exception:  # the shadow must never take the service down
                log.exception("shadow scoring failed for request %s", job.request_id)

    def close(self, timeout: float = 5.0) -> None:
        """Score what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout)
