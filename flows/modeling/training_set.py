"""The scorer's training set: logged impressions -> point-in-time features -> model rows.

Each impression was logged with the request context the recommender sent, so the training
read is the serving read replayed: FeatureService `tip_scorer_v1` through
get_historical_features (profile as of the impression, context from the logged request),
the shared TTL/fallback rule, and the shared model-row assembly.
"""

from datetime import datetime

import pandas as pd
from feast import FeatureStore

from feature_repo.context_features import CONTEXT_FEATURES
from feature_repo.freshness import resolve_profiles
from feature_repo.profile_features import PROFILE_AS_OF, PROFILE_FEATURES
from service.api.request import RequestContext
from service.events.log import EventLog
from service.events.models import ATTRIBUTION_WINDOW
from service.scoring.feature_store import offline_reads
from service.scoring.model_inputs import MODEL_FEATURES, model_frame
from service.settings import Settings

REQUEST_FIELDS = ("request_timestamp", "timezone", "tasks_json")
META_COLUMNS = (
    "user_id",
    "event_timestamp",
    "tip_id",
    "category",
    "prompt_version",
    "timezone",
    "oracle_p_accept",
    "accepted",
)


def labelled_impressions(log: EventLog, as_of: datetime) -> pd.DataFrame:
    """Impressions before `as_of` whose outcome is known by then, with their request data.

    accepted = 1 when an "accepted" reaction arrived before `as_of`; 0 for any other reaction,
    or for silence once the attribution window has closed. Impressions still inside their
    window with no reaction yet are left out: their label is not known.
    """
    impressions: list[dict] = []
    reactions: dict[str, tuple[str, str]] = {}
    for record in log.records(types=frozenset({"impression", "feedback"})):
        if record["type"] == "feedback":
            reactions.setdefault(record["tip_id"], (record["reaction"], record["timestamp"]))
            continue
        context = RequestContext.model_validate(record["context"])
        impressions.append(
            {
                "user_id": record["user_id"],
                "event_timestamp": record["timestamp"],
                "tip_id": record["tip_id"],
                "category": record["category"],
                "prompt_version": record["prompt_version"],
                "oracle_p_accept": record.get("oracle_p_accept"),
                **context.feast_request_data(),
            }
        )
    columns = [c for c in META_COLUMNS if c not in ("accepted", "timezone")]
    frame = pd.DataFrame(impressions, columns=[*columns, *REQUEST_FIELDS])
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True, format="ISO8601")
    frame = frame[frame["event_timestamp"] < as_of]

    reaction = frame["tip_id"].map(lambda tip: reactions.get(tip, (None, None)))
    kind = reaction.map(lambda r: r[0])
    when = pd.to_datetime(reaction.map(lambda r: r[1]), utc=True, format="ISO8601")
    known = when < as_of
    frame["accepted"] = ((kind == "accepted") & known).astype("int64")
    settled = known | (frame["event_timestamp"] + ATTRIBUTION_WINDOW <= as_of)
    return frame[settled].reset_index(drop=True)


def build_training_set(
    store: FeatureStore, settings: Settings, impressions: pd.DataFrame, feature_service: str
) -> pd.DataFrame:
    """MODEL_FEATURES plus META_COLUMNS, one row per impression, in the impressions' order."""
    entity_df = impressions[["user_id", "event_timestamp", *REQUEST_FIELDS]].copy()
    entity_df["row"] = range(len(entity_df))
    with offline_reads(settings):
        historical = store.get_historical_features(
            entity_df=entity_df, features=store.get_feature_service(feature_service)
        ).to_df()
    historical = historical.sort_values("row", ignore_index=True)
    if list(historical["row"]) != list(range(len(entity_df))):
        raise RuntimeError("the historical read did not return every impression exactly once")
    profile, _ = resolve_profiles(
        {f.name: historical[f.name] for f in PROFILE_FEATURES},
        historical[PROFILE_AS_OF],
        historical["event_timestamp"],
    )
    rows = model_frame(
        profile,
        {f.name: historical[f.name].to_numpy() for f in CONTEXT_FEATURES},
        impressions["category"].to_numpy(),
    )
    for column in META_COLUMNS:
        rows[column] = impressions[column].to_numpy()
    return rows[[*MODEL_FEATURES, *META_COLUMNS]]
