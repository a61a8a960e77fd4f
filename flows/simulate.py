"""Prefect flow `simulate`: write a simulated world's events to the event log.

The event log is append-only and two worlds must never mix in it: a world goes into an empty
log, or continues one the same world started (a crashed run resumes where its last batches of
users ended), or, with `reset`, replaces the old world and every store derived from it.

Users split into `shards` (flows/shards.py), each a task that appends its users' events in
batches, under a writer id naming the shard, and records after each batch how many of its
users are written: a checkpoint in the lake per task (`simulator-<i>-of-<n>`, so no two
writers share one, and a worker on another host finds it). Once every shard is done,
world.json says every user is written and the checkpoints go.
Each user's events come from that user's own random streams (flows/simulation/world.py), so
the lake holds the same events, ids included, whatever the shard count. A rerun with another
count than the crashed run's writes those shards' users again, and the lake's readers keep
one copy of each event.
"""

import json
import shutil
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from feature_repo.bounds import EARLIEST, LATEST, AllDayDate
from flows.shards import Shard, run_shards
from flows.simulation.world import World, user_id
from service.events.lake import EventLake, open_lake
from service.settings import Settings

SIM_WRITER = "simulator"
USERS_PER_BATCH = 100
SPARE = timedelta(days=366)


class SimulateParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    users: int = Field(ge=1, le=1_000_000)
    days: int = Field(ge=1, le=366)
    seed: int = Field(ge=0, le=2**32 - 1)
    end: AllDayDate | None = Field(
        default=None, description="First UTC day after the world (default: today)."
    )
    reset: bool = False
    shards: int = Field(
        default=1,
        ge=1,
        le=4096,
        description="User shards written by separate tasks (flows/shards.py); the world is the "
        "same whatever the count.",
    )

    @field_validator("end")
    @classmethod
    def _inside_the_plausible_range(cls, end: date | None, info: ValidationInfo) -> date | None:
        # Due dates and completions run past the world's end: a year is more than they need.
        days = info.data.get("days", 0)
        if end is not None and not (
            EARLIEST.date() + timedelta(days=days) <= end <= LATEST.date() - SPARE
        ):
            raise ValueError(
                f"a world of {days} days must lie between {EARLIEST:%Y-%m-%d} and "
                f"{LATEST.date() - SPARE} (feature_repo/bounds.py)"
            )
        return end


class WorldManifest(BaseModel):
    """What world the event log holds, and that users 0 .. users_done - 1 are fully written
    (every shard skips them; `users` once the world is complete)."""

    users: int
    days: int
    seed: int
    end: date
    users_done: int = 0

    def same_world(self, other: "WorldManifest") -> bool:
        return (self.users, self.days, self.seed, self.end) == (
            other.users,
            other.days,
            other.seed,
            other.end,
        )


class ShardProgress(BaseModel):
    """How many of a shard's users, in index order, are fully written."""

    users_done: int


class ShardWritten(BaseModel):
    users_before: int  # the shard's users already written when its task began
    events: int


class SimulateReport(BaseModel):
    users: int
    events: int
    resumed_at_user: int  # users already written when the run began (one shard: where it resumed)
    start: datetime
    end: datetime


class WorldExistsError(RuntimeError):
    pass


def _manifest_path(settings: Settings) -> Path:
    return settings.world_dir / "world.json"


def _users_path(settings: Settings) -> Path:
    return settings.world_dir / "users.parquet"


def read_world_users(settings: Settings) -> pd.DataFrame | None:
    """The simulated world's users (SimUser's fields; receptivity a dict by category), or None
    when the home holds no simulated world. Ground truth for evaluation, never a model input
    that serves."""
    path = _users_path(settings)
    if not path.exists():
        return None
    users = pd.read_parquet(path)
    users["receptivity"] = users["receptivity"].map(json.loads)
    return users


def _save(path: Path, record: BaseModel) -> None:
    """Replace `path` whole, so that a crash leaves the old record or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(record.model_dump_json(indent=2))
    tmp.replace(path)


def plan(settings: Settings, params: SimulateParams, end: date) -> tuple[WorldManifest, bool]:
    """The manifest to write under, and whether it continues the world already in the lake;
    raises before anything is written if worlds would mix."""
    wanted = WorldManifest(users=params.users, days=params.days, seed=params.seed, end=end)
    if params.reset or open_lake(settings).is_empty():
        return wanted, False
    path = _manifest_path(settings)
    existing = WorldManifest.model_validate_json(path.read_text()) if path.exists() else None
    if existing is None or not existing.same_world(wanted):
        raise WorldExistsError(
            f"the event lake at {settings.events_location} holds another world; "
            "pass --reset to replace it (and the stores built from it) with this one"
        )
    return existing, True


def _world(params: SimulateParams, end: date) -> World:
    return World(
        users=params.users,
        days=params.days,
        seed=params.seed,
        end=datetime.combine(end, time(), UTC),
    )


@task(cache_policy=NO_CACHE)
def write_shard(
    settings: Settings, params: SimulateParams, end: date, users_done: int, shard: Shard
) -> ShardWritten:
    """One shard's users' events, in batches from where its last recorded batch ended.

    No retries: a failure reaches whoever runs the flow, and running it again resumes every
    shard after its last recorded batch.
    """
    logger = get_run_logger()
    world = _world(params, end)
    mine = np.flatnonzero(shard.holds(user_id(i) for i in range(params.users)))
    writer = f"{SIM_WRITER}-{shard.name}"
    lake = open_lake(settings, writer_id=writer)
    saved = lake.checkpoint(writer)
    done = ShardProgress.model_validate_json(saved).users_done if saved else 0
    first = max(done, int(np.searchsorted(mine, users_done)))
    if first:
        logger.info("shard %s: resuming after %d of its %d users", shard.name, first, len(mine))
    written = 0
    for start in range(first, len(mine), USERS_PER_BATCH):
        batch = mine[start : start + USERS_PER_BATCH]
        written += lake.append(world.events(batch.tolist()))
        done = start + len(batch)
        lake.save_checkpoint(writer, ShardProgress(users_done=done).model_dump_json())
        logger.info("shard %s: wrote %d/%d users (%d events)", shard.name, done, len(mine), written)
    return ShardWritten(users_before=first, events=written)


@flow(name="simulate")
def simulate(params: SimulateParams, settings: Settings | None = None) -> SimulateReport:
    settings = settings or Settings.from_env()
    end = params.end or datetime.now(UTC).date()
    manifest, resuming = plan(settings, params, end)
    if params.reset:
        # The lake may live outside the data dir (TIPML_EVENTS_URL): cleared on its own.
        EventLake(settings.events_location).clear()
        if settings.data_dir.exists():
            shutil.rmtree(settings.data_dir)
    if not resuming:
        # Progress recorded for a world the lake no longer holds.
        EventLake(settings.events_location).clear_checkpoints()

    world = _world(params, end)
    settings.world_dir.mkdir(parents=True, exist_ok=True)
    truth = pd.DataFrame([u.model_dump() for u in world.users])
    truth["receptivity"] = truth["receptivity"].map(json.dumps)
    truth.to_parquet(_users_path(settings), index=False)
    _save(_manifest_path(settings), manifest)

    shards = run_shards(
        "simulate-shards",
        write_shard,
        settings,
        params.shards,
        params=params,
        end=end,
        users_done=manifest.users_done,
    )
    _save(_manifest_path(settings), manifest.model_copy(update={"users_done": params.users}))
    EventLake(settings.events_location).clear_checkpoints()
    return SimulateReport(
        users=params.users,
        events=sum(s.events for s in shards),
        resumed_at_user=sum(s.users_before for s in shards),
        start=world.start,
        end=world.end,
    )
