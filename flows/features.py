"""Prefect flow `features`: event log -> daily profiles -> offline table -> online store.

Each run recomputes the days since the last computed day, plus `overlap_days` before it, so
late events are picked up; rewriting a day replaces its file, so reruns are idempotent.
"""

from datetime import UTC, date, datetime, timedelta

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from feature_repo.bounds import UtcDatetime
from feature_repo.profile_transforms import EventFrames, compute_daily_profiles
from flows.featurestore.event_frames import load_event_frames
from flows.featurestore.materialize import MaterializeReport, materialize_profiles
from flows.featurestore.offline_table import partition_days, write_partitions
from service.events.lake import open_lake
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


class FeaturesReport(BaseModel):
    users: int
    days_computed: list[date]
    rows_written: int
    materialized: MaterializeReport


def days_to_compute(
    frames: EventFrames, existing: list[date], as_of: datetime, overlap_days: int, full: bool
) -> list[date]:
    """As-of days (UTC midnights) whose whole preceding day has passed by `as_of`."""
    stamps = pd.concat(
        [frames.tasks["created"], frames.impressions["timestamp"], frames.feedback["timestamp"]]
    )
    if stamps.empty:
        return []
    first = stamps.min().date() + timedelta(days=1)
    last = as_of.astimezone(UTC).date()
    if existing and not full:
        first = max(first, existing[-1] - timedelta(days=overlap_days))
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


@task(cache_policy=NO_CACHE)
def load_events(settings: Settings) -> EventFrames:
    return load_event_frames(open_lake(settings))


@task(cache_policy=NO_CACHE)
def compute_profiles(frames: EventFrames, days: list[date]) -> pd.DataFrame:
    return compute_daily_profiles(frames, days)


@task(cache_policy=NO_CACHE)
def write_offline(settings: Settings, profiles: pd.DataFrame) -> list[date]:
    return write_partitions(settings, profiles) if len(profiles) else []


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

    frames = load_events(settings)
    days = days_to_compute(
        frames, partition_days(settings), as_of, params.overlap_days, params.full
    )
    logger.info("computing %d as-of days", len(days))
    profiles = compute_profiles(frames, days)
    written = write_offline(settings, profiles)
    report = materialize(settings, params, as_of)
    logger.info(
        "materialized %d users as of %s (window %s .. %s)",
        report.users,
        as_of.isoformat(),
        report.start.isoformat(),
        report.end.isoformat(),
    )
    return FeaturesReport(
        users=int(profiles["user_id"].nunique()),
        days_computed=written,
        rows_written=len(profiles),
        materialized=report,
    )


if __name__ == "__main__":
    features()
