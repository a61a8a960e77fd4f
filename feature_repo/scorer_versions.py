"""What each scorer version reads: the SCORER_VERSIONS table, one row per FeatureService.

A registered model names its FeatureService (its `feast.feature_service` tag), and the row
here says which model columns that name stands for, in order. The FeatureServices
(feature_repo/feature_services.py), the training rows and the serving rows are all built from
it, so a model trained on one version is served with exactly its own columns while newer
versions exist beside it. A version, once a model has been registered with it, is never
changed: add a new one.
"""

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from feature_repo.candidate_features import COHORT_RATES, CROSS_FEATURES
from feature_repo.categories import TIP_CATEGORIES
from feature_repo.context_features import CONTEXT_FEATURES
from feature_repo.profile_features import PROFILE_FEATURES

CATEGORY_COLUMNS = tuple(f"category_is_{c}" for c in TIP_CATEGORIES)


class ScorerVersion(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str  # the FeatureService's name
    description: str
    profile: tuple[str, ...]
    # Whether the FeatureService reads the cohort view (COHORT_FEATURES): its counts reach the
    # model only through candidate features.
    reads_cohort: bool
    candidate: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        """The model's input columns, in order."""
        return (
            *self.profile,
            *(f.name for f in CONTEXT_FEATURES),
            *self.candidate,
            *CATEGORY_COLUMNS,
        )


_V1_CANDIDATES = ("category_affinity", "category_lift", "hour_gap", "in_preferred_window")

TIP_SCORER_V1 = ScorerVersion(
    name="tip_scorer_v1",
    description="Inputs of the tip scorer: daily user profile plus request-time context.",
    profile=tuple(f.name for f in PROFILE_FEATURES),
    reads_cohort=False,
    candidate=_V1_CANDIDATES,
)
TIP_SCORER_V2 = ScorerVersion(
    name="tip_scorer_v2",
    description=(
        "v1 plus the request time zone's cohort counts (as smoothed rates) and the category x "
        "request crosses: docs/scorer_quality.md says why each is in."
    ),
    profile=TIP_SCORER_V1.profile,
    reads_cohort=True,
    candidate=(*_V1_CANDIDATES, *COHORT_RATES, *CROSS_FEATURES),
)

SCORER_VERSIONS: dict[str, ScorerVersion] = {v.name: v for v in (TIP_SCORER_V1, TIP_SCORER_V2)}
# What `tipml train` trains unless asked for another.
LATEST = TIP_SCORER_V2.name


def known_version(name: str) -> str:
    """`name` if it names a scorer version, else a ValueError listing the known ones."""
    if name not in SCORER_VERSIONS:
        raise ValueError(f"not a scorer version: {name!r} (known: {', '.join(SCORER_VERSIONS)})")
    return name


# A FeatureService name as a parameter: TrainParams, `tipml features show`.
ScorerVersionName = Annotated[str, AfterValidator(known_version)]
