"""Prefect flow `features`: event lake -> daily profiles -> offline table -> online store.

Each run computes the days since the last computed day, plus `overlap_days` before it, so
late events are picked up, from the state kept at its first day: it reads only those days'
events (flows/featurestore/profile_update.py). Rewriting a day replaces its file, so reruns
are idempotent; `full` recomputes every day from all events.
"""

from datetime import UTC, datetime, timedelta

from prefect import flow, get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from feature_repo.bounds import UtcDatetime
from flows.featurestore.materialize import MaterializeReport, materialize_profiles
from flows.featurestore.offline_table import retire_other_counts
from flows.featurestore.profile_update import ProfileUpdate, update_profiles
from flows.shards import Shard, task_runner
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


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def compute_profiles(
    settings: Settings, params: FeaturesParams, as_of: datetime, shard: Shard
) -> ProfileUpdate:
    return update_profiles(settings, as_of, params.overlap_days, params.full, shard)


@flow(name="profile-shards")
def profile_shards(settings: Settings, params: FeaturesParams, as_of: datetime) -> ProfileUpdate:
    """Every shard's profiles, one task each, on the runner the settings name."""
    futures = compute_profiles.map(
        unmapped(settings), unmapped(params), unmapped(as_of), Shard.all(params.shards)
    )
    return ProfileUpdate.combined(futures.result())


@task(cache_policy=NO_CACHE)
def retire_old_shards(settings: Settings, count: int) -> int:
    return retire_other_counts(settings, count)


@task(cache_policy=NO_CACHE)
def materialize(settings: Settings, params: FeaturesParams, end: datetime) -> MaterializeReport:
    logger = get_run_logger()
    store = open_store(settings)
    apply_definitions(store)

    def progress(done: int, total: int) -> None:
        logger.info("materialized %d/%d users", done, total)

    return materialize_profiles(
        store,
        settings,
        end=end,
        overlap=timedelta(days=params.overlap_days),
        chunk_size=params.chunk_size,
        progress=progress,
    )


@flow(name="features")
def features(
    params: FeaturesParams | None = None, settings: Settings | None = None
) -> FeaturesReport:
    params = params or FeaturesParams()
    settings = settings or Settings.from_env()
    logger = get_run_logger()
    as_of = params.as_of or datetime.now(UTC)

    runner = task_runner(settings)
    update = profile_shards.with_options(task_runner=runner)(settings, params, as_of)
    retire_old_shards(settings, params.shards)
    logger.info(
        "%s run (%s): %d as-of days from %d events",
        update.mode,
        update.reason,
        len(update.days_computed),
        update.events_read,
    )
    report = materialize(settings, params, as_of)
    logger.info(
        "materialized %d users as of %s (window %s .. %s)",
        report.users,
        as_of.isoformat(),
        report.start.isoformat(),
        report.end.isoformat(),
    )
    return FeaturesReport(profiles=update, materialized=report)


if __name__ == "__main__":
    features()
