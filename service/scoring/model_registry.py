"""The scorer in MLflow's model registry: the version an alias holds, and the guarded load the
service uses.

A model version is only usable with the features it was trained on: its
`feast.feature_service` tag names the FeatureService, and that service must exist in the Feast
registry the caller reads from. Anything else is refused with a reason.
"""

from dataclasses import dataclass

import mlflow
from feast import FeatureStore
from feast.errors import FeatureServiceNotFoundException
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from service.scoring.fast_predict import AcceptProbability, accept_probability
from service.scoring.model_inputs import MODEL_FEATURES
from service.scoring.model_names import CHAMPION, FEATURE_SERVICE_TAG, MODEL_NAME
from service.settings import Settings
from service.tracking import registry_client


class ModelRejected(RuntimeError):
    """A model version that must not serve, and why."""


@dataclass(frozen=True)
class LoadedScorer:
    model: object  # a fitted scikit-learn classifier with predict_proba
    version: str
    feature_service: str
    accept_probability: AcceptProbability  # the model's P(accept), fast where exact


def version_by_alias(client: MlflowClient, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(MODEL_NAME, alias)
    except MlflowException:
        return None  # no such model yet, or no version holds the alias


def check_servable(version: ModelVersion, store: FeatureStore) -> str:
    """The version's FeatureService name, or ModelRejected saying why it cannot serve."""
    name = version.tags.get(FEATURE_SERVICE_TAG)
    label = f"{MODEL_NAME} version {version.version}"
    if not name:
        raise ModelRejected(f"{label} has no {FEATURE_SERVICE_TAG} tag: its inputs are unknown")
    try:
        store.get_feature_service(name)
    except FeatureServiceNotFoundException as exc:
        raise ModelRejected(
            f"{label} was trained on FeatureService {name!r}, which the Feast registry "
            f"at {store.repo_path} does not know"
        ) from exc
    return name


def load_scorer(settings: Settings, store: FeatureStore, alias: str = CHAMPION) -> LoadedScorer:
    client = registry_client(settings)
    version = version_by_alias(client, alias)
    if version is None:
        raise ModelRejected(f"no {MODEL_NAME} version holds the alias {alias!r}")
    feature_service = check_servable(version, store)
    # By number, not alias: the alias may move between the check and the load.
    model = mlflow.sklearn.load_model(f"models:/{MODEL_NAME}/{version.version}")
    return LoadedScorer(
        model=model,
        version=str(version.version),
        feature_service=feature_service,
        accept_probability=accept_probability(model, MODEL_FEATURES),
    )
