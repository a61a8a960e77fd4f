"""Read what serving would read for a few users, with their last logged request context."""

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from feature_repo.bounds import UtcDatetime
from feature_repo.scorer_versions import LATEST
from service.api.request import Id, RequestContext
from service.events.lake import EventLake, open_lake
from service.scoring.feature_store import open_store
from service.scoring.online_features import FeatureRead, OnlineFeatureReader
from service.settings import Settings


class OnlineShowParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    user_ids: list[Id] = Field(min_length=1, max_length=50)
    at: UtcDatetime | None = Field(default=None, description="Read time (default: now).")


def latest_contexts(lake: EventLake, user_ids: set[str]) -> dict[str, RequestContext]:
    """Each user's last logged request context (of their latest impression)."""
    shown = lake.read("impression", columns=["user_id", "timestamp", "context"])
    mine = shown.filter(pc.is_in(shown["user_id"], pa.array(sorted(user_ids), pa.string())))
    latest: dict[str, tuple[object, dict]] = {}
    for user, when, context in zip(
        mine["user_id"].to_pylist(),
        mine["timestamp"].to_pylist(),
        mine["context"].to_pylist(),
        strict=True,
    ):
        if user not in latest or when > latest[user][0]:
            latest[user] = (when, context)
    return {user: RequestContext.model_validate(c) for user, (_, c) in latest.items()}


def read_online(settings: Settings, params: OnlineShowParams) -> dict[str, FeatureRead]:
    at = params.at or datetime.now(UTC)
    contexts = latest_contexts(open_lake(settings), set(params.user_ids))
    reader = OnlineFeatureReader(open_store(settings), LATEST)
    reads = {}
    for user_id in params.user_ids:
        logged = contexts.get(user_id)
        context = (
            logged.model_copy(update={"timestamp": at})
            if logged
            else RequestContext(timestamp=at, timezone="UTC")
        )
        reads[user_id] = reader.read(user_id, context, now=at)
    return reads
