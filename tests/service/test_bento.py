"""`tipml bento` then `bentoml serve <tag>`: a Bento that carries its scorer serves without
MLflow, and refuses to start on a Feast registry that lacks its FeatureService.

Real processes throughout, in a BentoML home of the test's own: the user's store is untouched.
"""

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from service.scoring.feature_store import open_store
from service.scoring.model_names import CHAMPION, FEATURE_SERVICE_TAG
from service.scoring.model_registry import version_by_alias
from service.settings import ENV_VARS, Settings
from service.tracking import registry_client
from tests.service.test_serve import BODY
from tipml.serving import BIN, bentoml_serve, free_port

pytestmark = pytest.mark.integration  # runs tipml bento and bentoml serve


@dataclass(frozen=True)
class Built:
    tag: str
    bentoml_home: Path
    champion: str  # the MLflow version packed
    feature_service: str


def tipml_bento(served_home: Settings, bentoml_home: Path) -> list[str]:
    """`tipml bento`'s output lines; the last is the Bento's tag."""
    env = os.environ | {
        "BENTOML_HOME": str(bentoml_home),
        ENV_VARS["home"]: str(served_home.home),
        ENV_VARS["mlflow_tracking_uri"]: served_home.tracking_uri,
    }
    done = subprocess.run(
        [str(BIN / "tipml"), "bento"], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip().splitlines()


@pytest.fixture(scope="module")
def built(served_home, tmp_path_factory) -> Built:
    bentoml_home = tmp_path_factory.mktemp("bentoml")
    lines = tipml_bento(served_home, bentoml_home)
    champion = version_by_alias(registry_client(served_home), CHAMPION)
    return Built(
        tag=lines[-1],
        bentoml_home=bentoml_home,
        champion=str(champion.version),
        feature_service=champion.tags[FEATURE_SERVICE_TAG],
    )


def no_mlflow(built: Built) -> dict[str, str]:
    """The Bento's store, and MLflow at a port nobody listens on."""
    return {
        "BENTOML_HOME": str(built.bentoml_home),
        ENV_VARS["mlflow_tracking_uri"]: f"http://127.0.0.1:{free_port()}",
        "TIPML_SERVICE_WORKERS": "1",
    }


def test_the_bento_packs_the_champion_with_where_it_came_from(built):
    name, version = built.tag.split(":")
    text = (built.bentoml_home / "bentos" / name / version / "bento.yaml").read_text()
    assert f"scorer: tip-scorer:v{built.champion}-" in text  # the build argument, kept
    # The runtime set only (requirements-runtime.lock): no test tools in the serving image.
    installs = (built.bentoml_home / "bentos" / name / version / "env" / "python").joinpath(
        "requirements.txt"
    )
    assert "\nbentoml==" in installs.read_text() and "\npytest==" not in installs.read_text()
    [model] = (built.bentoml_home / "models" / "tip-scorer").glob("*/model.yaml")
    info = model.read_text()
    assert f"mlflow_version: '{built.champion}'" in info
    assert f"feature_service: {built.feature_service}" in info
    assert "model_card: " in info
    assert (model.parent / "mlflow-model" / "MLmodel").exists()


def test_packaging_again_reuses_the_model_and_adds_a_bento(built, served_home):
    again = tipml_bento(served_home, built.bentoml_home)
    assert again[-1] != built.tag  # the earlier Bento stays, to roll back to
    assert len(list((built.bentoml_home / "models" / "tip-scorer").glob("*/model.yaml"))) == 1
    assert len(list((built.bentoml_home / "bentos" / "tipml").glob("*/bento.yaml"))) == 2


def test_the_bento_serves_its_own_scorer_with_mlflow_down(built, served_home, tmp_path):
    log_path = tmp_path / "serve.log"
    with bentoml_serve(
        served_home, log_path, target=built.tag, cwd=tmp_path, **no_mlflow(built)
    ) as url:
        answer = httpx.post(f"{url}/score", json=BODY, timeout=10)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == {"name": "tip-scorer", "version": built.champion}
    assert body["feature_service"] == built.feature_service and len(body["candidates"]) == 8
    log = log_path.read_text()
    assert f"tip-scorer v{built.champion} on {built.feature_service}, from this Bento's" in log
    assert "Traceback" not in log


@contextlib.contextmanager
def running(command: list[str], cwd: Path, env: dict[str, str], log_path: Path) -> Iterator[None]:
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield
        finally:
            process.terminate()
            process.wait(timeout=60)


def test_a_bento_whose_feature_service_feast_does_not_know_refuses_to_start(
    built, served_home, tmp_path
):
    moved_on = Settings(home=tmp_path / "home")
    shutil.copytree(served_home.data_dir, moved_on.data_dir)
    open_store(moved_on).delete_feature_service(built.feature_service)
    port = free_port()
    env = os.environ | {ENV_VARS["home"]: str(moved_on.home)} | no_mlflow(built)
    log_path = tmp_path / "serve.log"
    refusal = f"FeatureService {built.feature_service!r}, which the Feast registry"
    command = [str(BIN / "bentoml"), "serve", built.tag, "--port", str(port)]
    with running(command, tmp_path, env, log_path):
        deadline = time.monotonic() + 120
        while refusal not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        with contextlib.suppress(httpx.HTTPError):
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code
            assert ready != 200, "the service started without its FeatureService"
    log = log_path.read_text()
    assert refusal in log and "ModelRejected" in log, log
