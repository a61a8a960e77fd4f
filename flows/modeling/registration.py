"""Scorer versions in MLflow: the training run, the registered version as challenger with its
tags and its card, and reading a version's card and validation rows back."""

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import sklearn
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import infer_signature

from flows.modeling.evaluation import Evaluation, reliability_plot
from flows.modeling.gates import absolute_checks
from flows.modeling.model_card import ModelCard, RolloutDecision, Window, feature_docs
from flows.modeling.scorer_models import Candidates
from flows.modeling.training_set import TrainingSet
from service.scoring.model_names import CHALLENGER, FEATURE_SERVICE_TAG, MODEL_NAME
from service.settings import Settings
from service.tracking import SCORER_EXPERIMENT, experiment_id, registry_client

CARD_JSON = "model_card.json"
CARD_MARKDOWN = "model_card.md"
VALIDATION_ROWS = "validation/rows.parquet"
TRAINING_END_TAG = "training_window_end"
# Written explicitly: MLflow would otherwise load the model in a subprocess to infer them.
PIP_REQUIREMENTS = [
    f"scikit-learn=={sklearn.__version__}",
    f"numpy=={np.__version__}",
    f"pandas=={pd.__version__}",
]

# Saved with skops, which refuses types it cannot vouch for. These are ours: both are written
# by this flow from models it just fitted, and loaded from our own registry.
SKOPS_TRUSTED_TYPES = [
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
]


def log_scorer(model: object, example: pd.DataFrame, validation_rows: pd.DataFrame) -> ModelVersion:
    """Inside an active run: log the model with its signature, register it, keep its rows."""
    proba = model.predict_proba(example)
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        signature=infer_signature(example, proba),
        input_example=example.head(3),
        registered_model_name=MODEL_NAME,
        pyfunc_predict_fn="predict_proba",
        pip_requirements=PIP_REQUIREMENTS,
        skops_trusted_types=SKOPS_TRUSTED_TYPES,
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(VALIDATION_ROWS).name
        validation_rows.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path=str(Path(VALIDATION_ROWS).parent))
    client = MlflowClient()
    return client.get_model_version(MODEL_NAME, str(info.registered_model_version))


def tag_version(
    client: MlflowClient, version: str, feature_service: str, tags: dict[str, str]
) -> None:
    for key, value in {FEATURE_SERVICE_TAG: feature_service, **tags}.items():
        client.set_model_version_tag(MODEL_NAME, version, key, value)


def write_card(client: MlflowClient, card: ModelCard) -> None:
    """The whole card beside the model (JSON and markdown); its short form as the version's
    description."""
    client.log_text(card.run_id, card.model_dump_json(indent=2), CARD_JSON)
    client.log_text(card.run_id, card.to_markdown(), CARD_MARKDOWN)
    client.update_model_version(MODEL_NAME, card.version, description=card.description())


def _log_run_record(
    data: TrainingSet,
    candidates: Candidates,
    evaluation: Evaluation,
    feature_service: str,
    validation_days: int,
    build_seconds: float,
    ceiling_fit_seconds: float | None,
) -> None:
    """Inside an active run: parameters, metrics, reliability plot and both datasets."""
    chosen, metrics = candidates.chosen, evaluation.metrics
    mlflow.log_params(
        {
            "model_type": chosen.name,
            "feature_service": feature_service,
            "as_of": data.as_of.isoformat(),
            "validation_days": validation_days,
            **{f"model.{k}": v for k, v in chosen.params.items()},
        }
    )
    known = {
        # The ceilings' ratios and fit, when there are (simulated worlds).
        "valid_auc_to_ceiling": metrics.auc_to_ceiling,
        "valid_auc_to_bound": metrics.auc_to_bound,
        "ceiling_fit_seconds": ceiling_fit_seconds,
    }
    mlflow.log_metrics(
        {
            **{f"valid_{k}": v for k, v in metrics.model_dump().items() if v is not None},
            "valid_auc_to_oracle": metrics.auc_to_oracle or 0.0,
            **{k: v for k, v in known.items() if v is not None},
            **{
                f"candidate_log_loss.{name}": loss
                for name, loss in candidates.validation_log_losses.items()
            },
            "build_seconds": build_seconds,
            "fit_seconds": candidates.fit_seconds,
            "train_rows": len(data.train),
        }
    )
    mlflow.log_figure(
        reliability_plot(data.y_valid, evaluation.p_accept, f"{chosen.name} (validation)"),
        "plots/reliability.png",
    )
    for context, part in (("training", data.train), ("validation", data.valid)):
        # MLflow's hint on integer columns is silenced with the other known warnings (flows/).
        dataset = mlflow.data.from_pandas(
            part, name=f"tip-impressions-{context}", targets="accepted"
        )
        mlflow.log_input(dataset, context=context)


def _new_card(
    version: str,
    run_id: str,
    data: TrainingSet,
    candidates: Candidates,
    evaluation: Evaluation,
    feature_service: str,
) -> ModelCard:
    return ModelCard(
        model_name=MODEL_NAME,
        version=version,
        run_id=run_id,
        feature_service=feature_service,
        inputs=feature_docs(feature_service),
        model_type=candidates.chosen.name,
        candidates=candidates.validation_log_losses,
        training_window=Window(start=data.train.event_timestamp.min(), end=data.validation_start),
        validation_window=Window(start=data.validation_start, end=data.as_of),
        train_rows=len(data.train),
        train_positives=int(data.train.accepted.sum()),
        metrics=evaluation.metrics,
        fairness=evaluation.fairness,
        checks=absolute_checks(evaluation.metrics, evaluation.fairness),
        rollout_history=[
            RolloutDecision(
                at=datetime.now(UTC),
                action="registered",
                reason=f"trained as of {data.as_of:%Y-%m-%d %H:%M} UTC; alias {CHALLENGER}",
            )
        ],
    )


def register_scorer(
    settings: Settings,
    data: TrainingSet,
    candidates: Candidates,
    evaluation: Evaluation,
    *,
    feature_service: str,
    validation_days: int,
    build_seconds: float,
    ceiling_fit_seconds: float | None,
) -> str:
    """The chosen candidate as a new version holding the alias challenger, with its run, tags
    and card; returns the version number."""
    client = registry_client(settings)
    with mlflow.start_run(
        experiment_id=experiment_id(client, settings, SCORER_EXPERIMENT),
        run_name=f"train-{data.as_of:%Y%m%dT%H%M}",
    ) as run:
        _log_run_record(
            data,
            candidates,
            evaluation,
            feature_service,
            validation_days,
            build_seconds,
            ceiling_fit_seconds,
        )
        version = log_scorer(
            candidates.chosen.model,
            data.x_valid,
            data.valid.assign(p_accept=evaluation.p_accept),
        )
        number = str(version.version)
        card = _new_card(number, run.info.run_id, data, candidates, evaluation, feature_service)
        try:
            tag_version(
                client,
                number,
                feature_service,
                {
                    "training_window_start": card.training_window.start.isoformat(),
                    TRAINING_END_TAG: card.training_window.end.isoformat(),
                    "model_type": card.model_type,
                },
            )
            write_card(client, card)
            client.set_registered_model_alias(MODEL_NAME, CHALLENGER, number)
        except Exception:
            # No half-registered version: without its tags and card it must not exist.
            client.delete_model_version(MODEL_NAME, number)
            raise
    return number


def read_card(client: MlflowClient, version: ModelVersion) -> ModelCard:
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(version.run_id, CARD_JSON, tmp)
        return ModelCard.model_validate(json.loads(Path(path).read_text()))


def read_validation_rows(client: MlflowClient, version: ModelVersion) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as tmp:
        return pd.read_parquet(client.download_artifacts(version.run_id, VALIDATION_ROWS, tmp))


def training_end(version: ModelVersion) -> datetime:
    return datetime.fromisoformat(version.tags[TRAINING_END_TAG])
