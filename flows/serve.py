"""Serve every deployment in prefect.yaml from one process: for a laptop without a work pool.

Schedules and parameters are read from prefect.yaml, so they are defined once.
    python flows/serve.py
"""

from pathlib import Path

import yaml
from prefect import serve
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import RunnerDeployment
from prefect.flows import load_flow_from_entrypoint

PROJECT_DIR = Path(__file__).resolve().parent.parent


def deployments_from_yaml(path: Path = PROJECT_DIR / "prefect.yaml") -> list[RunnerDeployment]:
    spec = yaml.safe_load(path.read_text())
    deployments = []
    for entry in spec["deployments"]:
        flow = load_flow_from_entrypoint(str(PROJECT_DIR / entry["entrypoint"]))
        deployments.append(
            flow.to_deployment(
                name=entry["name"],
                description=entry.get("description"),
                tags=entry.get("tags"),
                parameters=entry.get("parameters") or {},
                schedules=[
                    CronSchedule(cron=s["cron"], timezone=s.get("timezone"))
                    for s in entry.get("schedules", [])
                ],
            )
        )
    return deployments


if __name__ == "__main__":
    serve(*deployments_from_yaml())
