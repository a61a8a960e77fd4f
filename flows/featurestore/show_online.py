"""Read what serving would read for a few users, with their last logged request context."""

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from feature_repo.bounds import UtcDatetime
from feature_repo.feature_services import tip_scorer_v1
from service.api.request import Id, RequestContext
from service.events.log import EventLog
from service.scoring.feature_store import open_store
from service.scoring.online_features import FeatureRead, OnlineFeatureReader
from service.settings import Settings


class OnlineShowParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    user_ids: list[Id] = Field(min_length=1, max_length=50)
    at: UtcDatetime | None = Field(default=None, description="Read time (default: now).")


def latest_contexts(log: EventLog, user_ids: set[str]) -> dict[str, RequestContext]:
    contexts: dict[str, RequestContext] = {}
    for record in log.records(types=frozenset({"impression"})):
        if record["user_id"] in user_ids:
            contexts[record["user_id"]] = RequestContext.model_validate(record["context"])
    return contexts


def read_online(settings: Settings, params: OnlineShowParams) -> dict[str, FeatureRead]:
    at = params.at or datetime.now(UTC)
    contexts = latest_contexts(EventLog(settings.events_dir), set(params.user_ids))
    reader = OnlineFeatureReader(open_store(settings), tip_scorer_v1.name)
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
