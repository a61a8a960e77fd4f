"""The wheel carries every file the service and the flows read at start-up.

Built from a copy of the sources git knows (tracked or not ignored) and installed, without
dependencies, into a scratch virtual environment that borrows this one's third-party packages but
not its editable install of tipml: a file that pyproject.toml forgets to ship fails here, not on a
deployed host.
"""

import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

from tipml.serving import BIN, PROJECT_DIR

pytestmark = pytest.mark.integration  # builds and installs a wheel in subprocesses

START_UP = """
import json, sys
from pathlib import Path
import service, feature_repo
from service.settings import Settings
from service.experiments.config import ExperimentsConfig
from service.generation.gateway import GatewayConfig
from service.api.schemas import ProfileFeatures
from feature_repo.contract import CONTRACT_PATH
from benchmark.models import ModelsConfig
from benchmark.rubric import load_rubric
from benchmark.scenarios import load_scenario_set

print(json.dumps({
    "service": service.__file__,
    "experiments": len(ExperimentsConfig.from_yaml().experiments),
    "gateway": GatewayConfig.from_yaml().primary,
    "contract": CONTRACT_PATH.exists(),
    "profile_fields": len(ProfileFeatures.model_fields),
    "feature_store": (Path(feature_repo.__file__).parent / "feature_store.yaml").exists(),
    "feastignore": (Path(feature_repo.__file__).parent / ".feastignore").exists(),
    "models": len(ModelsConfig.from_yaml().model_list),
    "rubric": load_rubric().version,
    "scenarios": len(load_scenario_set().scenarios),
}))
"""


def test_the_wheel_ships_what_start_up_reads(tmp_path):
    source = tmp_path / "source"
    tracked = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in tracked:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_DIR / name, source / name)
    subprocess.run(
        [str(BIN / "uv"), "build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(source)],
        check=True,
        capture_output=True,
    )
    [wheel] = (tmp_path / "dist").glob("tipml-*.whl")

    scratch = tmp_path / "scratch"
    venv.create(scratch, with_pip=False)
    python = scratch / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # A plain path line: .pth files in the borrowed directory (the editable install's hook)
    # are not processed, so tipml can only come from the wheel.
    (Path(site) / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(BIN / "uv"), "pip", "install", "--python", str(python), "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
    )
    started = subprocess.run(
        [str(python), "-c", START_UP], cwd=tmp_path, capture_output=True, text=True
    )
    assert started.returncode == 0, started.stderr[-3000:]
    loaded = __import__("json").loads(started.stdout.splitlines()[-1])
    assert loaded["service"].startswith(str(scratch)), loaded["service"]
    assert loaded["experiments"] >= 1 and loaded["gateway"] == "rules"
    assert loaded["contract"] and loaded["feature_store"] and loaded["feastignore"]
    assert loaded["profile_fields"] > 0 and loaded["models"] > 0
    assert loaded["rubric"] == "tip-v1" and loaded["scenarios"] > 0
