"""The offline profile table: per as-of day, one Parquet file per user shard, under the Feast
source path: `data/offline/user_profile/<day>/<shard>-of-<count>.parquet` (flows/shards.py).

A shard's day file is replaced whole (write aside, then rename), so a reader, Feast's offline
store included, sees either the old file or the new one, never half of it.

Feast's point-in-time read scans every file its FileSource's glob matches. A read for some
users only (a training shard) runs from a `view`: a directory whose relative glob matches the
files of the shards that may hold those users, as hard links, so its scan does not grow with
the world (service/scoring/feature_store.py offline_reads: the DuckDB offline store opens the
relative path from the cwd).
"""

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from feature_repo.data_sources import PROFILE_TABLE_DIR
from feature_repo.profile_features import PROFILE_AS_OF, PROFILE_FEATURES
from feature_repo.profile_transforms import TIMESTAMP
from feature_repo.user_hash import HashRange
from flows.shards import WHOLE, Shard
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

# Beside the table, not in it: PROFILE_TABLE_GLOB never matches a view's links.
VIEWS_DIR = ".views"

# Keep int64 columns integral when they hold nulls (preferred_hour may be unknown).
_NULLABLE = {pa.int64(): pd.Int64Dtype()}


def table_dir(settings: Settings) -> Path:
    return settings.home / PROFILE_TABLE_DIR


def _files(settings: Settings, day: date) -> list[Path]:
    return sorted((table_dir(settings) / day.isoformat()).glob("*.parquet"))


def partition_days(settings: Settings, shard: Shard | None = None) -> list[date]:
    """As-of days with a file: of `shard`, or of any shard when None."""
    directory = table_dir(settings)
    if not directory.is_dir():
        return []
    name = f"{shard.name}.parquet" if shard else "*.parquet"
    return sorted(
        date.fromisoformat(p.name)
        for p in directory.iterdir()
        if p.is_dir() and p.name[0] != "." and any(p.glob(name))
    )


def write_partitions(
    settings: Settings,
    profiles: pd.DataFrame,
    days: Iterable[date] | None = None,
    shard: Shard = WHOLE,
) -> list[date]:
    """Replace `shard`'s file of each of `days` (default: the days in `profiles`) with its rows
    in `profiles`: an empty file for a day without any, so the day counts as computed."""
    table = pa.Table.from_pandas(profiles, schema=SCHEMA, preserve_index=False)
    stamps = profiles[TIMESTAMP].dt.date.to_numpy()
    written = []
    for day in sorted(set(stamps) if days is None else days):
        directory = table_dir(settings) / day.isoformat()
        directory.mkdir(parents=True, exist_ok=True)
        # A leading dot keeps the half-written file out of Feast's and DuckDB's glob.
        tmp = directory / f".{shard.name}.{uuid.uuid4().hex}.tmp"
        pq.write_table(table.filter(pa.array(stamps == day)), tmp)
        os.replace(tmp, directory / f"{shard.name}.parquet")
        written.append(day)
    return written


def retire_other_counts(settings: Settings, count: int) -> int:
    """Delete the files of a shard count other than `count`: once every shard of the new
    count is written, the old count's rows are the same users twice. Returns files deleted."""
    stale = [
        path
        for day in partition_days(settings)
        for path in _files(settings, day)
        if not path.stem.endswith(f"-of-{count}")
    ]
    for path in stale:
        path.unlink()
    return len(stale)


def read_range(
    settings: Settings, start: datetime, end: datetime, shard: Shard | None = None
) -> pd.DataFrame:
    """Rows with start <= event_timestamp <= end (of `shard`, or of all), the window Feast
    materializes, ordered by time and user as one unsharded run writes them."""
    files = [
        path
        for day in partition_days(settings, shard)
        if start <= pd.Timestamp(day, tz="UTC") <= end
        for path in _files(settings, day)
        if shard is None or path.stem == shard.name
    ]
    if not files:
        return SCHEMA.empty_table().to_pandas(types_mapper=_NULLABLE.get)
    table = pa.concat_tables(pq.read_table(f, schema=SCHEMA) for f in files)
    table = table.sort_by([(TIMESTAMP, "ascending"), ("user_id", "ascending")])
    return table.to_pandas(types_mapper=_NULLABLE.get)


def files_holding(settings: Settings, users: HashRange) -> list[Path]:
    """The files whose shard's user hashes overlap [first, last] (flows/shards.py), of every
    day and every shard count the table holds."""
    first, last = users
    held = []
    for day in partition_days(settings):
        for path in _files(settings, day):
            index, _, count = path.stem.partition("-of-")
            low, high = Shard(index=int(index), count=int(count)).hash_range
            if high >= first and low <= last:
                held.append(path)
    return held


@contextlib.contextmanager
def view(settings: Settings, users: HashRange) -> Iterator[Path]:
    """A directory where the table's relative path holds `files_holding(users)` only, as hard
    links (the same inode: nothing copied), removed on exit."""
    root = table_dir(settings).parent / VIEWS_DIR / uuid.uuid4().hex
    try:
        for path in files_holding(settings, users):
            link = root / path.relative_to(settings.home)
            link.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, link)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
