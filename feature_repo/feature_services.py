"""Feature services: one per model version. The registered model carries the name."""

from feast import FeatureService

from feature_repo.feature_views import request_context_view, user_profile

tip_scorer_v1 = FeatureService(
    name="tip_scorer_v1",
    features=[user_profile, request_context_view],
    description="Inputs of the tip scorer: daily user profile plus request-time context.",
)
