"""Feature services: one per scorer version (feature_repo/scorer_versions.py). The registered
model carries the name; every version stays registered, so an older model still serves."""

from feast import FeatureService

from feature_repo.feature_views import cohort_profile, request_context_view, user_profile
from feature_repo.profile_features import PROFILE_AS_OF
from feature_repo.scorer_versions import SCORER_VERSIONS, ScorerVersion


def _feature_service(version: ScorerVersion) -> FeatureService:
    views = [user_profile[[*version.profile, PROFILE_AS_OF]]]
    if version.reads_cohort:
        views.append(cohort_profile)
    return FeatureService(
        name=version.name,
        features=[*views, request_context_view],
        description=version.description,
    )


FEATURE_SERVICES = tuple(_feature_service(v) for v in SCORER_VERSIONS.values())
tip_scorer_v1, tip_scorer_v2 = FEATURE_SERVICES
