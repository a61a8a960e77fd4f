"""`bentoml serve` with failing dependencies: each one's fallback answers and is reported.

The event lake cannot take feedback or decisions, and the bandit state lives in a Redis nobody
listens on (redis-py alone retries with backoff for seconds before it gives up).
"""

import shutil
import socket
from collections.abc import Iterator

import httpx
import pytest

from service.events.lake import open_lake
from service.settings import ENV_VARS, Settings
from tests.service.test_service_hostile import FEEDBACK, GENERATE
from tipml.serving import bentoml_serve

pytestmark = pytest.mark.integration  # runs bentoml serve


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def broken_home(served_home, tmp_path_factory) -> Settings:
    home = Settings(
        home=tmp_path_factory.mktemp("broken"), mlflow_tracking_uri=served_home.tracking_uri
    )
    shutil.copytree(served_home.data_dir, home.data_dir)
    # A file where the partitions of feedback and decisions go: what a full or read-only disk
    # looks like to a writer.
    for kind in ("feedback", "decision"):
        shutil.rmtree(home.events_dir / f"type={kind}", ignore_errors=True)
        (home.events_dir / f"type={kind}").write_text("not a directory")
    return home


@pytest.fixture(scope="module")
def url(broken_home, tmp_path_factory) -> Iterator[str]:
    env = {
        ENV_VARS["bandit_store"]: "redis",
        ENV_VARS["redis_url"]: f"127.0.0.1:{closed_port()}",
        "TIPML_SERVICE_WORKERS": "1",
    }
    log = tmp_path_factory.mktemp("logs") / "serve.log"
    with bentoml_serve(broken_home, log, **env) as base:
        yield base


def test_a_dead_bandit_store_and_a_broken_event_log_still_get_tips(url):
    answer = httpx.post(
        f"{url}/generate", json=GENERATE | {"experiment": "prompt-bandit"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    tip = answer.json()
    assert set(tip["dependency_fallbacks"]) == {"bandit_state", "event_log"}
    assert tip["dependency_fallbacks"]["bandit_state"] in {"timeout", "unavailable", "circuit_open"}
    assert tip["dependency_fallbacks"]["event_log"] == "unavailable"
    assert tip["degraded"] is True and 0 < tip["propensity"] <= 1
    assert tip["arm"] == tip["prompt_version"] and tip["format_ok"]
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert 'dependency="bandit_state",endpoint="generate"' in metrics
    assert 'dependency="event_log",endpoint="generate"' in metrics


def test_feedback_the_log_cannot_take_is_a_503_and_a_retry_is_safe(url, broken_home):
    first = httpx.post(f"{url}/feedback", json=FEEDBACK, timeout=10)
    assert first.status_code == 503, first.text
    assert "event_id" in first.json()["error"]
    # Not remembered as seen: once the disk is back, the retry is appended, not a duplicate.
    again = httpx.post(f"{url}/feedback", json=FEEDBACK, timeout=10)
    assert again.status_code == 503
    assert FEEDBACK["event_id"] not in {r["event_id"] for r in open_lake(broken_home).records()}
