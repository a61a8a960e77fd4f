"""The feature views, generated from the tables: `user_profile` from PROFILE_FEATURES and the
on-demand `request_context_view` that runs `request_context_features` (whose Feast name it
keeps) over the request context."""

from feast import FeatureView
from feast.field import Field
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64, UnixTimestamp

from feature_repo.context_features import CONTEXT_FEATURES, request_context_features
from feature_repo.data_sources import profile_source, request_context
from feature_repo.entities import user
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


user_profile = FeatureView(
    name="user_profile",
    entities=[user],
    ttl=max(f.ttl for f in PROFILE_FEATURES),
    schema=[
        *(feature_field(f) for f in PROFILE_FEATURES),
        Field(
            name=PROFILE_AS_OF,
            dtype=UnixTimestamp,
            description="When the row's features were computed (end of the UTC day).",
        ),
    ],
    source=profile_source,
    online=True,
    description="Daily user profile over rolling windows; per-feature TTL in field tags.",
)

request_context_view = on_demand_feature_view(
    sources=[request_context],
    # Bare fields: Feast checks them for equality against fields inferred from a trial run
    # of the function, which carry no description or tags. CONTEXT_FEATURES documents them.
    schema=[Field(name=f.name, dtype=Int64) for f in CONTEXT_FEATURES],
    mode="python",
    description="Context features computed per request from the request's time and task list.",
)(request_context_features)
