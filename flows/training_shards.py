"""Prefect subflow `training-set-shards`: the scorer's training set, one task per user shard.

A task reads its users' labelled impressions and runs their point-in-time read over the
offline files that hold its users (flows/modeling/training_set.py); the rows are put in time
order: the same training set whatever the shard count. Only the users of `user_sample` are
built (flows/shards.py `Shard.sampled`): the fit holds every training row in one process, so a
world larger than that process trains on a sample, the same users run after run.

Apart from the `training` flow (flows/training.py), so that a Dask worker building shards
imports what a shard needs (pandas, pyarrow, Feast), not what the fit and the registry need
(scikit-learn, MLflow, matplotlib: ~130 MB more in every worker).
"""

from datetime import UTC, datetime, timedelta

import pandas as pd
from prefect import flow, task, unmapped
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from feature_repo.scorer_versions import LATEST, SCORER_VERSIONS, ScorerVersionName
from flows.modeling.training_set import (
    NotEnoughData,
    build_training_set,
    in_training_order,
    labelled_impressions,
)
from flows.shards import WHOLE, Shard
from service.events.lake import open_lake
from service.scoring.feature_store import open_store
from service.settings import Settings


class BuildParams(BaseModel):
    """What the training set is built from; the `training` flow's TrainParams extend these."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    history_days: int = Field(
        default=90,
        ge=2,
        le=3650,
        description="Whole UTC days before as_of's day whose impressions the run reads.",
    )
    feature_service: ScorerVersionName = Field(
        default=LATEST,
        description=f"The scorer version to train: one of {', '.join(SCORER_VERSIONS)}.",
    )
    shards: int = Field(
        default=1,
        ge=1,
        le=4096,
        description="User shards whose point-in-time reads run as separate tasks "
        "(flows/shards.py); the training set is the same whatever the count.",
    )
    user_sample: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Train on this fraction of the users, chosen by user hash: the same users "
        "run after run, whatever the shard count (flows/shards.py). The fit holds every "
        "training row in one process; a world larger than that process sets this below 1.",
    )

    def build_params(self) -> "BuildParams":
        """These fields alone, as this class: what a worker unpickles without the subclass's
        module."""
        return BuildParams.model_validate(self.model_dump(include=set(BuildParams.model_fields)))


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=30)
def build_shard(
    settings: Settings, params: BuildParams, as_of: datetime, shard: Shard
) -> pd.DataFrame | None:
    """`shard`'s labelled impressions (of its users in the sample) and their point-in-time
    rows; None when it has none (Feast's answer for no rows has looser column types, which
    would loosen the whole's)."""
    start = as_of.astimezone(UTC).date() - timedelta(days=params.history_days)
    users = shard.sampled(params.user_sample)
    if users is None:
        return None
    impressions = labelled_impressions(open_lake(settings), as_of, start, users)
    if impressions.empty and shard.count > 1:
        return None
    store = open_store(settings)
    return build_training_set(store, settings, impressions, params.feature_service, users)


@flow(name="training-set-shards")
def training_set_shards(settings: Settings, params: BuildParams, as_of: datetime) -> pd.DataFrame:
    """The training set, each shard's read and rows a task on the runner the settings name."""
    params = params.build_params()
    shards = [s for s in Shard.all(params.shards) if s.sampled(params.user_sample)]
    if not shards:
        raise NotEnoughData(f"a user sample of {params.user_sample:g} holds no user hash")
    futures = build_shard.map(unmapped(settings), unmapped(params), unmapped(as_of), shards)
    parts = [part for part in futures.result() if part is not None]
    return in_training_order(parts or [build_shard.fn(settings, params, as_of, WHOLE)])
