"""The README's commands as a user runs them: `tipml demo`, then Feast's own CLI."""

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.api.prompt_versions import RELEASED_PROMPT_VERSIONS
from service.settings import ENV_VARS, FEATURE_REPO_DIR

pytestmark = pytest.mark.integration  # runs tipml as a subprocess

BIN = Path(sys.executable).parent


def run(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done


def test_demo_then_the_card_then_feast_cli_on_its_repo(tmp_path):
    home = tmp_path / "home"
    # Only the home: an MLflow URI another test left in the environment (set_tracking_uri
    # exports it) would send the demo's registry elsewhere.
    inherited = {k: v for k, v in os.environ.items() if k != ENV_VARS["mlflow_tracking_uri"]}
    env = inherited | {ENV_VARS["home"]: str(home), "COLUMNS": "200"}
    demo = run([str(BIN / "tipml"), "demo", "--users", "150", "--days", "21"], tmp_path, env)
    assert "online features" in demo.stdout
    assert "new-user" in demo.stdout and "(missing)" in demo.stdout
    assert "150 users online" in demo.stdout
    assert "registered as challenger" in demo.stdout and "oracle AUC" in demo.stdout
    assert "observable ceiling AUC 0." in demo.stdout and "ceiling model AUC 0." in demo.stdout
    assert "history bound AUC 0." in demo.stdout
    # A small world may or may not pass the gate; either way the decision is on the card.
    outcome = demo.stdout.split("promote: ")[1].split(":")[0]
    assert outcome in {"promoted", "kept"}
    experiments = demo.stdout.split("experiment report")[1]
    assert "world-uniform" in experiments and "SRM" in experiments
    assert all(arm in experiments for arm in RELEASED_PROMPT_VERSIONS)
    assert "IPS" in experiments and "SNIPS" in experiments and "DR" in experiments
    alias = "champion" if outcome == "promoted" else "challenger"
    card = run([str(BIN / "tipml"), "card", "--alias", alias, "--markdown"], tmp_path, env)
    assert "## Fairness (validation slices)" in card.stdout
    assert outcome in card.stdout.split("## Rollout history")[1]

    # The same repo, driven by Feast's CLI from inside it.
    for name in ("feature_store.yaml", "repo.py", ".feastignore"):
        shutil.copy(FEATURE_REPO_DIR / name, home / name)
    run([str(BIN / "feast"), "apply"], home, env)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    materialized = run([str(BIN / "feast"), "materialize-incremental", now], home, env)
    assert "user_profile" in materialized.stdout
