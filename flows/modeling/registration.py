"""Writing scorer versions to MLflow: the run, the registered version, its tags and its card."""

import json
import tempfile
from datetime import datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import sklearn
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import infer_signature

from flows.modeling.model_card import ModelCard
from service.scoring.model_names import FEATURE_SERVICE_TAG, MODEL_NAME

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


def read_card(client: MlflowClient, version: ModelVersion) -> ModelCard:
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(version.run_id, CARD_JSON, tmp)
        return ModelCard.model_validate(json.loads(Path(path).read_text()))


def read_validation_rows(client: MlflowClient, version: ModelVersion) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as tmp:
        return pd.read_parquet(client.download_artifacts(version.run_id, VALIDATION_ROWS, tmp))


def training_end(version: ModelVersion) -> datetime:
    return datetime.fromisoformat(version.tags[TRAINING_END_TAG])
