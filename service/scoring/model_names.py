"""Fixed names of the scorer in MLflow, which other parts and tools rely on."""

from enum import StrEnum

MODEL_NAME = "tip-scorer"
FEATURE_SERVICE_TAG = "feast.feature_service"


class Alias(StrEnum):
    CHAMPION = "champion"
    CHALLENGER = "challenger"


CHAMPION = Alias.CHAMPION.value
CHALLENGER = Alias.CHALLENGER.value
