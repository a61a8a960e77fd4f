"""The features flow's shards on a real Dask cluster (`dask scheduler` and two `dask worker`
processes started here) write exactly what one process writes, also when a worker dies."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from flows.features import FeaturesParams, FeaturesReport, features
from flows.featurestore.offline_table import read_range
from flows.featurestore.show_online import OnlineShowParams, read_online
from flows.simulate import SimulateParams, simulate
from service.settings import Settings
from tests.conftest import WORLD_END, WORLD_END_TS, wait_until

pytestmark = pytest.mark.usefixtures("prefect_server")

AS_OF = WORLD_END_TS + timedelta(hours=6)
DASK = str(Path(sys.executable).with_name("dask"))
WORKER_FLAGS = ("--nthreads", "1", "--no-dashboard")
USERS = ["u000000", "u000005", "u000011", "u000023", "nobody"]


class Cluster:
    """A scheduler and named single-threaded workers, each a process of its own."""

    def __init__(self, workers: int, prefix: Sequence[str] = ()) -> None:
        """`prefix` goes before each worker's command (a namespace of its own, say)."""
        from prefect.settings import PREFECT_API_URL

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.address = f"tcp://127.0.0.1:{port}"
        # Task runs on the workers report to the flow's Prefect server.
        env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
        self.scheduler = subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stderr=subprocess.DEVNULL,
        )
        self.workers = {
            f"w{i}": subprocess.Popen(
                [*prefix, DASK, "worker", self.address, "--name", f"w{i}", *WORKER_FLAGS],
                env=env,
                stderr=subprocess.DEVNULL,
            )
            for i in range(workers)
        }
        from distributed import Client

        self.client = Client(self.address, timeout=30)
        self.client.wait_for_workers(workers, timeout=60)

    def kill(self, name: str) -> None:
        self.workers[name].send_signal(signal.SIGKILL)
        self.workers[name].wait(10)

    def busy_worker(self) -> str | None:
        """A worker's name while it runs a task, else None."""
        names = {addr: w["name"] for addr, w in self.client.scheduler_info()["workers"].items()}
        return next((names[a] for a, tasks in self.client.processing().items() if tasks), None)

    def close(self) -> None:
        self.client.close()
        for process in [*self.workers.values(), self.scheduler]:
            if process.poll() is None:
                process.terminate()
                process.wait(10)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Settings:
    settings = Settings(home=tmp_path_factory.mktemp("world"))
    simulate(SimulateParams(users=24, days=14, seed=29, end=WORLD_END), settings)
    return settings


@pytest.fixture(scope="module")
def single(world, tmp_path_factory) -> Settings:
    """The world's features computed in one process, unsharded: what every cluster run must
    equal."""
    settings = Settings(home=tmp_path_factory.mktemp("single"))
    shutil.copytree(world.home, settings.home, dirs_exist_ok=True)
    features(FeaturesParams(as_of=AS_OF), settings)
    return settings


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    cluster = Cluster(workers=2)
    try:
        yield cluster
    finally:
        cluster.close()


def on_cluster(world: Settings, address: str, directory: Path) -> Settings:
    shutil.copytree(world.home, directory)
    return Settings(home=directory, dask_address=address)


def assert_same_outputs(settings: Settings, single: Settings) -> None:
    window = (AS_OF - timedelta(days=30), AS_OF)
    pd.testing.assert_frame_equal(read_range(settings, *window), read_range(single, *window))
    online = {
        u: r.profile
        for u, r in read_online(settings, OnlineShowParams(user_ids=USERS, at=AS_OF)).reads.items()
    }
    expected = {
        u: r.profile
        for u, r in read_online(single, OnlineShowParams(user_ids=USERS, at=AS_OF)).reads.items()
    }
    assert online == expected


def test_shards_on_a_dask_cluster_write_what_one_process_writes(world, single, cluster, tmp_path):
    settings = on_cluster(world, cluster.address, tmp_path / "home")
    report = features(FeaturesParams(as_of=AS_OF, shards=4), settings)
    assert report.profiles.mode == "full" and report.materialized.users == 24
    assert_same_outputs(settings, single)


def test_a_worker_killed_mid_run_costs_a_retry_not_a_row(world, single, cluster, tmp_path):
    settings = on_cluster(world, cluster.address, tmp_path / "home")
    result: list[FeaturesReport] = []
    run = threading.Thread(
        target=lambda: result.append(features(FeaturesParams(as_of=AS_OF, shards=8), settings))
    )
    run.start()
    killed: list[str] = []

    def kill_a_busy_worker() -> bool:
        if (name := cluster.busy_worker()) is not None:
            cluster.kill(name)
            killed.append(name)
        return bool(killed)

    wait_until(kill_a_busy_worker, 120, "a worker running a shard")
    run.join(300)
    assert not run.is_alive() and result, "the flow did not finish after the worker died"
    assert result[0].profiles.mode == "full"
    assert_same_outputs(settings, single)
