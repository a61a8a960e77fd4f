"""The offline profile table: one Parquet file per as-of day under the Feast source path.

A day's file is replaced whole (write aside, then rename), so a reader, Feast's offline store
included, sees either the old day or the new one, never half of it.
"""

import os
import uuid
from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from feature_repo.data_sources import PROFILE_TABLE_DIR
from feature_repo.profile_features import PROFILE_AS_OF, PROFILE_FEATURES
from feature_repo.profile_transforms import TIMESTAMP
from service.settings import Settings

SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field(TIMESTAMP, pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field(PROFILE_AS_OF, pa.timestamp("us", tz="UTC"), nullable=False),
        *(
            pa.field(f.name, pa.int64() if f.dtype == "int64" else pa.float64())
            for f in PROFILE_FEATURES
        ),
    ]
)

# Keep int64 columns integral when they hold nulls (preferred_hour may be unknown).
_NULLABLE = {pa.int64(): pd.Int64Dtype()}


def table_dir(settings: Settings) -> Path:
    return settings.home / PROFILE_TABLE_DIR


def partition_days(settings: Settings) -> list[date]:
    directory = table_dir(settings)
    if not directory.is_dir():
        return []
    return sorted(date.fromisoformat(p.stem) for p in directory.glob("*.parquet"))


def write_partitions(settings: Settings, profiles: pd.DataFrame) -> list[date]:
    """Replace the day file of every as-of day present in `profiles`."""
    directory = table_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(profiles, schema=SCHEMA, preserve_index=False)
    days = profiles[TIMESTAMP].dt.date
    written = []
    for day in sorted(days.unique()):
        part = table.filter(pa.array((days == day).to_numpy()))
        # A leading dot keeps the half-written file out of Feast's and DuckDB's glob.
        tmp = directory / f".{day.isoformat()}.{uuid.uuid4().hex}.tmp"
        pq.write_table(part, tmp)
        os.replace(tmp, directory / f"{day.isoformat()}.parquet")
        written.append(day)
    return written


def read_range(settings: Settings, start: datetime, end: datetime) -> pd.DataFrame:
    """Rows with start <= event_timestamp <= end, the window Feast materializes."""
    files = [
        table_dir(settings) / f"{day.isoformat()}.parquet"
        for day in partition_days(settings)
        if start <= pd.Timestamp(day, tz="UTC") <= end
    ]
    if not files:
        return SCHEMA.empty_table().to_pandas(types_mapper=_NULLABLE.get)
    table = pa.concat_tables(pq.read_table(f, schema=SCHEMA) for f in files)
    return table.to_pandas(types_mapper=_NULLABLE.get)
