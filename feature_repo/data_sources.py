"""Data sources: the batch tables of daily user profiles and cohorts, and the request-time
context."""

from feast import FileSource, RequestSource
from feast.data_format import ParquetFormat
from feast.field import Field
from feast.types import String

# Per as-of day a directory, in it one Parquet file per user shard, each written atomically by
# the `features` flow. The path is relative so that it resolves against the Feast repo path
# (TIPML_HOME), not the cwd.
PROFILE_TABLE_DIR = "data/offline/user_profile"
PROFILE_TABLE_GLOB = f"{PROFILE_TABLE_DIR}/*/*.parquet"

# Per as-of day one Parquet file of every time zone's row, written by the `features` flow once
# all user shards have counted their tips.
COHORT_TABLE_DIR = "data/offline/cohort_profile"
COHORT_TABLE_GLOB = f"{COHORT_TABLE_DIR}/*.parquet"


def _daily_table(name: str, glob: str, description: str) -> FileSource:
    return FileSource(
        name=name,
        path=glob,
        file_format=ParquetFormat(),
        timestamp_field="event_timestamp",
        description=description,
    )


profile_source = _daily_table(
    "user_profile_daily",
    PROFILE_TABLE_GLOB,
    "Daily user profiles computed from the event log, as of each UTC midnight.",
)
cohort_source = _daily_table(
    "cohort_profile_daily",
    COHORT_TABLE_GLOB,
    "Daily 28-day tip counts per time zone, as of each UTC midnight.",
)

# The recommender sends these with every request; training reads them from the context
# logged with each impression. They feed the context on-demand feature view.
request_context = RequestSource(
    name="request_context",
    schema=[
        Field(name="request_timestamp", dtype=String, description="ISO 8601 with offset."),
        Field(name="timezone", dtype=String, description="IANA timezone of the user."),
        Field(
            name="tasks_json",
            dtype=String,
            description="Open tasks as JSON [{priority, due}], without titles.",
        ),
    ],
    description="Request-time context: when, where, and the open task list.",
)
