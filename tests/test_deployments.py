"""prefect.yaml: every deployment loads its flow and carries a valid cron schedule."""

import asyncio
from datetime import timedelta
from itertools import pairwise

from prefect.server.schemas.schedules import CronSchedule

from flows.serve import deployments_from_yaml


def next_runs(cron: str, timezone: str, count: int) -> list:
    return asyncio.run(CronSchedule(cron=cron, timezone=timezone).get_dates(count))


def test_features_deploys_hourly_in_utc():
    deployments = {d.name: d for d in deployments_from_yaml()}
    features = deployments["features-hourly"]
    assert features.flow_name == "features"
    [schedule] = [s.schedule for s in features.schedules]
    assert schedule.timezone == "UTC"
    runs = next_runs(schedule.cron, schedule.timezone, 3)
    gaps = {b.timestamp() - a.timestamp() for a, b in pairwise(runs)}
    assert gaps == {timedelta(hours=1).total_seconds()}
