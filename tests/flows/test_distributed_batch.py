"""The simulate and training flows' user shards, in threads and on a real Dask cluster (a
`dask scheduler` and two `dask worker` processes), give exactly what one process gives: the
same events, ids included, and the same training set, row for row and in the same order."""

import itertools
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import flows.modeling.training_set
import flows.simulate
from feature_repo.user_hash import user_hashes
from flows.features import FeaturesParams, features
from flows.modeling.training_set import (
    build_training_set,
    in_training_order,
    labelled_impressions,
)
from flows.shards import task_runner
from flows.simulate import SimulateParams, simulate
from flows.training import TrainParams, training
from flows.training_shards import training_set_shards
from service.events.lake import SCHEMAS, EventLake, open_lake
from service.scoring.feature_store import open_store
from service.settings import Settings
from tests.conftest import WORLD_END, WORLD_END_TS
from tests.flows.test_distributed import Cluster

AS_OF = WORLD_END_TS + timedelta(hours=6)
WORLD = SimulateParams(users=24, days=14, seed=29, end=WORLD_END)
TRAIN = TrainParams(as_of=AS_OF, min_rows=50)


@pytest.fixture(scope="module")
def cluster(prefect_server) -> Iterator[Cluster]:
    cluster = Cluster(workers=2)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory, prefect_server) -> Settings:
    """The world simulated unsharded in one process, with its features (in three shards, so
    that a training shard's point-in-time read sees only some of the offline files): what
    every sharded run must equal."""
    settings = Settings(home=tmp_path_factory.mktemp("world"))
    simulate(WORLD, settings)
    features(FeaturesParams(as_of=AS_OF, shards=3), settings)
    return settings


def lake_events(settings: Settings) -> dict[str, pa.Table]:
    lake = open_lake(settings)
    return {kind: lake.read(kind).sort_by("event_id") for kind in SCHEMAS}


def writers(settings: Settings) -> set[str]:
    """The writer ids in the lake's file names (<written ns>-<writer>-<random>.parquet)."""
    return {
        path.stem.split("-", 1)[1].rsplit("-", 1)[0]
        for path in Path(settings.events_location).rglob("*.parquet")
    }


def stored_rows(settings: Settings) -> int:
    """Rows in the lake's files, copies of an event included."""
    files = Path(settings.events_location).rglob("*.parquet")
    return sum(pq.ParquetFile(path).metadata.num_rows for path in files)


def test_sharded_simulate_in_threads_writes_the_one_shard_world(world, tmp_path):
    settings = Settings(home=tmp_path / "home")
    report = simulate(WORLD.model_copy(update={"shards": 3}), settings)
    assert report.users == 24 and report.resumed_at_user == 0
    assert writers(settings) == {f"simulator-{i}-of-3" for i in range(3)}
    assert lake_events(settings) == lake_events(world)


def test_sharded_simulate_on_a_dask_cluster_writes_the_one_process_world(world, cluster, tmp_path):
    settings = Settings(home=tmp_path / "home", dask_address=cluster.address)
    report = simulate(WORLD.model_copy(update={"shards": 3}), settings)
    assert report.events == sum(len(t) for t in lake_events(world).values())
    assert lake_events(settings) == lake_events(world)


def test_a_crashed_sharded_simulate_resumes_each_shard_where_it_stopped(
    world, tmp_path, monkeypatch
):
    settings = Settings(home=tmp_path / "home")
    monkeypatch.setattr(flows.simulate, "USERS_PER_BATCH", 2)
    original = EventLake.append
    calls = itertools.count(1)  # next() is atomic: the shards append from several threads

    def crash_on_fifth_batch(self, events):
        if next(calls) == 5:
            raise OSError("disk vanished")
        return original(self, events)

    monkeypatch.setattr(EventLake, "append", crash_on_fifth_batch)
    with pytest.raises(OSError, match="disk vanished"):
        simulate(WORLD.model_copy(update={"shards": 3}), settings)
    monkeypatch.setattr(EventLake, "append", original)
    resumed = simulate(WORLD.model_copy(update={"shards": 3}), settings)
    assert 0 < resumed.resumed_at_user < 24
    assert lake_events(settings) == lake_events(world)
    # What was written before the crash was not written again.
    assert stored_rows(settings) == sum(len(t) for t in lake_events(world).values())
    # A complete world is complete for any count: nothing more is written.
    again = simulate(WORLD.model_copy(update={"shards": 5}), settings)
    assert (again.resumed_at_user, again.events) == (24, 0)
    assert all(open_lake(settings).checkpoint(f"simulator-{i}-of-3") is None for i in range(3))


def one_process_training_set(settings: Settings) -> pd.DataFrame:
    start = (AS_OF - timedelta(days=TRAIN.history_days)).date()
    impressions = labelled_impressions(open_lake(settings), AS_OF, start)
    rows = build_training_set(open_store(settings), settings, impressions, TRAIN.feature_service)
    return in_training_order([rows])


def copy_of(world: Settings, directory: Path, dask_address: str | None = None) -> Settings:
    shutil.copytree(world.home, directory)
    return Settings(home=directory, dask_address=dask_address)


def test_a_point_in_time_read_in_chunks_is_the_read_in_one(world, monkeypatch):
    whole = one_process_training_set(world)
    monkeypatch.setattr(flows.modeling.training_set, "HISTORICAL_CHUNK_ROWS", 97)
    chunked = one_process_training_set(world)
    assert len(whole) > 3 * 97
    pd.testing.assert_frame_equal(chunked, whole, check_exact=True)


@pytest.mark.parametrize("shards", [3, 40])  # 40: most shards have no user, so no rows
def test_sharded_training_set_on_a_dask_cluster_is_the_one_process_set(
    world, cluster, tmp_path, shards
):
    settings = copy_of(world, tmp_path / "home", cluster.address)
    params = TRAIN.model_copy(update={"shards": shards})
    rows = training_set_shards.with_options(task_runner=task_runner(settings))(
        settings, params, AS_OF
    )
    expected = one_process_training_set(world)
    assert len(expected) > 500
    pd.testing.assert_frame_equal(rows, expected, check_exact=True, check_index_type=True)


@pytest.mark.parametrize("shards", [1, 3])
def test_a_user_sample_is_the_same_users_rows_whatever_the_shard_count(world, tmp_path, shards):
    settings = copy_of(world, tmp_path / "home")
    params = TRAIN.model_copy(update={"shards": shards, "user_sample": 0.5})
    rows = training_set_shards(settings, params, AS_OF)
    whole = one_process_training_set(world)
    sampled = whole[user_hashes(whole["user_id"]) < 2**62].reset_index(drop=True)
    assert 0 < len(rows) < len(whole)
    pd.testing.assert_frame_equal(rows, sampled, check_exact=True)


def test_training_with_shards_on_a_dask_cluster_trains_the_one_process_model(
    world, cluster, tmp_path
):
    single = training(TRAIN, copy_of(world, tmp_path / "single"))
    sharded = training(
        TRAIN.model_copy(update={"shards": 4}), copy_of(world, tmp_path / "home", cluster.address)
    )
    assert (sharded.train_rows, sharded.model_type) == (single.train_rows, single.model_type)
    assert sharded.metrics == single.metrics
