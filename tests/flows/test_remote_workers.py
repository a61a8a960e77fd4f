"""Batch workers on other hosts: the settings' URLs are their only link to the flow.

The two `dask worker` processes run in a mount namespace of their own, where the directory
holding every test's home is an empty tmpfs: like a worker on another machine, they cannot
see the flow's files. The event lake, the offline table and profile state, and the Feast
registry are on an S3 endpoint (moto's server), the online store is Redis. Simulate, features
and the training set run sharded there and give exactly what one local process gives.
"""

import shutil
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import redis

from flows.features import FeaturesParams, features
from flows.featurestore.offline_table import read_range
from flows.featurestore.show_online import OnlineShowParams, read_online
from flows.shards import task_runner
from flows.simulate import simulate
from flows.training_shards import training_set_shards
from service.events.lake import open_lake
from service.settings import Settings
from tests.conftest import IN_CI
from tests.flows.test_distributed import USERS, Cluster
from tests.flows.test_distributed_batch import (
    AS_OF,
    TRAIN,
    WORLD,
    lake_events,
    one_process_training_set,
)

pytestmark = pytest.mark.integration
REDIS_DB = 12
UNSHARE = ["unshare", "--mount", "--propagation", "private"]


def hidden(directory: Path) -> list[str]:
    """A command prefix that runs the command with an empty tmpfs over `directory`; the test
    skips (fails in CI) where this machine cannot make mount namespaces."""
    probe = subprocess.run([*UNSHARE, "true"], capture_output=True, text=True, check=False)
    if probe.returncode:
        message = f"cannot make a mount namespace here ({probe.stderr.strip()})"
        if IN_CI:
            pytest.fail(f"{message}; CI runs as root on Linux")
        pytest.skip(message)
    mount = 'mount -t tmpfs tipml-elsewhere "$0" && exec "$@"'
    return [*UNSHARE, "sh", "-c", mount, str(directory)]


@pytest.fixture(scope="module")
def cluster(prefect_server, s3_endpoint, tmp_path_factory) -> Iterator[Cluster]:
    cluster = Cluster(workers=2, prefix=hidden(tmp_path_factory.getbasetemp()))
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def local(tmp_path_factory, prefect_server) -> Settings:
    """The world, its features and its training set in one process on local files."""
    settings = Settings(home=tmp_path_factory.mktemp("local"))
    simulate(WORLD, settings)
    features(FeaturesParams(as_of=AS_OF), settings)
    return settings


def test_workers_that_share_no_disk_with_the_flow_compute_what_one_process_does(
    local, cluster, tmp_path
):
    redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()
    bucket = f"s3://lake/{tmp_path.name}"
    remote = Settings(
        home=tmp_path / "home",
        events_url=f"{bucket}/events",
        offline_url=f"{bucket}/offline",
        feast_registry=f"{bucket}/registry.db",
        online_store="redis",
        redis_url=f"127.0.0.1:6379,db={REDIS_DB}",
        dask_address=cluster.address,
    )
    simulate(WORLD.model_copy(update={"shards": 3}), remote)
    assert lake_events(remote) == lake_events(local)

    report = features(FeaturesParams(as_of=AS_OF, shards=4), remote)
    assert report.profiles.mode == "full" and report.materialized.users == WORLD.users
    window = (AS_OF - timedelta(days=30), AS_OF)
    pd.testing.assert_frame_equal(read_range(remote, *window), read_range(local, *window))
    at = OnlineShowParams(user_ids=USERS, at=AS_OF)
    online = {u: r.profile for u, r in read_online(remote, at).reads.items()}
    assert online == {u: r.profile for u, r in read_online(local, at).reads.items()}
    daily = features(FeaturesParams(as_of=AS_OF + timedelta(days=1), shards=4), remote)
    assert daily.profiles.mode == "incremental"

    params = TRAIN.model_copy(update={"shards": 3})
    runner = task_runner(remote)
    rows = training_set_shards.with_options(task_runner=runner)(remote, params, AS_OF)
    pd.testing.assert_frame_equal(rows, one_process_training_set(local), check_exact=True)

    # Nothing of the lake, the offline data or the registry is in the flow's home.
    kept = {p.relative_to(remote.home).as_posix() for p in remote.home.rglob("*") if p.is_file()}
    assert kept == {"data/world/world.json", "data/world/users.parquet"}
    assert open_lake(remote).url.startswith("s3://")
    shutil.rmtree(remote.home)
