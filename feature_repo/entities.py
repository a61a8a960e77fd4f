"""Entities: the user is the only join key the scorer needs."""

from feast import Entity
from feast.value_type import ValueType

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.STRING,
    description="An app user; user_id is the recommender's opaque id.",
)
