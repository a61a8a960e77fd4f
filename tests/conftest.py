import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from datetime import time as day_time
from pathlib import Path

import pytest

from service.settings import Settings

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# Fixtures that start a server or need one running: a test using any of them, directly or
# through another fixture, is an integration test. Tests that need one otherwise (Redis,
# PostgreSQL, a subprocess) carry the marker themselves.
INTEGRATION_FIXTURES = frozenset(
    {"prefect_server", "topology", "private_nats", "spawn", "s3_endpoint"}
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


NATS_HOST = "127.0.0.1"
WORLD_END = date(2026, 11, 20)
WORLD_END_TS = datetime.combine(WORLD_END, day_time(), UTC)


def require_server(name: str, host: str, port: int) -> None:
    """A real server this test needs: fail loudly in CI, skip with a reason elsewhere."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError as exc:
        message = f"{name} is not reachable at {host}:{port} ({exc})"
        if IN_CI:
            pytest.fail(f"{message}; CI must have it running")
        pytest.skip(message)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class PrivateNats:
    """A nats-server of a test's own: free port, own store, ours to stop and start."""

    def __init__(self, binary: str, store: Path) -> None:
        with socket.socket() as s:
            s.bind((NATS_HOST, 0))
            self.port = s.getsockname()[1]
        self.url = f"nats://{NATS_HOST}:{self.port}"
        self._command = [binary, "-a", NATS_HOST, "-p", str(self.port), "-js", "-sd", str(store)]
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(self._command, stderr=subprocess.DEVNULL)
        wait_until(self._accepts, 10, f"the private nats-server on port {self.port}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _accepts(self) -> bool:
        try:
            socket.create_connection((NATS_HOST, self.port), timeout=0.2).close()
        except OSError:
            return False
        return True


@pytest.fixture
def private_nats(tmp_path) -> Iterator[PrivateNats]:
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not os.access(binary, os.X_OK):
        message = "nats-server is not installed"
        if IN_CI:
            pytest.fail(f"{message}; CI must have it")
        pytest.skip(message)
    server = PrivateNats(binary, tmp_path / "jetstream")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home")


@pytest.fixture(scope="session")
def prefect_server():
    """One real temporary Prefect server for every flow run in the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def served_home(tmp_path_factory, prefect_server) -> Settings:
    """A world with features online, a promoted champion and a challenger: what serving needs.

    The world ends today, so that the service, which reads as of the wall clock, finds fresh
    features.
    """
    from datetime import datetime

    from flows.features import FeaturesParams, features
    from flows.promote import promote
    from flows.simulate import SimulateParams, simulate
    from flows.training import TrainParams, training

    settings = Settings(home=tmp_path_factory.mktemp("served"))
    as_of = datetime.now(UTC)
    simulate(SimulateParams(users=200, days=28, seed=21, end=as_of.date()), settings)
    features(FeaturesParams(as_of=as_of), settings)
    training(TrainParams(as_of=as_of, min_rows=300), settings)
    assert promote(settings).outcome == "promoted"
    training(TrainParams(as_of=as_of, min_rows=300), settings)  # stays challenger: shadow
    return settings


@pytest.fixture(scope="session")
def client(served_home):
    """The BentoML service in-process (its ASGI app) over `served_home`, for the session.

    One per process: BentoML registers its request metrics when it builds the app, and a
    second app in the same process fails on the duplicate. The environment names the served
    home only while the service starts, which is when it reads it; the registry is pinned too,
    since MLflow's set_tracking_uri exports MLFLOW_TRACKING_URI for whoever runs next.
    """
    from starlette.testclient import TestClient

    from service.service import TipService
    from service.settings import ENV_VARS

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENV_VARS["home"], str(served_home.home))
        patch.setenv(ENV_VARS["mlflow_tracking_uri"], served_home.tracking_uri)
        test_client = TestClient(TipService.to_asgi())
        test_client.__enter__()
    try:
        yield test_client
    finally:
        test_client.__exit__(None, None, None)


@pytest.fixture(scope="session")
def s3_endpoint():
    """An S3-compatible server on 127.0.0.1 (moto's server mode) with a bucket `lake`, and the
    standard AWS variables pointing at it: what a shared event lake looks like in a test."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        message = f"moto's S3 server is not installed ({exc})"
        if IN_CI:
            pytest.fail(f"{message}; CI installs the dev set")
        pytest.skip(message)
    import boto3

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    variables = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "tipml",
        "AWS_SECRET_ACCESS_KEY": "tipml",
        "AWS_REGION": "us-east-1",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in variables.items():
            patch.setenv(name, value)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="lake")
        yield endpoint
    server.stop()
