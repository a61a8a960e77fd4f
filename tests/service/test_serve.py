"""The service as `bentoml serve` runs it, and as `bentoml build` packages it."""

import os
import shutil
import subprocess

import httpx
import pytest

from feature_repo.categories import TIP_CATEGORIES
from feature_repo.cohort_features import COHORT_FEATURES
from feature_repo.profile_features import PROFILE_FEATURES
from service.settings import ENV_VARS, Settings
from tests.service.test_http_boundary import SECRET, SECRET_BODY, SECRET_PATHS, TWO_MIB
from tests.service.test_service import CONTEXT
from tipml.serving import BIN, PROJECT_DIR, bentoml_serve, free_port

pytestmark = pytest.mark.integration  # runs bentoml serve

BODY = {
    "user_id": "u000005",
    "candidates": [{"tip_id": f"t{i}", "category": TIP_CATEGORIES[i % 4]} for i in range(8)],
    "context": CONTEXT,
}


def test_bentoml_serve_answers_scores_errors_and_its_own_endpoints(served_home, tmp_path):
    log_path = tmp_path / "serve.log"
    with bentoml_serve(served_home, log_path) as url:
        body = httpx.post(f"{url}/score", json=BODY, timeout=10).json()
        assert len(body["candidates"]) == 8 and body["degraded"] is False
        bad = httpx.post(f"{url}/score", json=BODY | {"user_id": ""}, timeout=10)
        assert bad.status_code == 400 and bad.json()["detail"][0]["loc"] == ["user_id"]
        assert httpx.get(f"{url}/livez").status_code == 200
        assert "bentoml_service_request_total" in httpx.get(f"{url}/metrics").text
        spec = httpx.get(f"{url}/docs.json").json()
        assert {"/score", "/generate", "/feedback"} <= set(spec["paths"])
        # User text in a bad request stays out of the log; other bodies are refused unread.
        secret = httpx.post(f"{url}/score", json=SECRET_BODY, timeout=10)
        multipart = httpx.post(f"{url}/score", files={"f": b"x"}, timeout=10)
        huge = httpx.post(
            f"{url}/score",
            content=TWO_MIB,
            headers={"content-type": "application/json"},
            timeout=10,
        )
    assert (secret.status_code, multipart.status_code, huge.status_code) == (400, 415, 413)
    log = log_path.read_text()
    assert SECRET not in log and "Traceback" not in log
    [line] = [line for line in log.splitlines() if "400 POST /score" in line and "title" in line]
    assert "[WARNING]" in line and all(path in line for path in SECRET_PATHS)


def test_a_lost_store_and_a_dead_llm_still_get_answers(served_home, tmp_path):
    broken = Settings(home=tmp_path / "broken")
    shutil.copytree(served_home.data_dir, broken.data_dir)
    online = broken.data_dir / "online_store.db"
    online.unlink()
    online.mkdir()  # what a lost disk looks like to SQLite: it cannot open the file
    env = {
        ENV_VARS["mlflow_tracking_uri"]: served_home.tracking_uri,
        # The primary LLM is an OpenAI-compatible server nobody runs: rules must answer.
        "TIPML_LLM_MODEL": "openai-compatible",
        "TIPML_OPENAI_MODEL": "openai/tip-writer",
        "TIPML_OPENAI_API_BASE": f"http://127.0.0.1:{free_port()}/v1",
        "TIPML_OPENAI_API_KEY": "unused",
    }
    with bentoml_serve(broken, tmp_path / "serve.log", **env) as url:
        scored = httpx.post(f"{url}/score", json=BODY, timeout=10).json()
        written = httpx.post(
            f"{url}/generate", json={"user_id": "u000005", "context": CONTEXT}, timeout=30
        ).json()
    assert scored["degraded"] is True
    # The champion reads tip_scorer_v2: the profile and the request zone's cohort both fall back.
    assert scored["fallbacks"] == {
        f.name: "store_unavailable" for f in (*PROFILE_FEATURES, *COHORT_FEATURES)
    }
    assert len(scored["candidates"]) == 8
    assert written["degraded"] is True and written["fallback_used"] is True
    assert written["model"] == "rules/tips-v1" and written["format_ok"]


def test_bentoml_build_packages_the_service(tmp_path):
    env = os.environ | {"BENTOML_HOME": str(tmp_path / "bentoml")}
    done = subprocess.run(
        [str(BIN / "bentoml"), "build"], cwd=PROJECT_DIR, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [bento] = list((tmp_path / "bentoml" / "bentos" / "tipml").glob("*/bento.yaml"))
    source = bento.parent / "src"
    assert (source / "service" / "service.py").exists()
    assert (source / "feature_repo" / "contracts" / "profile_features.json").exists()
    assert not (source / "feature_repo" / "data").exists()
