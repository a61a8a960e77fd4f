"""Fixed names of the scorer in MLflow, which other parts and tools rely on."""

from enum import StrEnum

MODEL_NAME = "tip-scorer"
FEATURE_SERVICE_TAG = "feast.feature_service"


class Alias(StrEnum):
    CHAMPION = "champion"
    CHALLENGER = "challenger"


CHAMPION = Alias.CHAMPION.value
CHALLENGER = Alias.CHALLENGER.value

# The champion as BentoML's model store keeps it (flows/bento.py writes it, the service reads
# it): the MLflow model directory under PACKED_MODEL_DIR, and where it came from as labels.
PACKED_MODEL_DIR = "mlflow-model"
MLFLOW_VERSION_LABEL = "mlflow_version"
MLFLOW_RUN_LABEL = "mlflow_run_id"
FEATURE_SERVICE_LABEL = "feature_service"
