"""One entity row of a FeatureService, read the way `get_online_features` reads it, with its
per-request planning done once.

`get_online_features` is built for many rows and any feature list: per call it resolves the
FeatureService against the registry, converts the entity rows to protos, reads each view,
assembles a response proto, and runs on-demand views by converting their inputs to protos
and back. For /score's one row that was ~0.7 ms of CPU, most of a request, while everything
but the read itself and the on-demand function depends only on the FeatureService. So the
plan is made here, at start-up, from the registry's objects, and a request costs:

- one `online_read` per feature view, through the configured provider: Feast's own online
  store (SQLite, Redis, ...) is still the only reader of the store;
- one call of each on-demand view's `transform_dict` on the request data: the registry's copy
  of the function, the one Feast itself runs on both the online and the historical path.

Values come back as `get_online_features(...).to_dict()` gives them, one per name;
tests/service/test_feature_service_read.py holds the two equal over random users and request
contexts, and the parity test holds serving equal to training. What this does not cover (a
view keyed by several entities or renamed join keys, an on-demand view that reads a feature
view) is refused when the plan is made, naming the view.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from feast import FeatureService, FeatureStore, FeatureView
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.transformation.python_transformation import PythonTransformation
from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values
from feast.value_type import ValueType


class UnsupportedFeatureService(ValueError):
    """A FeatureService this reader cannot plan, and which of its views is why."""


@dataclass(frozen=True)
class _ViewRead:
    view: FeatureView
    join_key: str
    key_type: ValueType
    features: list[str]


@dataclass(frozen=True)
class _OnDemandRead:
    transformation: PythonTransformation
    inputs: tuple[str, ...]
    features: tuple[str, ...]


class FeatureServiceRead:
    """Reads one entity's row of `feature_service` from `store`'s online store."""

    def __init__(self, store: FeatureStore, feature_service: FeatureService) -> None:
        self.config = store.config
        self.provider = store.provider
        known_on_demand = {v.name: v for v in store.list_on_demand_feature_views()}
        views: list[_ViewRead] = []
        on_demand: list[_OnDemandRead] = []
        for projection in feature_service.feature_view_projections:
            names = [f.name for f in projection.features]
            if projection.join_key_map:
                raise UnsupportedFeatureService(f"{projection.name}: renamed join keys")
            odfv = known_on_demand.get(projection.name)
            if odfv is None:
                views.append(_view_read(store.get_feature_view(projection.name), names))
                continue
            if odfv.source_feature_view_projections:
                raise UnsupportedFeatureService(f"{odfv.name}: reads a feature view")
            transformation = odfv.feature_transformation
            if not isinstance(transformation, PythonTransformation) or odfv.singleton:
                raise UnsupportedFeatureService(f"{odfv.name}: not a python-mode batch view")
            inputs = tuple(
                field.name
                for source in odfv.source_request_sources.values()
                for field in source.schema
            )
            on_demand.append(_OnDemandRead(transformation, inputs, tuple(names)))
        self.views = tuple(views)
        self.on_demand = tuple(on_demand)

    @property
    def join_keys(self) -> frozenset[str]:
        """The entity keys a read needs, one per feature view."""
        return frozenset(read.join_key for read in self.views)

    def read_views(self, entity: Mapping[str, Any]) -> dict[str, Any]:
        """The feature views' values for one entity row, a value per join key (None where the
        store holds none)."""
        row: dict[str, Any] = {}
        for read in self.views:
            # Feast's conversion, with its type checks: a key of the wrong type is a TypeError.
            values = python_values_to_proto_values([entity[read.join_key]], read.key_type)
            key = EntityKey(join_keys=[read.join_key], entity_values=values)
            [(_, stored)] = self.provider.online_read(self.config, read.view, [key], read.features)
            for name in read.features:
                value = stored.get(name) if stored else None
                row[name] = None if value is None else feast_value_type_to_python_type(value)
        return row

    def compute_on_demand(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The on-demand views' values for one row of request data."""
        row: dict[str, Any] = {}
        for read in self.on_demand:
            # What OnDemandFeatureView.transform_dict runs for a python-mode view that reads no
            # feature view, without the run-time type checks of every argument (~0.1 ms).
            out = read.transformation.transform({name: [request[name]] for name in read.inputs})
            row.update({name: out[name][0] for name in read.features})
        return row


def _view_read(view: FeatureView, features: list[str]) -> _ViewRead:
    if len(view.entity_columns) != 1:
        raise UnsupportedFeatureService(f"{view.name}: keyed by {len(view.entity_columns)} columns")
    [key] = view.entity_columns
    return _ViewRead(view, key.name, key.dtype.to_value_type(), features)
