"""Incremental materialization of the profile table into the online store, whole or by shard.

Feast's `materialize-incremental` reads back through the offline store; the rows we need are already
in day files. This reads the days since the last run (minus an overlap, so that days recomputed for
late events are written again), keeps each user's latest row, and writes it in chunks in Feast's own
online encoding (flows/featurestore/online_writer.py). The interval is then recorded in the
registry, so `feast materialize-incremental` continues from where this stopped. The features flow
writes each shard's rows in that shard's task and records the interval once all are written.
"""

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from feast import FeatureStore
from pydantic import BaseModel

from feature_repo.feature_views import user_profile
from feature_repo.profile_transforms import TIMESTAMP
from flows.featurestore.offline_table import read_range
from flows.featurestore.online_writer import write_online
from flows.shards import Shard
from service.settings import Settings


class MaterializeReport(BaseModel):
    start: datetime
    end: datetime
    users: int
    chunks: int


class MaterializeWindow(BaseModel):
    """The profile rows a run writes: start <= event_timestamp <= end."""

    start: datetime
    end: datetime


def materialize_window(store: FeatureStore, end: datetime, overlap: timedelta) -> MaterializeWindow:
    """From the last recorded end minus `overlap` (or one TTL back, the first time) to `end`."""
    view = store.registry.get_feature_view(user_profile.name, store.project, allow_cache=False)
    end = end.astimezone(UTC)
    last = view.most_recent_end_time
    start = (last.astimezone(UTC) - overlap) if last else end - view.ttl
    return MaterializeWindow(start=min(start, end), end=end)


def materialize_rows(
    store: FeatureStore,
    settings: Settings,
    window: MaterializeWindow,
    chunk_size: int,
    shard: Shard | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> MaterializeReport:
    """Write the latest row in `window` of each user (of `shard`, or of every shard)."""
    view = store.get_feature_view(user_profile.name)
    rows = read_range(settings, window.start, window.end, shard)
    latest = rows.sort_values(TIMESTAMP).drop_duplicates("user_id", keep="last")
    written = write_online(store, view, latest, chunk_size, progress)
    return MaterializeReport(
        start=window.start, end=window.end, users=written, chunks=math.ceil(written / chunk_size)
    )


def record_materialization(store: FeatureStore, window: MaterializeWindow) -> None:
    """Record the interval in the registry, once every shard's rows are written, so that
    `feast materialize-incremental` continues from its end."""
    view = store.registry.get_feature_view(user_profile.name, store.project, allow_cache=False)
    store.registry.apply_materialization(view, store.project, window.start, window.end)


def materialize_profiles(
    store: FeatureStore,
    settings: Settings,
    end: datetime,
    overlap: timedelta,
    chunk_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> MaterializeReport:
    """Write the latest profile row per user with start <= event_timestamp <= end."""
    window = materialize_window(store, end, overlap)
    report = materialize_rows(store, settings, window, chunk_size, progress=progress)
    record_materialization(store, window)
    return report
