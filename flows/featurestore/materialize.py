"""Incremental materialization of the profile table into the online store.

Feast's `materialize-incremental` reads back through the offline store; the rows we need are already
in day files. This reads the days since the last run (minus an overlap, so that days recomputed for
late events are written again), keeps each user's latest row, and writes it in chunks in Feast's own
online encoding (flows/featurestore/online_writer.py). The interval is then recorded in the
registry, so `feast materialize-incremental` continues from where this stopped.
"""

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from feast import FeatureStore
from pydantic import BaseModel

from feature_repo.profile_features import user_profile
from feature_repo.profile_transforms import TIMESTAMP
from flows.featurestore.offline_table import read_range
from flows.featurestore.online_writer import write_online
from service.settings import Settings


class MaterializeReport(BaseModel):
    start: datetime
    end: datetime
    users: int
    chunks: int


def materialize_profiles(
    store: FeatureStore,
    settings: Settings,
    end: datetime,
    overlap: timedelta,
    chunk_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> MaterializeReport:
    """Write the latest profile row per user with start <= event_timestamp <= end."""
    view = store.registry.get_feature_view(user_profile.name, store.project, allow_cache=False)
    end = end.astimezone(UTC)
    last = view.most_recent_end_time
    start = (last.astimezone(UTC) - overlap) if last else end - view.ttl
    start = min(start, end)

    rows = read_range(settings, start, end)
    latest = rows.sort_values(TIMESTAMP).drop_duplicates("user_id", keep="last")
    written = write_online(store, view, latest, chunk_size, progress)
    store.registry.apply_materialization(view, store.project, start, end)
    return MaterializeReport(
        start=start, end=end, users=written, chunks=math.ceil(written / chunk_size)
    )
