"""Daily profiles into the offline table: the full recompute, and the daily run that reads only
the new days.

Beside the profile table, in the same storage (flows/featurestore/offline_table.py), the
features flow keeps per shard what its next daily run starts from
(`feature_repo/profile_transforms.py` says what each holds):

    <offline>/profile_state/<shard>/aggregates/<UTC day>.parquet    per-user counts of a day
    <offline>/profile_state/<shard>/cohort_aggregates/<UTC day>.parquet   the shard's users'
                                                              tip counts of a day by time zone
    <offline>/profile_state/<shard>/states/<as-of day>/<written>/users.parquet  a state
                                                              .../open_tasks.parquet

A run computes the as-of days from (the last computed day - overlap_days) to its as-of day,
so events up to `overlap_days` late are picked up. It starts from the kept state at its first
day, reading raw events only from the day before that (for the tip a reaction answers) and
the WINDOW_DAYS of aggregates before it: its cost is set by the new days, not by the history
or the longest window. It recomputes everything when asked (`full`), when there is no profile
yet, or when the state its first day needs is not kept (a larger overlap than the last run
kept states for, or a home from before the states or the cohort counts). A full run replaces
every aggregate and state; events later than the overlap are picked up by the next full run.

Every file is visible only whole (service/storage.py). Profiles are written first, then the
aggregates, then the states: a state is the promise that everything before it is written, so
a run that crashes part way leaves the last run's states, and the next run starts from one.
A state is its two files in a directory of its own, open_tasks written last: a directory
without it is a state never finished, which no reader takes.
"""

import logging
import math
import time
from datetime import UTC, date, datetime, timedelta
from typing import Literal

import pandas as pd
import pyarrow as pa
from pydantic import BaseModel

from feature_repo.cohort_features import COHORT_KEY
from feature_repo.profile_transforms import (
    AGGREGATE_COLUMNS,
    COHORT_COUNT_COLUMNS,
    DAY,
    OPEN_TASK_COLUMNS,
    REACTION_HORIZON,
    USER_STATE_COLUMNS,
    WINDOW_DAYS,
    ProfileStart,
    ProfileState,
    empty_aggregates,
    empty_cohort_aggregates,
    run_profiles,
)
from flows.featurestore.event_frames import load_event_frames
from flows.featurestore.offline_table import partition_days, storage, write_partitions
from flows.shards import WHOLE, Shard
from service.events.lake import open_lake
from service.settings import Settings
from service.storage import Storage

log = logging.getLogger(__name__)

PROFILE_STATE_DIR = "profile_state"
_UTC = pa.timestamp("us", tz="UTC")
AGGREGATES_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string()),
        pa.field("day", pa.date32()),
        *(pa.field(c, pa.int32()) for c in AGGREGATE_COLUMNS),
    ]
)
COHORT_AGGREGATES_SCHEMA = pa.schema(
    [
        pa.field(COHORT_KEY, pa.string()),
        pa.field("day", pa.date32()),
        *(pa.field(c, pa.int32()) for c in COHORT_COUNT_COLUMNS),
    ]
)
USERS_SCHEMA = pa.schema(
    [
        pa.field(c, {"user_id": pa.string(), "first_seen": _UTC}.get(c, pa.int64()))
        for c in USER_STATE_COLUMNS
    ]
)
OPEN_TASKS_SCHEMA = pa.schema(
    [pa.field(c, _UTC if c in ("created", "due") else pa.string()) for c in OPEN_TASK_COLUMNS]
)


class ProfileUpdate(BaseModel):
    """What a run did: how it started, the as-of days it wrote and the raw events it read
    (summed over shards: each reads its users' events and every completion)."""

    mode: Literal["full", "incremental"]
    reason: str
    days_computed: list[date]
    rows_written: int
    users: int
    events_read: int

    @classmethod
    def combined(cls, shards: list["ProfileUpdate"]) -> "ProfileUpdate":
        """One report for a run's shards: full when any shard ran in full."""
        full = [u for u in shards if u.mode == "full"]
        return cls(
            mode="full" if full else "incremental",
            reason="; ".join(sorted({u.reason for u in full or shards})),
            days_computed=sorted({d for u in shards for d in u.days_computed}),
            rows_written=sum(u.rows_written for u in shards),
            users=sum(u.users for u in shards),
            events_read=sum(u.events_read for u in shards),
        )


def state_root(settings: Settings, shard: Shard = WHOLE) -> tuple[Storage, str]:
    place = storage(settings)
    return place, place.path(PROFILE_STATE_DIR, shard.name)


def write_aggregates(
    settings: Settings, aggregates: pd.DataFrame, days: list[date], shard: Shard = WHOLE
) -> None:
    """Replace the aggregates of each of `days`; a day without a row keeps no file."""
    place, root = state_root(settings, shard)
    table = pa.Table.from_pandas(aggregates, schema=AGGREGATES_SCHEMA, preserve_index=False)
    by_day = aggregates["day"].to_numpy()
    for day in days:
        path = f"{root}/aggregates/{day.isoformat()}.parquet"
        rows = by_day == day
        if rows.any():
            place.write_table(path, table.filter(pa.array(rows)))
        elif place.exists(path):
            place.delete([path])


def write_cohort_aggregates(
    settings: Settings, counts: pd.DataFrame, days: list[date], shard: Shard = WHOLE
) -> None:
    """Replace the cohort counts of each of `days`: a file for every day, empty when the day
    had no tip, so that a missing file means "never counted" (a home from before them)."""
    place, root = state_root(settings, shard)
    table = pa.Table.from_pandas(counts, schema=COHORT_AGGREGATES_SCHEMA, preserve_index=False)
    by_day = counts["day"].to_numpy()
    for day in days:
        rows = pa.array(by_day == day, type=pa.bool_())
        place.write_table(f"{root}/cohort_aggregates/{day.isoformat()}.parquet", table.filter(rows))


def read_cohort_aggregates(
    settings: Settings, start: date, end: date, shards: list[Shard]
) -> pd.DataFrame:
    """The cohort counts of days [start, end) of every one of `shards`."""
    tables = []
    for shard in shards:
        place, root = state_root(settings, shard)
        kept = set(place.list_files(f"{root}/cohort_aggregates"))
        for i in range((end - start).days):
            path = f"{root}/cohort_aggregates/{(start + timedelta(days=i)).isoformat()}.parquet"
            if path in kept:
                tables.append(place.read_table(path, schema=COHORT_AGGREGATES_SCHEMA))
    if not tables:
        return empty_cohort_aggregates()
    return pa.concat_tables(tables).to_pandas()


def _counted_cohorts(place: Storage, root: str) -> bool:
    """Whether the shard's kept counts include the cohorts' (a home from before them does not)."""
    return not place.list_files(f"{root}/aggregates") or bool(
        place.list_files(f"{root}/cohort_aggregates")
    )


def read_aggregates(
    settings: Settings, start: date, end: date, shard: Shard = WHOLE
) -> pd.DataFrame:
    """Aggregates of days [start, end)."""
    place, root = state_root(settings, shard)
    kept = set(place.list_files(f"{root}/aggregates"))
    files = [
        f"{root}/aggregates/{(start + timedelta(days=i)).isoformat()}.parquet"
        for i in range((end - start).days)
    ]
    tables = [place.read_table(f, schema=AGGREGATES_SCHEMA) for f in files if f in kept]
    if not tables:
        return empty_aggregates()
    return pa.concat_tables(tables).to_pandas()


def _versions(place: Storage, root: str, day: date) -> list[str]:
    """The finished states of `day`, oldest first."""
    directory = f"{root}/states/{day.isoformat()}"
    return [
        f"{directory}/{version}"
        for version in place.list_dirs(directory)
        if place.exists(f"{directory}/{version}/open_tasks.parquet")
    ]


def write_state(settings: Settings, state: ProfileState, shard: Shard = WHOLE) -> None:
    """A state's two files in a new directory, open_tasks last; then the day's other
    directories go (older states, and any a crashed run left unfinished)."""
    place, root = state_root(settings, shard)
    day = f"{root}/states/{state.as_of.isoformat()}"
    version = f"{time.time_ns():020d}"
    users = pa.Table.from_pandas(state.users, schema=USERS_SCHEMA, preserve_index=False)
    tasks = pa.Table.from_pandas(state.open_tasks, schema=OPEN_TASKS_SCHEMA, preserve_index=False)
    place.write_table(f"{day}/{version}/users.parquet", users)
    place.write_table(f"{day}/{version}/open_tasks.parquet", tasks)
    for other in place.list_dirs(day):
        if other != version:
            place.delete_dir(f"{day}/{other}")


def read_state(settings: Settings, day: date, shard: Shard = WHOLE) -> ProfileState | None:
    place, root = state_root(settings, shard)
    versions = _versions(place, root, day)
    if not versions:
        return None
    users = place.read_table(f"{versions[-1]}/users.parquet", schema=USERS_SCHEMA)
    tasks = place.read_table(f"{versions[-1]}/open_tasks.parquet", schema=OPEN_TASKS_SCHEMA)
    return ProfileState(day, users.to_pandas(), tasks.to_pandas())


def state_days(settings: Settings, shard: Shard = WHOLE) -> list[date]:
    place, root = state_root(settings, shard)
    days = (date.fromisoformat(d) for d in place.list_dirs(f"{root}/states"))
    return sorted(day for day in days if _versions(place, root, day))


def _drop_states(settings: Settings, keep: set[date], shard: Shard = WHOLE) -> None:
    place, root = state_root(settings, shard)
    for day in place.list_dirs(f"{root}/states"):
        if date.fromisoformat(day) not in keep:
            place.delete_dir(f"{root}/states/{day}")


def update_profiles(
    settings: Settings,
    as_of: datetime,
    overlap_days: int = 2,
    full: bool = False,
    shard: Shard = WHOLE,
) -> ProfileUpdate:
    """Compute and write `shard`'s profiles up to `as_of`'s UTC day (see the module
    docstring); every shard runs this same code, and the whole world is the one shard."""
    last = as_of.astimezone(UTC).date()
    existing = partition_days(settings, shard)
    reason = "asked for a full run" if full else "no profiles yet"
    start: ProfileStart | None = None
    if existing and not full:
        first = existing[-1] - timedelta(days=overlap_days)
        if first > last:
            return ProfileUpdate(
                mode="incremental",
                reason=f"profiles up to {existing[-1]} already cover {last}",
                days_computed=[],
                rows_written=0,
                users=0,
                events_read=0,
            )
        state = read_state(settings, first, shard)
        if state is None:
            reason = f"no kept state at {first}"
        elif not _counted_cohorts(*state_root(settings, shard)):
            reason = "no cohort counts kept (a home from before them)"
        else:
            history = read_aggregates(settings, first - timedelta(days=WINDOW_DAYS), first, shard)
            start = ProfileStart(state, history)

    lake = open_lake(settings)
    # A run reads the events of the days before its last as-of day; the daily run from the
    # day the earliest tip a reaction may answer was shown.
    end = last - timedelta(days=1)
    if start is None:
        log.info("features: full recompute (%s)", reason)
        frames = load_event_frames(lake, None, end, shard)
        first_event = frames.first_day()
        days = (
            [first_event + timedelta(days=i) for i in range(1, (last - first_event).days + 1)]
            if first_event
            else []
        )
    else:
        first = start.state.as_of
        lookback = math.ceil(REACTION_HORIZON / DAY)
        frames = load_event_frames(lake, first - timedelta(days=lookback), end, shard)
        days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    keep = days[-(overlap_days + 1) :]
    run = run_profiles(frames, days, start, keep_states=keep)

    written = write_partitions(settings, run.profiles, days, shard)
    if start is None:
        place, root = state_root(settings, shard)
        place.delete_dir(root)
    write_aggregates(settings, run.aggregates, run.event_days, shard)
    write_cohort_aggregates(settings, run.cohort_aggregates, run.event_days, shard)
    for state in run.states.values():
        write_state(settings, state, shard)
    _drop_states(settings, set(keep), shard)
    return ProfileUpdate(
        mode="full" if start is None else "incremental",
        reason=reason if start is None else f"from the state at {start.state.as_of}",
        days_computed=written,
        rows_written=len(run.profiles),
        users=int(run.profiles["user_id"].nunique()),
        events_read=sum(
            len(f) for f in (frames.tasks, frames.completions, frames.impressions, frames.feedback)
        ),
    )
