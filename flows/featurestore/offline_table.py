"""The offline profile table: per as-of day, one Parquet file per user shard,
`<offline>/user_profile/<day>/<shard>-of-<count>.parquet` (flows/shards.py), where <offline> is
TIPML_OFFLINE_URL, a path or s3://bucket/prefix (default: the home's data/offline, the
FileSource's own path), so workers on other hosts read and write it by URL.

A shard's day file is replaced whole (service/storage.py), so a reader sees either the old
file or the new one, never half of it.

Feast reads the table through `offline_reads`: from a `view`, a local directory that holds
the files of the shards that may hold the users read, under the FileSource's relative path
(hard links when the table is on this disk, downloads when not). A shard's point-in-time read
then scans its own users' files, not the world's, and Feast's DuckDB store never needs to
reach a bucket (it opens the relative path from the cwd).
"""

import contextlib
import logging
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from pathlib import Path, PurePosixPath

import pandas as pd
import pyarrow as pa

from feature_repo.data_sources import COHORT_TABLE_DIR, PROFILE_TABLE_DIR
from feature_repo.profile_features import PROFILE_AS_OF, PROFILE_FEATURES
from feature_repo.profile_transforms import TIMESTAMP
from feature_repo.user_hash import HashRange
from flows.shards import WHOLE, Shard
from service.settings import Settings
from service.storage import Storage

log = logging.getLogger(__name__)

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

TABLE = PurePosixPath(PROFILE_TABLE_DIR).name
# Beside the table, not in it: the FileSource glob never matches a view's links.
VIEWS_DIR = ".views"

# Keep int64 columns integral when they hold nulls (preferred_hour may be unknown).
_NULLABLE = {pa.int64(): pd.Int64Dtype()}

# One offline read at a time in a process: `offline_reads` changes the process's working
# directory and ibis's default connection, so reads in threads would read through each other's.
_READS = threading.Lock()


def storage(settings: Settings) -> Storage:
    return Storage(settings.offline_location)


def _files(place: Storage, day: date) -> dict[str, Shard]:
    """The day's files and the shard each holds; a file of another name is not the table's,
    and is skipped."""
    files = {}
    for path in place.list_files(place.path(TABLE, day.isoformat())):
        if (shard := Shard.from_name(_stem(path))) is None:
            log.warning("%s: not a shard file of the profile table, skipped", path)
        else:
            files[path] = shard
    return files


def _day(name: str) -> date | None:
    try:
        return date.fromisoformat(name)
    except ValueError:
        return None


def partition_days(settings: Settings, shard: Shard | None = None) -> list[date]:
    """As-of days with a file: of `shard`, or of any shard when None. A directory that is
    not a day is not the table's, and is skipped."""
    place = storage(settings)
    days = (_day(name) for name in place.list_dirs(place.path(TABLE)))
    return sorted(
        day
        for day in days
        if day is not None
        and any(shard is None or held == shard for held in _files(place, day).values())
    )


def _stem(path: str) -> str:
    return PurePosixPath(path).stem


def write_partitions(
    settings: Settings,
    profiles: pd.DataFrame,
    days: Iterable[date] | None = None,
    shard: Shard = WHOLE,
) -> list[date]:
    """Replace `shard`'s file of each of `days` (default: the days in `profiles`) with its rows
    in `profiles`: an empty file for a day without any, so the day counts as computed."""
    place = storage(settings)
    table = pa.Table.from_pandas(profiles, schema=SCHEMA, preserve_index=False)
    stamps = profiles[TIMESTAMP].dt.date.to_numpy()
    written = sorted(set(stamps) if days is None else days)
    for day in written:
        path = place.path(TABLE, day.isoformat(), f"{shard.name}.parquet")
        place.write_table(path, table.filter(pa.array(stamps == day)))
    return written


def retire_other_counts(settings: Settings, count: int) -> int:
    """Delete the files of a shard count other than `count`: once every shard of the new
    count is written, the old count's rows are the same users twice. Returns files deleted."""
    place = storage(settings)
    stale = [
        path
        for day in partition_days(settings)
        for path, held in _files(place, day).items()
        if held.count != count
    ]
    place.delete(stale)
    return len(stale)


def read_range(
    settings: Settings, start: datetime, end: datetime, shard: Shard | None = None
) -> pd.DataFrame:
    """Rows with start <= event_timestamp <= end (of `shard`, or of all), the window Feast
    materializes, ordered by time and user as one unsharded run writes them."""
    place = storage(settings)
    files = [
        path
        for day in partition_days(settings, shard)
        if start <= pd.Timestamp(day, tz="UTC") <= end
        for path, held in _files(place, day).items()
        if shard is None or held == shard
    ]
    if not files:
        return SCHEMA.empty_table().to_pandas(types_mapper=_NULLABLE.get)
    table = pa.concat_tables(place.read_table(f, schema=SCHEMA) for f in files)
    table = table.sort_by([(TIMESTAMP, "ascending"), ("user_id", "ascending")])
    return table.to_pandas(types_mapper=_NULLABLE.get)


def files_holding(settings: Settings, users: HashRange) -> list[str]:
    """The files whose shard's user hashes overlap [first, last] (flows/shards.py), of every
    day and every shard count the table holds."""
    first, last = users
    place = storage(settings)
    held = []
    for day in partition_days(settings):
        for path, shard in _files(place, day).items():
            low, high = shard.hash_range
            if high >= first and low <= last:
                held.append(path)
    return held


@contextlib.contextmanager
def view(settings: Settings, users: HashRange) -> Iterator[Path]:
    """A local directory where the FileSources' relative paths hold `files_holding(users)`
    only, and the cohort table, removed on exit: hard links beside a table on this disk
    (nothing copied), a temporary download of a table elsewhere."""
    place = storage(settings)
    if place.local:
        root = Path(place.root) / VIEWS_DIR / uuid.uuid4().hex
    else:
        root = Path(tempfile.mkdtemp(prefix="tipml-view-"))
    try:
        for path in files_holding(settings, users):
            day, name = PurePosixPath(path).parts[-2:]
            place.copy_to(path, root / PROFILE_TABLE_DIR / day / name)
        # Every cohort file: one per day, a few rows per time zone, read by any user's row.
        for path in place.list_files(place.path(PurePosixPath(COHORT_TABLE_DIR).name)):
            place.copy_to(path, root / COHORT_TABLE_DIR / PurePosixPath(path).name)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def offline_reads(settings: Settings, users: HashRange | None = None) -> Iterator[None]:
    """Run Feast offline reads of the users in `users` (all when None) from a `view`, in a
    DuckDB connection of their own, closed on exit; one block at a time in a process.

    Feast's DuckDB offline store opens relative FileSource paths from the process's cwd, not
    from the repo path as its file store and the `feast` CLI (run inside the repo) do. It runs
    on ibis's default connection, where each read registers its entity frame and its files as
    views that are never dropped: a worker building shard after shard kept ~40 MB more for
    each, until the connection they live in is closed.
    """
    import ibis

    with _READS, view(settings, WHOLE.hash_range if users is None else users) as root:
        previous = ibis.options.default_backend
        connection = ibis.duckdb.connect()
        ibis.set_backend(connection)
        try:
            with contextlib.chdir(root):
                yield
        finally:
            ibis.options.default_backend = previous
            connection.disconnect()
