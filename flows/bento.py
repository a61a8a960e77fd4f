"""`tipml bento`: the champion into BentoML's model store, then a Bento that carries it.

The Bento is the deployable: it serves without the MLflow server, and the model it serves
cannot move under it the way the alias `champion` can. Rolling back is serving an earlier
Bento (`bentoml serve tipml:<version>`), which carries its own champion.

BentoML reads BENTOML_HOME when first used: set it before calling anything here.
"""

import contextlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import bentoml
import mlflow
from bentoml.exceptions import NotFound
from mlflow.entities.model_registry import ModelVersion

from flows.modeling.registration import read_card
from service.scoring.model_names import (
    CHAMPION,
    FEATURE_SERVICE_LABEL,
    FEATURE_SERVICE_TAG,
    MLFLOW_RUN_LABEL,
    MLFLOW_VERSION_LABEL,
    MODEL_NAME,
    PACKED_MODEL_DIR,
)
from service.scoring.model_registry import version_by_alias
from service.settings import Settings
from service.tracking import registry_client

PROJECT_DIR = Path(__file__).resolve().parent.parent
RUN_ID_CHARS = 12  # of the MLflow run id in the model's BentoML version


class NoChampion(RuntimeError):
    """Nothing to package: no version holds the alias champion, or it lacks its FeatureService."""


@dataclass(frozen=True)
class Packaged:
    model: str  # the champion's tag in BentoML's model store
    bento: str  # the Bento's tag: what `bentoml serve` takes
    mlflow_version: str


def bento_model_version(version: ModelVersion) -> str:
    """The BentoML version of an MLflow version: its number, so re-importing it finds the
    same model, and its run, so another registry's version with that number does not."""
    return f"v{version.version}-{version.run_id[:RUN_ID_CHARS]}"


def import_champion(settings: Settings) -> tuple[ModelVersion, str]:
    """The version holding champion, in BentoML's model store; returns it and its tag there.

    Idempotent: a version already imported is not copied again (a model in the store is
    immutable, and its tag names the exact MLflow version and run it came from).
    """
    client = registry_client(settings)
    champion = version_by_alias(client, CHAMPION)
    if champion is None:
        raise NoChampion(f"no {MODEL_NAME} version holds {CHAMPION}: run `tipml promote`")
    feature_service = champion.tags.get(FEATURE_SERVICE_TAG)
    if not feature_service:
        raise NoChampion(f"{MODEL_NAME} v{champion.version} has no {FEATURE_SERVICE_TAG} tag")
    tag = f"{MODEL_NAME}:{bento_model_version(champion)}"
    with contextlib.suppress(NotFound):  # already imported: nothing to copy
        return champion, str(bentoml.models.get(tag).tag)
    card = read_card(client, champion)
    labels = {
        MLFLOW_VERSION_LABEL: str(champion.version),
        MLFLOW_RUN_LABEL: champion.run_id,
        FEATURE_SERVICE_LABEL: feature_service,
        "model_type": card.model_type,
    }
    metadata = {
        "mlflow_model": f"models:/{MODEL_NAME}/{champion.version}",
        "model_card": card.summary(),
        "auc": card.metrics.auc,
        "log_loss": card.metrics.log_loss,
        "ece": card.metrics.ece,
    }
    with tempfile.TemporaryDirectory() as tmp:
        # By number, not alias: the alias may move while this runs.
        source = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{MODEL_NAME}/{champion.version}", dst_path=tmp
        )
        # The store's copy is only written when the block ends without an error: a failed
        # copy leaves no half model behind.
        with bentoml.models.create(tag, labels=labels, metadata=metadata) as model:
            shutil.copytree(source, model.path_of(PACKED_MODEL_DIR))
    return champion, tag


def build_bento(model_tag: str, mlflow_version: str) -> str:
    """A Bento of bentofile.yaml that packs and serves `model_tag`; returns its tag."""
    bento = bentoml.bentos.build_bentofile(
        build_ctx=str(PROJECT_DIR),
        # service/service.py declares the model this argument names, so the build packs it.
        args={"scorer": model_tag},
        labels={"scorer": model_tag, "scorer_mlflow_version": mlflow_version},
    )
    return str(bento.tag)


def package_champion(settings: Settings) -> Packaged:
    """The champion imported (or found) in the model store, and a new Bento serving it."""
    champion, model_tag = import_champion(settings)
    version = str(champion.version)
    return Packaged(model=model_tag, bento=build_bento(model_tag, version), mlflow_version=version)
