"""Prefect flow `simulate`: write a simulated world's events to the event log.

The event log is append-only and two worlds must never mix in it: a world goes into an empty
log, or continues one the same world started (a crashed run resumes where its last batch of
users ended), or, with `reset`, replaces the old world and every store derived from it.
"""

import json
import shutil
from datetime import UTC, date, datetime, time, timedelta

import pandas as pd
from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from feature_repo.bounds import EARLIEST, LATEST, AllDayDate
from flows.simulation.world import World
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
    """What world the event log holds, and how many of its users are fully written."""

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


class SimulateReport(BaseModel):
    users: int
    events: int
    resumed_at_user: int
    start: datetime
    end: datetime


class WorldExistsError(RuntimeError):
    pass


def _manifest_path(settings: Settings):
    return settings.world_dir / "world.json"


def _save_manifest(settings: Settings, manifest: WorldManifest) -> None:
    path = _manifest_path(settings)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(manifest.model_dump_json(indent=2))
    tmp.replace(path)


def plan(settings: Settings, params: SimulateParams, end: date) -> WorldManifest:
    """The manifest to write under; raises before anything is written if worlds would mix."""
    wanted = WorldManifest(users=params.users, days=params.days, seed=params.seed, end=end)
    if params.reset or open_lake(settings).is_empty():
        return wanted
    path = _manifest_path(settings)
    existing = WorldManifest.model_validate_json(path.read_text()) if path.exists() else None
    if existing is None or not existing.same_world(wanted):
        raise WorldExistsError(
            f"the event lake at {settings.events_location} holds another world; "
            "pass --reset to replace it (and the stores built from it) with this one"
        )
    return existing


@flow(name="simulate")
def simulate(params: SimulateParams, settings: Settings | None = None) -> SimulateReport:
    settings = settings or Settings.from_env()
    logger = get_run_logger()
    end = params.end or datetime.now(UTC).date()
    manifest = plan(settings, params, end)
    if params.reset:
        # The lake may live outside the data dir (TIPML_EVENTS_URL): cleared on its own.
        EventLake(settings.events_location).clear()
        if settings.data_dir.exists():
            shutil.rmtree(settings.data_dir)

    world = World(
        users=params.users,
        days=params.days,
        seed=params.seed,
        end=datetime.combine(end, time(), UTC),
    )
    settings.world_dir.mkdir(parents=True, exist_ok=True)
    truth = pd.DataFrame([u.model_dump() for u in world.users])
    truth["receptivity"] = truth["receptivity"].map(json.dumps)
    truth.to_parquet(settings.world_dir / "users.parquet", index=False)
    _save_manifest(settings, manifest)

    log = open_lake(settings, writer_id=SIM_WRITER)
    resumed_at = manifest.users_done
    if resumed_at:
        logger.info("resuming the world at user %d of %d", resumed_at, params.users)
    written = 0
    for first in range(resumed_at, params.users, USERS_PER_BATCH):
        users = range(first, min(first + USERS_PER_BATCH, params.users))
        written += log.append(world.events(users))
        manifest = manifest.model_copy(update={"users_done": users.stop})
        _save_manifest(settings, manifest)
        logger.info("wrote %d/%d users (%d events)", users.stop, params.users, written)
    return SimulateReport(
        users=params.users,
        events=written,
        resumed_at_user=resumed_at,
        start=world.start,
        end=world.end,
    )
