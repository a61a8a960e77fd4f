"""Everything `feast apply` registers. Feast reads this module only (see .feastignore)."""

from feature_repo.data_sources import cohort_source, profile_source, request_context
from feature_repo.entities import cohort, user
from feature_repo.feature_services import FEATURE_SERVICES
from feature_repo.feature_views import cohort_profile, request_context_view, user_profile

FEAST_OBJECTS = (
    user,
    cohort,
    profile_source,
    cohort_source,
    request_context,
    user_profile,
    cohort_profile,
    request_context_view,
    *FEATURE_SERVICES,
)
