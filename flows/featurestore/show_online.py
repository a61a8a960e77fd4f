"""Read what serving would read for a few users, with their last logged request context.

Through the champion's FeatureService, as /score reads it; the latest scorer version's before
any champion exists (as in `tipml demo`, which shows features before it trains), or the one
asked for.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from feature_repo.bounds import UtcDatetime
from feature_repo.scorer_versions import LATEST, ScorerVersionName
from service.api.request import Id, RequestContext
from service.events.lake import EventLake, open_lake
from service.scoring.feature_store import open_store
from service.scoring.model_names import CHAMPION
from service.scoring.model_registry import check_servable, version_by_alias
from service.scoring.online_features import FeatureRead, OnlineFeatureReader
from service.settings import Settings
from service.tracking import registry_client

if TYPE_CHECKING:
    from feast import FeatureStore


class OnlineShowParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    user_ids: list[Id] = Field(min_length=1, max_length=50)
    at: UtcDatetime | None = Field(default=None, description="Read time (default: now).")
    feature_service: ScorerVersionName | None = Field(
        default=None,
        description="The scorer version to read (default: the champion's, as /score reads).",
    )


@dataclass(frozen=True)
class OnlineShow:
    feature_service: str
    reads: dict[str, FeatureRead]


def serving_feature_service(settings: Settings, store: "FeatureStore") -> str:
    """The champion's FeatureService, which /score reads (ModelRejected where serving would
    refuse the champion); LATEST before there is a champion (or a registry: a read does not
    create one)."""
    if not settings.has_registry:
        return LATEST
    champion = version_by_alias(registry_client(settings), CHAMPION)
    return check_servable(champion, store) if champion else LATEST


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


def read_online(settings: Settings, params: OnlineShowParams) -> OnlineShow:
    at = params.at or datetime.now(UTC)
    store = open_store(settings)
    feature_service = params.feature_service or serving_feature_service(settings, store)
    contexts = latest_contexts(open_lake(settings), set(params.user_ids))
    reader = OnlineFeatureReader(store, feature_service)
    reads = {}
    for user_id in params.user_ids:
        logged = contexts.get(user_id)
        context = (
            logged.model_copy(update={"timestamp": at})
            if logged
            else RequestContext(timestamp=at, timezone="UTC")
        )
        reads[user_id] = reader.read(user_id, context, now=at)
    return OnlineShow(feature_service, reads)
