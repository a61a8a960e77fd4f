import os
import socket
from datetime import UTC, date, datetime, time

import pytest

from service.settings import Settings

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
WORLD_END = date(2026, 11, 20)
WORLD_END_TS = datetime.combine(WORLD_END, time(), UTC)


def require_server(name: str, host: str, port: int) -> None:
    """A real server this test needs: fail loudly in CI, skip with a reason elsewhere."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError as exc:
        message = f"{name} is not reachable at {host}:{port} ({exc})"
        if IN_CI:
            pytest.fail(f"{message}; CI must have it running")
        pytest.skip(message)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home")


@pytest.fixture(scope="session")
def prefect_server():
    """One real temporary Prefect server for every flow run in the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
