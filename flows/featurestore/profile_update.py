"""Daily profiles into the offline table: the full recompute, and the daily run that reads only
the new days.

Beside the profile table the features flow keeps what the next daily run starts from
(`feature_repo/profile_transforms.py` says what each holds):

    data/offline/profile_state/aggregates/<UTC day>.parquet     per-user counts of a closed day
    data/offline/profile_state/states/<as-of day>/users.parquet  the state at an as-of day
                                                 .../open_tasks.parquet

A run computes the as-of days from (the last computed day - overlap_days) to its as-of day,
so events up to `overlap_days` late are picked up. It starts from the kept state at its first
day, reading raw events only from the day before that (for the tip a reaction answers) and
the WINDOW_DAYS of aggregates before it: its cost is set by the new days, not by the history
or the longest window. It recomputes everything when asked (`full`), when there is no profile
yet, or when the state its first day needs is not kept (a larger overlap than the last run
kept states for, or a home from before the states). A full run replaces every aggregate and
state; events later than the overlap are picked up by the next full run.

Every file is written aside and renamed into place. Profiles are written first, then the
aggregates, then the states: a state is the promise that everything before it is written, so
a run that crashes part way leaves the last run's states, and the next run starts from one.
"""

import logging
import math
import os
import shutil
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from feature_repo.profile_transforms import (
    AGGREGATE_COLUMNS,
    DAY,
    OPEN_TASK_COLUMNS,
    REACTION_HORIZON,
    USER_STATE_COLUMNS,
    WINDOW_DAYS,
    ProfileStart,
    ProfileState,
    empty_aggregates,
    run_profiles,
)
from flows.featurestore.event_frames import load_event_frames
from flows.featurestore.offline_table import partition_days, write_partitions
from flows.shards import WHOLE, Shard
from service.events.lake import open_lake
from service.settings import Settings

log = logging.getLogger(__name__)

PROFILE_STATE_DIR = "data/offline/profile_state"
_UTC = pa.timestamp("us", tz="UTC")
AGGREGATES_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string()),
        pa.field("day", pa.date32()),
        *(pa.field(c, pa.int32()) for c in AGGREGATE_COLUMNS),
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


def state_root(settings: Settings, shard: Shard = WHOLE) -> Path:
    return settings.home / PROFILE_STATE_DIR / shard.name


def _write_table(table: pa.Table, path: Path) -> None:
    """Replace `path` whole: written under a dot-name beside it, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def write_aggregates(
    settings: Settings, aggregates: pd.DataFrame, days: list[date], shard: Shard = WHOLE
) -> None:
    """Replace the aggregates of each of `days`; a day without a row keeps no file."""
    directory = state_root(settings, shard) / "aggregates"
    table = pa.Table.from_pandas(aggregates, schema=AGGREGATES_SCHEMA, preserve_index=False)
    by_day = aggregates["day"].to_numpy()
    for day in days:
        path = directory / f"{day.isoformat()}.parquet"
        rows = by_day == day
        if rows.any():
            _write_table(table.filter(pa.array(rows)), path)
        else:
            path.unlink(missing_ok=True)


def read_aggregates(
    settings: Settings, start: date, end: date, shard: Shard = WHOLE
) -> pd.DataFrame:
    """Aggregates of days [start, end)."""
    directory = state_root(settings, shard) / "aggregates"
    files = [
        directory / f"{(start + timedelta(days=i)).isoformat()}.parquet"
        for i in range((end - start).days)
    ]
    tables = [pq.read_table(f, schema=AGGREGATES_SCHEMA) for f in files if f.exists()]
    if not tables:
        return empty_aggregates()
    return pa.concat_tables(tables).to_pandas()


def write_state(settings: Settings, state: ProfileState, shard: Shard = WHOLE) -> None:
    """A state's two files, in a directory renamed into place whole."""
    states = state_root(settings, shard) / "states"
    final = states / state.as_of.isoformat()
    staging = states / f".{state.as_of.isoformat()}.{uuid.uuid4().hex}.tmp"
    staging.mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pandas(state.users, schema=USERS_SCHEMA, preserve_index=False),
        staging / "users.parquet",
    )
    pq.write_table(
        pa.Table.from_pandas(state.open_tasks, schema=OPEN_TASKS_SCHEMA, preserve_index=False),
        staging / "open_tasks.parquet",
    )
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)


def read_state(settings: Settings, day: date, shard: Shard = WHOLE) -> ProfileState | None:
    directory = state_root(settings, shard) / "states" / day.isoformat()
    if not (directory / "open_tasks.parquet").exists():
        return None
    users = pq.read_table(directory / "users.parquet", schema=USERS_SCHEMA).to_pandas()
    tasks = pq.read_table(directory / "open_tasks.parquet", schema=OPEN_TASKS_SCHEMA)
    return ProfileState(day, users, tasks.to_pandas())


def state_days(settings: Settings, shard: Shard = WHOLE) -> list[date]:
    directory = state_root(settings, shard) / "states"
    if not directory.is_dir():
        return []
    return sorted(date.fromisoformat(p.name) for p in directory.iterdir() if p.name[0] != ".")


def _drop_states(settings: Settings, keep: set[date], shard: Shard = WHOLE) -> None:
    for day in state_days(settings, shard):
        if day not in keep:
            shutil.rmtree(state_root(settings, shard) / "states" / day.isoformat())


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
        shutil.rmtree(state_root(settings, shard), ignore_errors=True)
    write_aggregates(settings, run.aggregates, run.event_days, shard)
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
