"""Entities: the user, and the cohort (the users of one time zone) that tip_scorer_v2 reads."""

from feast import Entity
from feast.value_type import ValueType

from feature_repo.cohort_features import COHORT_KEY

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.STRING,
    description="An app user; user_id is the recommender's opaque id.",
)

cohort = Entity(
    name="cohort",
    join_keys=[COHORT_KEY],
    value_type=ValueType.STRING,
    description="The users of one IANA time zone; the key is the request's zone name.",
)
