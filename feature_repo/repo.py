"""Everything `feast apply` registers. Feast reads this module only (see .feastignore)."""

from feature_repo.data_sources import profile_source, request_context
from feature_repo.entities import user
from feature_repo.feature_services import tip_scorer_v1
from feature_repo.feature_views import request_context_view, user_profile

FEAST_OBJECTS = (
    user,
    profile_source,
    request_context,
    user_profile,
    request_context_view,
    tip_scorer_v1,
)
