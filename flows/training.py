"""Prefect flow `training`: logged impressions -> point-in-time training set -> calibrated
scorer -> MLflow run, registered version `tip-scorer@challenger`, model card.
"""

import time
import warnings
from datetime import UTC, datetime, timedelta

import mlflow
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from feature_repo.feature_services import tip_scorer_v1
from flows.modeling.evaluation import Metrics, evaluate, reliability_plot, slice_table
from flows.modeling.gates import absolute_checks
from flows.modeling.model_card import Decision, ModelCard, Window, feature_docs
from flows.modeling.registration import TRAINING_END_TAG, log_scorer, tag_version, write_card
from flows.modeling.scorer_models import choose, fit_candidates
from flows.modeling.training_set import build_training_set, labelled_impressions
from flows.params import UtcDatetime
from service.events.log import EventLog
from service.scoring.feature_store import open_store
from service.scoring.model_inputs import MODEL_FEATURES
from service.scoring.model_names import CHALLENGER, MODEL_NAME
from service.settings import Settings
from service.tracking import SCORER_EXPERIMENT, experiment_id, registry_client

NEW_USER_DAYS = 7


class TrainParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    as_of: UtcDatetime | None = Field(
        default=None, description="Train on what was known at this time (default: now)."
    )
    validation_days: int = Field(
        default=7, ge=1, le=60, description="Whole UTC days before as_of's day that validate."
    )
    min_rows: int = Field(default=1000, ge=10, description="Per split, or the run fails.")
    feature_service: str = Field(default=tip_scorer_v1.name, min_length=1)


class TrainReport(BaseModel):
    version: str
    model_type: str
    metrics: Metrics
    build_seconds: float
    fit_seconds: float  # all candidates
    train_rows: int


def validation_start(as_of: datetime, validation_days: int) -> datetime:
    """Where validation begins: a UTC midnight, so the split depends on as_of's day only.

    Train on earlier days, validate on later ones; the hour a run happens to start at must
    not move rows between the two sides and so change the metrics the gates compare.
    """
    midnight = as_of.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - timedelta(days=validation_days)


class NotEnoughData(RuntimeError):
    """Too few labelled impressions, or only one outcome, in a split to train or validate."""


def slices(rows: pd.DataFrame, world_users: pd.DataFrame | None) -> pd.DataFrame:
    """Fairness slices: persona (simulated worlds only), timezone region, new vs tenured."""
    out = pd.DataFrame(index=rows.index)
    if world_users is not None:
        out["persona"] = rows["user_id"].map(world_users.set_index("user_id")["persona"])
    out["timezone_region"] = rows["timezone"].str.split("/").str[0]
    out["tenure"] = (rows["tenure_days"] < NEW_USER_DAYS).map({True: "new", False: "tenured"})
    return out.fillna("unknown")


@task(cache_policy=NO_CACHE)
def build(settings: Settings, params: TrainParams, as_of: datetime) -> pd.DataFrame:
    impressions = labelled_impressions(EventLog(settings.events_dir), as_of)
    return build_training_set(open_store(settings), settings, impressions, params.feature_service)


@flow(name="training")
def training(params: TrainParams | None = None, settings: Settings | None = None) -> TrainReport:
    params = params or TrainParams()
    settings = settings or Settings.from_env()
    logger = get_run_logger()
    as_of = params.as_of or datetime.now(UTC)

    started = time.perf_counter()
    rows = build(settings, params, as_of)
    build_seconds = time.perf_counter() - started
    split = validation_start(as_of, params.validation_days)
    train, valid = rows[rows.event_timestamp < split], rows[rows.event_timestamp >= split]
    for name, part in (("training", train), ("validation", valid)):
        if len(part) < params.min_rows or part.accepted.nunique() < 2:
            raise NotEnoughData(
                f"{len(part)} {name} impressions before {as_of:%Y-%m-%d %H:%M}, with "
                f"{int(part.accepted.sum())} accepted; need {params.min_rows} of both outcomes"
            )
    x_train, x_valid = train[list(MODEL_FEATURES)], valid[list(MODEL_FEATURES)]

    fitted = fit_candidates(x_train, train.accepted.to_numpy(), x_valid, valid.accepted.to_numpy())
    chosen = choose(fitted)
    p_valid = chosen.model.predict_proba(x_valid)[:, 1]
    # The oracle is known in a simulated world only.
    oracle = valid.oracle_p_accept
    oracle = oracle.to_numpy(dtype=float) if oracle.notna().all() else None
    metrics = evaluate(valid.accepted.to_numpy(), p_valid, oracle)
    world_path = settings.world_dir / "users.parquet"
    world = pd.read_parquet(world_path) if world_path.exists() else None
    fairness = slice_table(valid.accepted.to_numpy(), p_valid, slices(valid, world))
    checks = absolute_checks(metrics, fairness)

    client = registry_client(settings)
    with mlflow.start_run(
        experiment_id=experiment_id(client, settings, SCORER_EXPERIMENT),
        run_name=f"train-{as_of:%Y%m%dT%H%M}",
    ) as run:
        mlflow.log_params(
            {
                "model_type": chosen.name,
                "feature_service": params.feature_service,
                "as_of": as_of.isoformat(),
                "validation_days": params.validation_days,
                **{f"model.{k}": v for k, v in chosen.params.items()},
            }
        )
        mlflow.log_metrics(
            {
                **{f"valid_{k}": v for k, v in metrics.model_dump().items() if v is not None},
                "valid_auc_to_oracle": metrics.auc_to_oracle or 0.0,
                **{f"candidate_log_loss.{f.name}": f.validation_log_loss for f in fitted},
                "build_seconds": build_seconds,
                "fit_seconds": sum(f.fit_seconds for f in fitted),
                "train_rows": len(train),
            }
        )
        mlflow.log_figure(
            reliability_plot(valid.accepted.to_numpy(), p_valid, f"{chosen.name} (validation)"),
            "plots/reliability.png",
        )
        for context, part in (("training", train), ("validation", valid)):
            with warnings.catch_warnings():
                # MLflow hints that integer columns could not hold missing values in a model
                # signature; these are dataset records (the label is 0/1), not a signature.
                warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
                dataset = mlflow.data.from_pandas(
                    part, name=f"tip-impressions-{context}", targets="accepted"
                )
            mlflow.log_input(dataset, context=context)
        version = log_scorer(chosen.model, x_valid, valid.assign(p_accept=p_valid))
        number = str(version.version)
        training_window = Window(start=train.event_timestamp.min(), end=split)
        card = ModelCard(
            model_name=MODEL_NAME,
            version=number,
            run_id=run.info.run_id,
            feature_service=params.feature_service,
            inputs=feature_docs(),
            model_type=chosen.name,
            candidates={f.name: f.validation_log_loss for f in fitted},
            training_window=training_window,
            validation_window=Window(start=split, end=as_of),
            train_rows=len(train),
            train_positives=int(train.accepted.sum()),
            metrics=metrics,
            fairness=fairness,
            checks=checks,
            rollout_history=[
                Decision(
                    at=datetime.now(UTC),
                    action="registered",
                    reason=f"trained as of {as_of:%Y-%m-%d %H:%M} UTC; alias {CHALLENGER}",
                )
            ],
        )
        try:
            tag_version(
                client,
                number,
                params.feature_service,
                {
                    "training_window_start": training_window.start.isoformat(),
                    TRAINING_END_TAG: training_window.end.isoformat(),
                    "model_type": chosen.name,
                },
            )
            write_card(client, card)
            client.set_registered_model_alias(MODEL_NAME, CHALLENGER, number)
        except Exception:
            # No half-registered version: without its tags and card it must not exist.
            client.delete_model_version(MODEL_NAME, number)
            raise

    logger.info(
        "%s v%s (%s): AUC %.4f / oracle AUC %.4f = %.3f; build %.1fs, fit %.1fs",
        MODEL_NAME,
        number,
        chosen.name,
        metrics.auc,
        metrics.oracle_auc or 0,
        metrics.auc_to_oracle or 0,
        build_seconds,
        sum(f.fit_seconds for f in fitted),
    )
    return TrainReport(
        version=number,
        model_type=chosen.name,
        metrics=metrics,
        build_seconds=build_seconds,
        fit_seconds=sum(f.fit_seconds for f in fitted),
        train_rows=len(train),
    )


if __name__ == "__main__":
    training()
