"""The scorer in MLflow's model registry: the version an alias holds, and the guarded loads the
service uses, from the registry or from the copy a Bento carries.

A model version is only usable with the features it was trained on: its
`feast.feature_service` tag (a packed copy's `feature_service` label) names the FeatureService,
which must be a scorer version this code builds rows for (feature_repo/scorer_versions.py) and
exist in the Feast registry the caller reads from. Anything else is refused with a reason.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

import mlflow
from feast import FeatureStore
from feast.errors import FeatureServiceNotFoundException
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from feature_repo.scorer_versions import SCORER_VERSIONS
from service.scoring.fast_predict import AcceptProbability, accept_probability
from service.scoring.model_names import (
    CHAMPION,
    FEATURE_SERVICE_LABEL,
    FEATURE_SERVICE_TAG,
    MLFLOW_VERSION_LABEL,
    MODEL_NAME,
    PACKED_MODEL_DIR,
)
from service.settings import Settings
from service.tracking import registry_client

if TYPE_CHECKING:
    from bentoml import Model as StoredModel


class ModelRejected(RuntimeError):
    """A model version that must not serve, and why."""


@dataclass(frozen=True)
class LoadedScorer:
    model: object  # a fitted scikit-learn classifier with predict_proba
    version: str
    feature_service: str
    accept_probability: AcceptProbability  # the model's P(accept), fast where exact

    @property
    def columns(self) -> tuple[str, ...]:
        """The model's input columns: its scorer version's."""
        return SCORER_VERSIONS[self.feature_service].columns


def version_by_alias(client: MlflowClient, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(MODEL_NAME, alias)
    except MlflowException:
        return None  # no such model yet, or no version holds the alias


def check_servable(version: ModelVersion, store: FeatureStore) -> str:
    """The version's FeatureService name, or ModelRejected saying why it cannot serve."""
    label = f"{MODEL_NAME} version {version.version}"
    name = version.tags.get(FEATURE_SERVICE_TAG)
    if not name:
        raise ModelRejected(f"{label} has no {FEATURE_SERVICE_TAG} tag: its inputs are unknown")
    return _known_feature_service(label, name, store)


def _known_feature_service(label: str, name: str, store: FeatureStore) -> str:
    if name not in SCORER_VERSIONS:
        raise ModelRejected(
            f"{label} was trained on FeatureService {name!r}, which is not a scorer version "
            f"this code builds rows for ({', '.join(SCORER_VERSIONS)})"
        )
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
        accept_probability=accept_probability(model, SCORER_VERSIONS[feature_service].columns),
    )


def load_packed_scorer(packed: "StoredModel", store: FeatureStore) -> LoadedScorer:
    """The scorer a Bento carries (flows/bento.py packed it), under the same FeatureService check
    as a registry version; reads nothing from MLflow's server, so it serves while that is down.

    Its version is the MLflow version it was imported from, so /score names the same model
    whichever way it was loaded.
    """
    label = f"{packed.tag} (packed in this Bento)"
    name = packed.info.labels.get(FEATURE_SERVICE_LABEL)
    if not name:
        raise ModelRejected(f"{label} has no {FEATURE_SERVICE_LABEL} label: its inputs are unknown")
    feature_service = _known_feature_service(label, name, store)
    model = mlflow.sklearn.load_model(packed.path_of(PACKED_MODEL_DIR))
    return LoadedScorer(
        model=model,
        version=packed.info.labels[MLFLOW_VERSION_LABEL],
        feature_service=feature_service,
        accept_probability=accept_probability(model, SCORER_VERSIONS[feature_service].columns),
    )
