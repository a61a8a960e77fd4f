"""The offline cohort table and its online rows: `<offline>/cohort_profile/<as-of day>.parquet`.

Once every user shard has counted its users' tips by time zone (flows/featurestore/
profile_update.py keeps each shard's counts per day), this sums the shards' shares into the
cohort rows of the days the run computed (feature_repo/cohort_transforms.py) and replaces each
day's file whole (service/storage.py). The shares are a few rows per zone and day, whatever the
number of users, so the sum runs in the flow itself. The latest row of each cohort then goes
online through Feast's own writer: a few hundred zones at most.
"""

from datetime import date, datetime
from pathlib import PurePosixPath

import pandas as pd
import pyarrow as pa
from feast import FeatureStore

from feature_repo.cohort_features import COHORT_AS_OF, COHORT_FEATURES, COHORT_KEY
from feature_repo.cohort_transforms import COLUMNS, cohort_profiles, window_start
from feature_repo.data_sources import COHORT_TABLE_DIR
from feature_repo.feature_views import cohort_profile
from feature_repo.profile_transforms import TIMESTAMP
from flows.featurestore.offline_table import storage
from flows.featurestore.profile_update import read_cohort_aggregates
from flows.shards import Shard
from service.settings import Settings

_UTC = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema(
    [
        pa.field(COHORT_KEY, pa.string(), nullable=False),
        pa.field(TIMESTAMP, _UTC, nullable=False),
        pa.field(COHORT_AS_OF, _UTC, nullable=False),
        *(pa.field(f.name, pa.int64()) for f in COHORT_FEATURES),
    ]
)
TABLE = COHORT_TABLE_DIR.rsplit("/", 1)[-1]


def update_cohorts(settings: Settings, days: list[date], shards: list[Shard]) -> int:
    """Write the cohort rows of each of `days` from the counts every shard kept; returns rows."""
    if not days:
        return 0
    counts = read_cohort_aggregates(settings, window_start(min(days)), max(days), shards)
    rows = cohort_profiles(counts, days)
    place = storage(settings)
    table = pa.Table.from_pandas(rows[list(COLUMNS)], schema=SCHEMA, preserve_index=False)
    stamps = rows[TIMESTAMP].dt.date.to_numpy() if len(rows) else []
    for day in sorted(set(days)):
        mask = pa.array([stamp == day for stamp in stamps], type=pa.bool_())
        place.write_table(place.path(TABLE, f"{day.isoformat()}.parquet"), table.filter(mask))
    return len(rows)


def cohort_files(settings: Settings) -> dict[str, date]:
    """The table's day files and their days; a file not named for a day is not the table's."""
    place = storage(settings)
    files = {}
    for path in place.list_files(place.path(TABLE)):
        try:
            files[path] = date.fromisoformat(PurePosixPath(path).stem)
        except ValueError:
            continue
    return files


def read_cohorts(settings: Settings, start: datetime, end: datetime) -> pd.DataFrame:
    """Rows with start <= event_timestamp <= end."""
    place = storage(settings)
    files = [
        path
        for path, day in cohort_files(settings).items()
        if start <= pd.Timestamp(day, tz="UTC") <= end
    ]
    if not files:
        return SCHEMA.empty_table().to_pandas()
    return pa.concat_tables(place.read_table(f, schema=SCHEMA) for f in files).to_pandas()


def materialize_cohorts(
    store: FeatureStore, settings: Settings, start: datetime, end: datetime
) -> int:
    """Write each cohort's latest row in [start, end] online; returns the cohorts written."""
    rows = read_cohorts(settings, start, end)
    latest = rows.sort_values(TIMESTAMP).drop_duplicates(COHORT_KEY, keep="last")
    if len(latest):
        store.write_to_online_store(cohort_profile.name, latest.reset_index(drop=True))
    return len(latest)
