"""The features flow's daily run against a full recompute, on a simulated world in a real lake."""

import shutil
from datetime import UTC, date, datetime, time, timedelta

import pandas as pd
import pytest

from feature_repo.cohort_features import COHORT_KEY
from feature_repo.data_sources import PROFILE_TABLE_DIR, PROFILE_TABLE_GLOB
from flows.featurestore.cohort_table import read_cohorts, update_cohorts
from flows.featurestore.offline_table import (
    partition_days,
    read_range,
    retire_other_counts,
    view,
)
from flows.featurestore.profile_update import state_days, state_root, update_profiles
from flows.shards import WHOLE, Shard
from flows.simulate import SimulateParams, simulate
from service.events.lake import open_lake
from service.events.models import Feedback, TaskCompleted
from service.settings import Settings
from service.storage import Storage
from tests.conftest import WORLD_END

pytestmark = pytest.mark.usefixtures("prefect_server")

START = WORLD_END - timedelta(days=4)


def at(day: date) -> datetime:
    return datetime.combine(day, time(6), UTC)


def table(settings: Settings) -> pd.DataFrame:
    return read_range(settings, at(WORLD_END - timedelta(days=60)), at(WORLD_END))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Settings:
    settings = Settings(home=tmp_path_factory.mktemp("world"))
    simulate(SimulateParams(users=40, days=21, seed=17, end=WORLD_END), settings)
    return settings


@pytest.fixture
def home(world, tmp_path) -> Settings:
    """A copy of the world's home, so each test starts with no profiles."""
    shutil.copytree(world.home, tmp_path / "home")
    return Settings(home=tmp_path / "home")


def full_table(settings: Settings, tmp_path) -> pd.DataFrame:
    """The profile table a full recompute writes, in a home of its own."""
    other = Settings(home=tmp_path / "full")
    shutil.copytree(settings.home, other.home)
    shutil.rmtree(other.offline_location, ignore_errors=True)
    assert update_profiles(other, at(WORLD_END), full=True).mode == "full"
    return table(other)


def cohorts(settings: Settings) -> pd.DataFrame:
    return read_cohorts(settings, at(WORLD_END - timedelta(days=60)), at(WORLD_END))


def full_cohorts(settings: Settings, tmp_path) -> pd.DataFrame:
    """The cohort table a full, unsharded recompute writes, in a home of its own."""
    other = Settings(home=tmp_path / "full-cohorts")
    shutil.copytree(settings.home, other.home)
    shutil.rmtree(other.offline_location, ignore_errors=True)
    update = update_profiles(other, at(WORLD_END), full=True)
    assert update_cohorts(other, update.days_computed, [WHOLE]) > 0
    return cohorts(other)


def test_daily_sharded_cohort_rows_equal_a_full_unsharded_recompute(home, tmp_path):
    shards = Shard.all(3)
    first = [update_profiles(home, at(START), shard=shard) for shard in shards]
    update_cohorts(home, sorted({d for u in first for d in u.days_computed}), shards)
    for day in (START + timedelta(days=i) for i in range(1, 5)):
        daily = [update_profiles(home, at(day), shard=shard) for shard in shards]
        update_cohorts(home, sorted({d for u in daily for d in u.days_computed}), shards)
    expected = full_cohorts(home, tmp_path)
    assert expected[COHORT_KEY].nunique() > 3 and len(expected) > 50
    pd.testing.assert_frame_equal(cohorts(home), expected)


def test_a_home_from_before_the_cohort_counts_recomputes_in_full(home):
    update_profiles(home, at(WORLD_END - timedelta(days=1)))
    place, root = state_root(home)
    place.delete_dir(f"{root}/cohort_aggregates")
    again = update_profiles(home, at(WORLD_END))
    assert (again.mode, again.reason) == ("full", "no cohort counts kept (a home from before them)")
    assert update_profiles(home, at(WORLD_END)).mode == "incremental"


def test_daily_runs_write_exactly_what_a_full_recompute_writes(home, tmp_path):
    first = update_profiles(home, at(START))
    assert (first.mode, first.reason) == ("full", "no profiles yet")
    for day in (START + timedelta(days=i) for i in range(1, 5)):
        daily = update_profiles(home, at(day))
        assert daily.mode == "incremental"
        assert daily.days_computed == [day - timedelta(days=k) for k in (3, 2, 1, 0)]
        # The new day and the overlap read four days of events, not the 21 of the world.
        assert daily.events_read < first.events_read / 3
    pd.testing.assert_frame_equal(table(home), full_table(home, tmp_path))
    assert state_days(home) == [WORLD_END - timedelta(days=k) for k in (2, 1, 0)]


def test_late_events_inside_the_overlap_count_as_in_a_full_recompute(home, tmp_path):
    update_profiles(home, at(WORLD_END - timedelta(days=1)), full=True)
    late_day = WORLD_END - timedelta(days=2)
    lake = open_lake(home)
    shown = lake.read("impression", late_day, late_day).to_pylist()[:5]
    tasks = lake.read("task_created", late_day, late_day).to_pylist()[:5]
    late = [
        Feedback(
            event_id=f"late-feedback-{i}",
            user_id=row["user_id"],
            tip_id=row["tip_id"],
            reaction="accepted",
            prompt_version=row["prompt_version"],
            timestamp=row["timestamp"] + timedelta(minutes=3),
        )
        for i, row in enumerate(shown)
    ] + [
        TaskCompleted(
            event_id=f"late-completion-{i}",
            user_id=row["user_id"],
            task_id=row["task_id"],
            timezone=row["timezone"],
            timestamp=row["timestamp"] + timedelta(minutes=30),
        )
        for i, row in enumerate(tasks)
    ]
    before = table(home)
    lake.append(late)
    daily = update_profiles(home, at(WORLD_END))
    assert daily.mode == "incremental"
    after = table(home)
    assert not after.equals(before)
    pd.testing.assert_frame_equal(after, full_table(home, tmp_path))


def test_a_run_without_its_start_state_recomputes_in_full(home, tmp_path):
    update_profiles(home, at(WORLD_END - timedelta(days=1)))
    kept = update_profiles(home, at(WORLD_END), overlap_days=1)
    assert kept.mode == "incremental"
    wider = update_profiles(home, at(WORLD_END), overlap_days=5)
    assert wider.mode == "full"
    assert wider.reason == f"no kept state at {WORLD_END - timedelta(days=5)}"
    place, root = state_root(home)
    place.delete_dir(root)
    assert update_profiles(home, at(WORLD_END)).mode == "full"
    pd.testing.assert_frame_equal(table(home), full_table(home, tmp_path))


def test_a_run_that_dies_writing_a_state_leaves_the_last_states_to_start_from(
    home, tmp_path, monkeypatch
):
    update_profiles(home, at(WORLD_END - timedelta(days=1)))
    original = Storage.write_table

    def die_on_open_tasks(self, path, table, **options):
        if path.endswith("open_tasks.parquet"):
            raise OSError("host lost")
        original(self, path, table, **options)

    monkeypatch.setattr(Storage, "write_table", die_on_open_tasks)
    with pytest.raises(OSError, match="host lost"):
        update_profiles(home, at(WORLD_END))
    monkeypatch.setattr(Storage, "write_table", original)
    # The unfinished state (users written, open tasks not) is no state.
    assert state_days(home)[-1] == WORLD_END - timedelta(days=1)
    rerun = update_profiles(home, at(WORLD_END))
    assert rerun.mode == "incremental"
    pd.testing.assert_frame_equal(table(home), full_table(home, tmp_path))
    place, root = state_root(home)
    unfinished = [
        f"{root}/states/{day}/{version}"
        for day in place.list_dirs(f"{root}/states")
        for version in place.list_dirs(f"{root}/states/{day}")
        if not place.exists(f"{root}/states/{day}/{version}/open_tasks.parquet")
    ]
    assert unfinished == []


def test_shards_computed_apart_write_exactly_the_unsharded_table(home, tmp_path):
    shards = Shard.all(3)
    for shard in shards:
        assert update_profiles(home, at(START), shard=shard).mode == "full"
    for day in (START + timedelta(days=i) for i in range(1, 5)):
        for shard in shards:
            assert update_profiles(home, at(day), shard=shard).mode == "incremental"
    expected = full_table(home, tmp_path)
    pd.testing.assert_frame_equal(table(home), expected)

    # Back to one shard: it recomputes in full, and the three-shard files are retired.
    assert update_profiles(home, at(WORLD_END)).mode == "full"
    assert retire_other_counts(home, 1) > 0
    assert not list(home.home.glob("data/offline/user_profile/*/*-of-3.parquet"))
    pd.testing.assert_frame_equal(table(home), expected)


def test_a_view_of_the_table_holds_only_the_files_that_may_hold_its_users(home):
    for shard in Shard.all(3):
        update_profiles(home, at(START), shard=shard)
    days = [d.isoformat() for d in partition_days(home)]
    assert days
    # Shard 5 of 8 is 5/8..6/8 of the hashes: it straddles shards 1 and 2 of 3 (1/3..2/3..1).
    for users, names in (
        (Shard(index=5, count=8).hash_range, ["1-of-3", "2-of-3"]),
        (Shard(index=0, count=8).hash_range, ["0-of-3"]),
    ):
        with view(home, users) as root:
            linked = sorted(root.glob(PROFILE_TABLE_GLOB))
            assert [p.relative_to(root).as_posix() for p in linked] == [
                f"{PROFILE_TABLE_DIR}/{day}/{name}.parquet" for day in days for name in names
            ]
            assert all(p.samefile(home.home / p.relative_to(root)) for p in linked)
        assert not root.exists()
    assert len(list(home.home.glob(PROFILE_TABLE_GLOB))) == 3 * len(days)


def test_files_that_are_not_the_tables_are_skipped_not_fatal(home, tmp_path):
    update_profiles(home, at(WORLD_END))
    expected = table(home)
    day = partition_days(home)[-1].isoformat()
    directory = home.home / PROFILE_TABLE_DIR
    for stray in (f"{day}/notes.parquet", f"{day}/7-of-3.parquet", "misc/0-of-1.parquet"):
        (directory / stray).parent.mkdir(parents=True, exist_ok=True)
        (directory / stray).write_bytes(b"not parquet")
    assert partition_days(home)[-1].isoformat() == day
    pd.testing.assert_frame_equal(table(home), expected)
    with view(home, Shard(index=0, count=1).hash_range) as root:
        linked = {p.name for p in (root / PROFILE_TABLE_DIR).rglob("*.parquet")}
    assert linked == {"0-of-1.parquet"}


def test_the_features_flow_runs_each_shard_as_a_task(home, tmp_path):
    from flows.features import FeaturesParams, features

    report = features(FeaturesParams(as_of=at(WORLD_END), shards=2), home)
    assert report.profiles.mode == "full" and report.materialized.users == 40
    pd.testing.assert_frame_equal(table(home), full_table(home, tmp_path))
    again = features(FeaturesParams(as_of=at(WORLD_END), shards=2), home)
    assert again.profiles.mode == "incremental"
