"""Prefect flow `compaction`: rewrite each closed day's many small event files as one.

Writers add a file per batch (the service one per /feedback, the consumer one per fetched
batch and day), so a busy day holds thousands of small files that every read of it must open.
Once a day is closed (`closed_after_days` whole days behind today, UTC: late events have
landed), its files of each event type are rewritten as one, each event_id once, by
service/events/lake.py `EventLake.compact`, which never lets a reader see a day half done.
Reruns are idempotent: a compacted day has one file and is left alone.
"""

from datetime import UTC, date, datetime, timedelta

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from service.events.lake import open_lake
from service.settings import Settings


class CompactionParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    closed_after_days: int = Field(
        default=1, ge=0, le=30, description="Whole UTC days a day must be behind today."
    )


class CompactedType(BaseModel):
    type: str
    days: int = Field(description="Days rewritten.")
    files_read: int
    rows_written: int


class CompactionReport(BaseModel):
    through: date
    types: list[CompactedType]


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10)
def compact_type(settings: Settings, kind: str, through: date) -> CompactedType:
    """Every closed day of one event type. Safe to retry: each day is compacted on its own."""
    lake = open_lake(settings, writer_id="compaction")
    days = files = rows = 0
    for day in lake.days(kind):
        if day > through:
            break
        read, written = lake.compact(kind, day)
        if written:
            days, files, rows = days + 1, files + read, rows + written
    return CompactedType(type=kind, days=days, files_read=files, rows_written=rows)


@flow(name="compaction")
def compaction(
    params: CompactionParams | None = None, settings: Settings | None = None
) -> CompactionReport:
    params = params or CompactionParams()
    settings = settings or Settings.from_env()
    logger = get_run_logger()
    through = datetime.now(UTC).date() - timedelta(days=params.closed_after_days + 1)
    kinds = open_lake(settings).types()
    report = CompactionReport(
        through=through, types=[compact_type(settings, kind, through) for kind in kinds]
    )
    for compacted in report.types:
        logger.info(
            "%s: %d days, %d files -> %d rows",
            compacted.type,
            compacted.days,
            compacted.files_read,
            compacted.rows_written,
        )
    return report


if __name__ == "__main__":
    compaction()
