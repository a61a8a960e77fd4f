"""prefect.yaml: every deployment loads its flow, carries a valid cron schedule, and
`prefect deploy --all` registers them on a real Prefect server."""

import asyncio
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import httpx
import pytest
from prefect.server.schemas.schedules import CronSchedule

from flows.serve import PROJECT_DIR, deployments_from_yaml

pytestmark = pytest.mark.integration  # starts a Prefect server

BIN = Path(sys.executable).parent


def next_runs(cron: str, timezone: str, count: int) -> list:
    return asyncio.run(CronSchedule(cron=cron, timezone=timezone).get_dates(count))


@pytest.mark.parametrize(
    ("name", "flow", "every"),
    [
        ("features-hourly", "features", timedelta(hours=1)),
        ("compaction-daily", "compaction", timedelta(days=1)),
        ("training-daily", "training", timedelta(days=1)),
        ("promote-daily", "promote", timedelta(days=1)),
        ("bandit-update-15min", "bandit_update", timedelta(minutes=15)),
        ("benchmark-weekly", "benchmark", timedelta(weeks=1)),
    ],
)
def test_each_deployment_runs_its_flow_on_its_cadence_in_utc(name, flow, every):
    deployment = {d.name: d for d in deployments_from_yaml()}[name]
    assert deployment.flow_name == flow
    [schedule] = [s.schedule for s in deployment.schedules]
    assert schedule.timezone == "UTC"
    runs = next_runs(schedule.cron, schedule.timezone, 3)
    gaps = {b.timestamp() - a.timestamp() for a, b in pairwise(runs)}
    assert gaps == {every.total_seconds()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_prefect_deploy_all_registers_every_schedule_on_a_real_server(tmp_path):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = os.environ | {
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PWD": str(PROJECT_DIR),  # prefect.yaml's pull step reads it
    }
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - the server outlives this block
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "Prefect server did not come up"
            time.sleep(1)

        def prefect(*args: str) -> None:
            done = subprocess.run(
                [str(BIN / "prefect"), *args],
                cwd=PROJECT_DIR,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, done.stdout + done.stderr

        prefect("work-pool", "create", "tipml-process", "--type", "process")
        prefect("--no-prompt", "deploy", "--all")

        deployments = httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
        registered = {
            d["name"]: (
                d["work_pool_name"],
                [
                    (s["schedule"]["cron"], s["schedule"]["timezone"], s["active"])
                    for s in d["schedules"]
                ],
            )
            for d in deployments
        }
        expected = {
            d.name: (
                "tipml-process",
                [(s.schedule.cron, s.schedule.timezone, True) for s in d.schedules],
            )
            for d in deployments_from_yaml()
        }
        assert registered == expected
        assert set(expected) == {
            "features-hourly",
            "compaction-daily",
            "training-daily",
            "promote-daily",
            "bandit-update-15min",
            "benchmark-weekly",
        }
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
