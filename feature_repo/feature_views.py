"""The feature views, generated from the tables: `user_profile` from PROFILE_FEATURES,
`cohort_profile` from COHORT_FEATURES, and the on-demand `request_context_view` that runs
`request_context_features` (whose Feast name it keeps) over the request context."""

from feast import Entity, FeatureView, FileSource
from feast.field import Field
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64, UnixTimestamp

from feature_repo.cohort_features import COHORT_AS_OF, COHORT_FEATURES
from feature_repo.context_features import CONTEXT_FEATURES, request_context_features
from feature_repo.data_sources import cohort_source, profile_source, request_context
from feature_repo.entities import cohort, user
from feature_repo.profile_features import PROFILE_AS_OF, PROFILE_FEATURES, ProfileFeature

FEAST_DTYPES = {"int64": Int64, "float64": Float64}


def feature_field(feature: ProfileFeature) -> Field:
    return Field(
        name=feature.name,
        dtype=FEAST_DTYPES[feature.dtype],
        description=feature.description,
        tags={
            "ttl_seconds": str(int(feature.ttl.total_seconds())),
            "fallback": repr(feature.fallback),
            "source": feature.source,
        },
    )


def daily_table_view(
    name: str,
    entity: Entity,
    features: tuple[ProfileFeature, ...],
    as_of: str,
    source: FileSource,
    description: str,
) -> FeatureView:
    """A view of a daily table: its features, and the time each row was computed (`as_of`,
    carried so that both read paths can apply each feature's own TTL)."""
    return FeatureView(
        name=name,
        entities=[entity],
        ttl=max(f.ttl for f in features),
        schema=[
            *(feature_field(f) for f in features),
            Field(
                name=as_of,
                dtype=UnixTimestamp,
                description="When the row's values were computed (end of the UTC day).",
            ),
        ],
        source=source,
        online=True,
        description=description,
    )


user_profile = daily_table_view(
    "user_profile",
    user,
    PROFILE_FEATURES,
    PROFILE_AS_OF,
    profile_source,
    "Daily user profile over rolling windows; per-feature TTL in field tags.",
)
cohort_profile = daily_table_view(
    "cohort_profile",
    cohort,
    COHORT_FEATURES,
    COHORT_AS_OF,
    cohort_source,
    "Daily 28-day tip counts of the users of one time zone.",
)

request_context_view = on_demand_feature_view(
    sources=[request_context],
    # Bare fields: Feast checks them for equality against fields inferred from a trial run
    # of the function, which carry no description or tags. CONTEXT_FEATURES documents them.
    schema=[Field(name=f.name, dtype=Int64) for f in CONTEXT_FEATURES],
    mode="python",
    description="Context features computed per request from the request's time and task list.",
)(request_context_features)
