"""Prefect flow `features`: event lake -> daily profiles -> offline table -> online store.

Each run computes the days since the last computed day, plus `overlap_days` before it, so
late events are picked up, from the state kept at its first day: it reads only those days'
events (flows/featurestore/profile_update.py). Rewriting a day replaces its file, so reruns
are idempotent; `full` recomputes every day from all events.

Users split into `shards` (flows/shards.py), each a task that computes its users' profiles
and writes their latest rows online; the materialized interval is recorded once every shard
is written, so a failed shard leaves the next run to write it again. Then the shards' tip
counts by time zone are summed into the cohort rows of the days computed, and each cohort's
latest row goes online (flows/featurestore/cohort_table.py).
"""

from datetime import UTC, datetime, timedelta

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from feature_repo.bounds import UtcDatetime
from flows.featurestore.cohort_table import materialize_cohorts, update_cohorts
from flows.featurestore.materialize import (
    MaterializeReport,
    MaterializeWindow,
    materialize_rows,
    materialize_window,
    record_materialization,
)
from flows.featurestore.offline_table import retire_other_counts
from flows.featurestore.profile_update import ProfileUpdate, update_profiles
from flows.shards import Shard, run_shards
from service.scoring.feature_store import apply_definitions, open_store
from service.settings import Settings


class FeaturesParams(BaseModel):
    """What a run may be asked to do; the CLI validates these before anything is written."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    as_of: UtcDatetime | None = Field(
        default=None,
        description="Compute and materialize up to this time (default: now; naive means UTC).",
    )
    overlap_days: int = Field(default=2, ge=0, le=28)
    chunk_size: int = Field(default=5000, ge=1, le=1_000_000)
    full: bool = Field(default=False, description="Recompute every day, not just recent ones.")
    shards: int = Field(
        default=1,
        ge=1,
        le=4096,
        description="User shards computed as separate tasks (flows/shards.py); a new count "
        "recomputes in full.",
    )


class FeaturesReport(BaseModel):
    profiles: ProfileUpdate
    materialized: MaterializeReport
    cohort_rows: int
    cohorts_online: int


class ShardReport(BaseModel):
    profiles: ProfileUpdate
    materialized: MaterializeReport


@task(cache_policy=NO_CACHE)
def open_online(settings: Settings, params: FeaturesParams, as_of: datetime) -> MaterializeWindow:
    """Apply the definitions, and the window of rows this run writes online."""
    store = open_store(settings)
    apply_definitions(store)
    return materialize_window(store, as_of, timedelta(days=params.overlap_days))


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def shard_features(
    settings: Settings,
    params: FeaturesParams,
    as_of: datetime,
    window: MaterializeWindow,
    shard: Shard,
) -> ShardReport:
    """One shard: its users' profiles into the offline table, then their latest rows online."""
    logger = get_run_logger()
    update = update_profiles(settings, as_of, params.overlap_days, params.full, shard)

    def progress(done: int, total: int) -> None:
        logger.info("shard %s: materialized %d/%d users", shard.name, done, total)

    store = open_store(settings)
    online = materialize_rows(store, settings, window, params.chunk_size, shard, progress)
    return ShardReport(profiles=update, materialized=online)


@task(cache_policy=NO_CACHE)
def cohort_features(
    settings: Settings, params: FeaturesParams, update: ProfileUpdate, window: MaterializeWindow
) -> tuple[int, int]:
    """The cohort rows of the days the shards computed, and each cohort's latest row online."""
    rows = update_cohorts(settings, update.days_computed, Shard.all(params.shards))
    online = materialize_cohorts(open_store(settings), settings, window.start, window.end)
    return rows, online


@task(cache_policy=NO_CACHE)
def close_online(settings: Settings, params: FeaturesParams, window: MaterializeWindow) -> None:
    """Once every shard is written: retire another shard count's files, record the interval."""
    retire_other_counts(settings, params.shards)
    record_materialization(open_store(settings), window)


@flow(name="features")
def features(
    params: FeaturesParams | None = None, settings: Settings | None = None
) -> FeaturesReport:
    params = params or FeaturesParams()
    settings = settings or Settings.from_env()
    logger = get_run_logger()
    as_of = params.as_of or datetime.now(UTC)

    window = open_online(settings, params, as_of)
    shards = run_shards(
        "feature-shards",
        shard_features,
        settings,
        params.shards,
        params=params,
        as_of=as_of,
        window=window,
    )
    update = ProfileUpdate.combined([s.profiles for s in shards])
    cohort_rows, cohorts_online = cohort_features(settings, params, update, window)
    close_online(settings, params, window)
    online = MaterializeReport(
        start=window.start,
        end=window.end,
        users=sum(s.materialized.users for s in shards),
        chunks=sum(s.materialized.chunks for s in shards),
    )
    logger.info(
        "%s run (%s): %d as-of days from %d events; %d users and %d cohorts online "
        "(window %s .. %s)",
        update.mode,
        update.reason,
        len(update.days_computed),
        update.events_read,
        online.users,
        cohorts_online,
        window.start.isoformat(),
        window.end.isoformat(),
    )
    return FeaturesReport(
        profiles=update, materialized=online, cohort_rows=cohort_rows, cohorts_online=cohorts_online
    )


if __name__ == "__main__":
    features()
