"""The scorer's training set: logged impressions -> point-in-time features -> model rows,
split by day into training and validation.

Each impression was logged with the request context the recommender sent, so the training
read is the serving read replayed: the scorer version's FeatureService through
get_historical_features (profile and, for tip_scorer_v2, the cohort of the logged request's
time zone as of the impression, context from the logged request), the shared TTL/fallback
rule, and the shared model-row assembly.

Every row depends on its own impression and its user's profile only, so the set is built per
user shard (flows/shards.py), each shard reading its own users' impressions, and put in one
order, by time (`in_training_order`): row for row what one build gives. Memory is bounded by
the shard, not the history: request contexts are decoded a batch at a time, and the
point-in-time read takes HISTORICAL_CHUNK_ROWS impressions at a time (Feast's DuckDB join
holds every profile row in the TTL of every impression it is given). Time is bounded by the
shard too: its read scans only the offline files of its users' shards (`view` in
flows/featurestore/offline_table.py), not every shard's.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
from feast import FeatureStore

from feature_repo.cohort_features import COHORT_AS_OF, COHORT_FEATURES, COHORT_KEY
from feature_repo.context_features import CONTEXT_FEATURES
from feature_repo.freshness import resolve_cohorts, resolve_profiles
from feature_repo.profile_features import PROFILE_AS_OF, PROFILE_FEATURES
from feature_repo.scorer_versions import SCORER_VERSIONS
from feature_repo.user_hash import HashRange
from flows.featurestore.offline_table import offline_reads
from service.api.request import request_data
from service.events.lake import EventLake
from service.events.models import ATTRIBUTION_WINDOW
from service.scoring.model_inputs import model_frame
from service.settings import Settings

REQUEST_FIELDS = ("request_timestamp", "timezone", "tasks_json")
# What request_data takes of a logged context: its task ids, titles and projects stay unread.
CONTEXT_FIELDS = (
    "context.timestamp",
    "context.timezone",
    "context.tasks.list.element.priority",
    "context.tasks.list.element.due",
)
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
HISTORICAL_CHUNK_ROWS = 25_000
CONTEXT_BATCH_ROWS = 20_000


def labelled_impressions(
    lake: EventLake, as_of: datetime, start: date | None = None, users: HashRange | None = None
) -> pd.DataFrame:
    """Impressions before `as_of` (from UTC day `start`, when given) whose outcome is known by
    then, with their request data: of every user, or of the user hashes [first, last] `users`
    (a shard's, flows/shards.py).

    accepted = 1 when an "accepted" reaction arrived before `as_of`; 0 for any other reaction,
    or for silence once the attribution window has closed. Impressions still inside their
    window with no reaction yet are left out: their label is not known.
    """
    end = as_of.astimezone(UTC).date()
    shown = lake.read(
        "impression",
        start,
        end,
        [
            "user_id",
            "timestamp",
            "tip_id",
            "category",
            "prompt_version",
            "oracle_p_accept",
            *CONTEXT_FIELDS,
        ],
        users=users,
    )
    frame = (
        shown.drop_columns(list(CONTEXT_FIELDS))
        .to_pandas()
        .rename(columns={"timestamp": "event_timestamp"})
    )
    contexts = shown.select(list(CONTEXT_FIELDS))
    requests = pd.DataFrame(
        [
            request_data(at, zone, list(zip(priorities, dues, strict=True)))
            for first in range(0, len(contexts), CONTEXT_BATCH_ROWS)
            for at, zone, priorities, dues in zip(
                *contexts.slice(first, CONTEXT_BATCH_ROWS).to_pydict().values(), strict=True
            )
        ],
        columns=list(REQUEST_FIELDS),
    )
    frame = pd.concat([frame, requests], axis=1)
    frame = frame[frame["event_timestamp"] < as_of]

    # A reaction counts from its first copy in time: the user's first answer. Only the user
    # shown the tip answers it: feedback naming another user's tip labels nothing.
    reactions = (
        lake.read(
            "feedback", start, end, ["user_id", "tip_id", "timestamp", "reaction"], users=users
        )
        .to_pandas()
        .sort_values("timestamp", kind="stable")
        .drop_duplicates(["user_id", "tip_id"])
    )
    answers = frame[["user_id", "tip_id"]].merge(reactions, on=["user_id", "tip_id"], how="left")
    kind = answers["reaction"].set_axis(frame.index)
    when = answers["timestamp"].set_axis(frame.index)
    known = when < as_of
    frame["accepted"] = ((kind == "accepted") & known).astype("int64")
    settled = known | (frame["event_timestamp"] + ATTRIBUTION_WINDOW <= as_of)
    columns = [c for c in META_COLUMNS if c != "timezone"]
    return frame[settled].loc[:, [*columns, *REQUEST_FIELDS]].reset_index(drop=True)


def build_training_set(
    store: FeatureStore,
    settings: Settings,
    impressions: pd.DataFrame,
    feature_service: str,
    users: HashRange | None = None,
) -> pd.DataFrame:
    """The scorer version's columns plus META_COLUMNS, one row per impression, in the
    impressions' order and with their index (so a shard's rows keep their places in the whole).

    `users`, the user hashes [first, last] the impressions are of (a shard's), lets the
    point-in-time read scan only the offline files of the shards that hold them.
    """
    version = SCORER_VERSIONS[feature_service]
    entity_df = impressions[["user_id", "event_timestamp", *REQUEST_FIELDS]].copy()
    # The cohort is the logged request's zone as sent, as /score reads it.
    entity_df[COHORT_KEY] = impressions["timezone"]
    entity_df["row"] = range(len(entity_df))
    service = store.get_feature_service(feature_service)
    parts = []
    with offline_reads(settings, users):
        for first in range(0, max(len(entity_df), 1), HISTORICAL_CHUNK_ROWS):
            chunk = entity_df.iloc[first : first + HISTORICAL_CHUNK_ROWS]
            parts.append(store.get_historical_features(entity_df=chunk, features=service).to_df())
    historical = pd.concat(parts, ignore_index=True).sort_values("row", ignore_index=True)
    if list(historical["row"]) != list(range(len(entity_df))):
        raise RuntimeError("the historical read did not return every impression exactly once")
    profile, _ = resolve_profiles(
        {f.name: historical[f.name] for f in PROFILE_FEATURES},
        historical[PROFILE_AS_OF],
        historical["event_timestamp"],
    )
    if version.reads_cohort:
        cohort, _ = resolve_cohorts(
            {f.name: historical[f.name] for f in COHORT_FEATURES},
            historical[COHORT_AS_OF],
            historical["event_timestamp"],
        )
        profile = {**profile, **cohort}
    rows = model_frame(
        version.columns,
        profile,
        {f.name: historical[f.name].to_numpy() for f in CONTEXT_FEATURES},
        impressions["category"].to_numpy(),
    )
    for column in META_COLUMNS:
        values = impressions[column]
        # Arrow strings: ~15 bytes a row instead of a Python object's ~60, in the one process
        # that holds every shard's rows for the fit.
        if values.dtype == object:
            rows[column] = pd.array(values, dtype="string[pyarrow]")
        else:
            rows[column] = values.to_numpy()
    return rows[[*version.columns, *META_COLUMNS]].set_axis(impressions.index)


def in_training_order(parts: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """`build_training_set`'s rows of one or more shards as one frame in one order: by
    impression time, then tip and user, so any split into shards gives the same frame."""
    rows = pd.concat(parts)
    return rows.sort_values(
        ["event_timestamp", "tip_id", "user_id"], kind="stable", ignore_index=True
    )


class NotEnoughData(RuntimeError):
    """Too few labelled impressions, or only one outcome, in a split to train or validate."""


def validation_start(as_of: datetime, validation_days: int) -> datetime:
    """Where validation begins: a UTC midnight, so the split depends on as_of's day only.

    Train on earlier days, validate on later ones; the hour a run happens to start at must
    not move rows between the two sides and so change the metrics the gates compare.
    """
    midnight = as_of.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - timedelta(days=validation_days)


@dataclass(frozen=True)
class TrainingSet:
    """Model rows before `validation_start` train; those from it until `as_of` validate.
    `columns` are the model's inputs (its scorer version's)."""

    train: pd.DataFrame
    valid: pd.DataFrame
    validation_start: datetime
    as_of: datetime
    columns: tuple[str, ...]

    @property
    def x_train(self) -> pd.DataFrame:
        return self.train[list(self.columns)]

    @property
    def y_train(self) -> np.ndarray:
        return self.train["accepted"].to_numpy()

    @property
    def x_valid(self) -> pd.DataFrame:
        return self.valid[list(self.columns)]

    @property
    def y_valid(self) -> np.ndarray:
        return self.valid["accepted"].to_numpy()


def split_training_set(
    rows: pd.DataFrame,
    as_of: datetime,
    validation_days: int,
    min_rows: int,
    columns: tuple[str, ...],
) -> TrainingSet:
    """`build_training_set`'s rows split at `validation_start`, or NotEnoughData when either
    side has fewer than `min_rows` rows or only one outcome."""
    split = validation_start(as_of, validation_days)
    train, valid = rows[rows.event_timestamp < split], rows[rows.event_timestamp >= split]
    for name, part in (("training", train), ("validation", valid)):
        if len(part) < min_rows or part.accepted.nunique() < 2:
            raise NotEnoughData(
                f"{len(part)} {name} impressions before {as_of:%Y-%m-%d %H:%M}, with "
                f"{int(part.accepted.sum())} accepted; need {min_rows} of both outcomes"
            )
    return TrainingSet(
        train=train, valid=valid, validation_start=split, as_of=as_of, columns=columns
    )
