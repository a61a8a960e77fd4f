"""Prefect flow `training`: logged impressions -> point-in-time training set -> calibrated
scorer -> MLflow run, registered version `tip-scorer@challenger`, model card.

Each step is a task over flows/modeling/: build (the labelled impressions, then the
point-in-time read), split (by day, or NotEnoughData), fit (every candidate; the lowest
validation log loss is chosen), ceiling (on a simulated world, the chosen learner fitted
again on the users' true traits: flows/modeling/ceiling.py), bound (on a simulated world,
the Bayes-optimal scores from the users' history), evaluate (metrics against the oracle and
the ceilings, fairness slices) and register (run, version, tags, card, alias).
Only the build's tasks retry: they read the event log and the Feast offline store and write
nothing, so another try is safe and may outlast a passing I/O error. Split, fit, ceiling,
bound and evaluate are deterministic and would fail the same way again; a retried register
would log a second run and register a second version.

The build runs per user shard, one task each in the subflow `training-set-shards`
(flows/training_shards.py) on the runner TIPML_DASK_ADDRESS names. In threads (no
TIPML_DASK_ADDRESS) the Feast reads take turns, one per process at a time
(flows/modeling/training_set.py); on Dask workers they run side by side. The fit stays in the
flow's process: a world larger than it trains on a `user_sample`.
"""

import time
from datetime import UTC, datetime
from typing import Self

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field, model_validator

from feature_repo.bounds import UtcDatetime
from feature_repo.scorer_versions import SCORER_VERSIONS
from flows.modeling.ceiling import CeilingModel, fit_ceiling_model, history_bound
from flows.modeling.evaluation import Evaluation, Metrics, evaluate_scorer
from flows.modeling.registration import register_scorer
from flows.modeling.scorer_models import CANDIDATES, Candidates, Fitted, fit_candidates
from flows.modeling.training_set import TrainingSet, split_training_set
from flows.shards import task_runner
from flows.simulate import read_world_users
from flows.training_shards import BuildParams, training_set_shards
from service.scoring.model_names import MODEL_NAME
from service.settings import Settings


class TrainParams(BuildParams):
    """The training set's BuildParams, and the split and fit's."""

    as_of: UtcDatetime | None = Field(
        default=None, description="Train on what was known at this time (default: now)."
    )
    validation_days: int = Field(
        default=7, ge=1, le=60, description="Whole UTC days before as_of's day that validate."
    )
    min_rows: int = Field(default=1000, ge=10, description="Per split, or the run fails.")

    @model_validator(mode="after")
    def _history_covers_validation(self) -> Self:
        if self.history_days <= self.validation_days:
            raise ValueError("history_days must be more than validation_days, to leave training")
        return self


class TrainReport(BaseModel):
    version: str
    model_type: str
    metrics: Metrics
    build_seconds: float
    fit_seconds: float  # all candidates
    ceiling_fit_seconds: float | None  # the ceiling model, fitted on simulated worlds only
    train_rows: int


@task(cache_policy=NO_CACHE)
def split(rows: pd.DataFrame, params: TrainParams, as_of: datetime) -> TrainingSet:
    columns = SCORER_VERSIONS[params.feature_service].columns
    return split_training_set(rows, as_of, params.validation_days, params.min_rows, columns)


@task(cache_policy=NO_CACHE)
def fit(data: TrainingSet) -> Candidates:
    return fit_candidates(data.x_train, data.y_train, data.x_valid, data.y_valid)


@task(cache_policy=NO_CACHE)
def ceiling(
    data: TrainingSet, chosen: Fitted, world_users: pd.DataFrame | None
) -> CeilingModel | None:
    return fit_ceiling_model(CANDIDATES[chosen.name], data, world_users)


@task(cache_policy=NO_CACHE)
def bound(data: TrainingSet, world_users: pd.DataFrame | None) -> np.ndarray | None:
    return history_bound(data, world_users)


@task(cache_policy=NO_CACHE)
def evaluate(
    data: TrainingSet,
    chosen: Fitted,
    world_users: pd.DataFrame | None,
    ceiling_model: CeilingModel | None,
    history: np.ndarray | None,
) -> Evaluation:
    return evaluate_scorer(
        chosen.model, data.valid, data.columns, world_users, ceiling_model, history
    )


@task(cache_policy=NO_CACHE)
def register(
    settings: Settings,
    params: TrainParams,
    data: TrainingSet,
    candidates: Candidates,
    evaluation: Evaluation,
    build_seconds: float,
    ceiling_model: CeilingModel | None,
) -> str:
    return register_scorer(
        settings,
        data,
        candidates,
        evaluation,
        feature_service=params.feature_service,
        validation_days=params.validation_days,
        build_seconds=build_seconds,
        ceiling_fit_seconds=None if ceiling_model is None else ceiling_model.fit_seconds,
    )


@flow(name="training")
def training(params: TrainParams | None = None, settings: Settings | None = None) -> TrainReport:
    params = params or TrainParams()
    settings = settings or Settings.from_env()
    logger = get_run_logger()
    as_of = params.as_of or datetime.now(UTC)

    started = time.perf_counter()
    runner = task_runner(settings)
    rows = training_set_shards.with_options(task_runner=runner)(settings, params, as_of)
    build_seconds = time.perf_counter() - started
    data = split(rows, params, as_of)
    candidates = fit(data)
    chosen = candidates.chosen
    world_users = read_world_users(settings)
    ceiling_model = ceiling(data, chosen, world_users)
    evaluation = evaluate(data, chosen, world_users, ceiling_model, bound(data, world_users))
    version = register(settings, params, data, candidates, evaluation, build_seconds, ceiling_model)

    report = TrainReport(
        version=version,
        model_type=chosen.name,
        metrics=evaluation.metrics,
        build_seconds=build_seconds,
        fit_seconds=candidates.fit_seconds,
        ceiling_fit_seconds=None if ceiling_model is None else ceiling_model.fit_seconds,
        train_rows=len(data.train),
    )
    logger.info(
        "%s v%s (%s): %s; build %.1fs, fit %.1fs, ceiling model fit %s",
        MODEL_NAME,
        version,
        chosen.name,
        report.metrics.discrimination(),
        build_seconds,
        candidates.fit_seconds,
        "-" if ceiling_model is None else f"{ceiling_model.fit_seconds:.1f}s",
    )
    return report


if __name__ == "__main__":
    training()
