"""The service as `bentoml serve` runs it, and as `bentoml build` packages it."""

import os
import shutil
import subprocess

import httpx

from feature_repo.categories import TIP_CATEGORIES
from feature_repo.profile_features import PROFILE_FEATURES
from service.settings import ENV_VARS, Settings
from tests.serving import BIN, PROJECT_DIR, bentoml_serve
from tests.test_service import CONTEXT

BODY = {
    "user_id": "u000005",
    "candidates": [{"tip_id": f"t{i}", "category": TIP_CATEGORIES[i % 4]} for i in range(8)],
    "context": CONTEXT,
}


def test_bentoml_serve_answers_scores_errors_and_its_own_endpoints(served_home, tmp_path):
    with bentoml_serve(served_home, tmp_path / "serve.log") as url:
        body = httpx.post(f"{url}/score", json=BODY, timeout=10).json()
        assert len(body["candidates"]) == 8 and body["degraded"] is False
        bad = httpx.post(f"{url}/score", json=BODY | {"user_id": ""}, timeout=10)
        assert bad.status_code == 400 and bad.json()["detail"][0]["loc"] == ["user_id"]
        assert httpx.get(f"{url}/livez").status_code == 200
        assert "bentoml_service_request_total" in httpx.get(f"{url}/metrics").text
        spec = httpx.get(f"{url}/docs.json").json()
        assert {"/score", "/feedback"} <= set(spec["paths"])


def test_an_unreadable_online_store_degrades_to_fallbacks(served_home, tmp_path):
    broken = Settings(home=tmp_path / "broken")
    shutil.copytree(served_home.data_dir, broken.data_dir)
    online = broken.data_dir / "online_store.db"
    online.unlink()
    online.mkdir()  # what a lost disk looks like to SQLite: it cannot open the file
    env = {ENV_VARS["mlflow_tracking_uri"]: served_home.tracking_uri}
    with bentoml_serve(broken, tmp_path / "serve.log", **env) as url:
        body = httpx.post(f"{url}/score", json=BODY, timeout=10).json()
    assert body["degraded"] is True
    assert body["fallbacks"] == {f.name: "store_unavailable" for f in PROFILE_FEATURES}
    assert len(body["candidates"]) == 8


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
