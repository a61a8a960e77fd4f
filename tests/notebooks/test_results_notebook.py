"""notebooks/results.ipynb runs top to bottom on a small world, and production never imports it.

The world is the spine's on a small scale (simulate -> features -> train -> promote) plus a
tiny offline benchmark (the `rules` and `generic-baseline` writers, `rules-judge`, compare), so
every section of the notebook has something to show. The notebook runs in a fresh kernel of
this interpreter, told where the world is the way a person would tell it: the environment.
"""

import ast
from datetime import timedelta
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from benchmark.collect import collect
from benchmark.compare import CompareParams, compare
from benchmark.grid import CollectParams
from benchmark.judging import AutoJudgeParams, auto
from flows.features import FeaturesParams, features
from flows.promote import promote
from flows.simulate import SimulateParams, simulate
from flows.training import TrainParams, training
from service.settings import ENV_VARS, Settings
from tests.conftest import WORLD_END, WORLD_END_TS

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "results.ipynb"
PRODUCTION = ("tipml", "perf", "flows", "benchmark", "service", "feature_repo")
AS_OF = WORLD_END_TS + timedelta(hours=12)
SCENARIOS = ("student-late-night", "manager-morning", "parent-evening")


@pytest.fixture(scope="module")
def world(tmp_path_factory, prefect_server) -> Settings:
    settings = Settings(home=tmp_path_factory.mktemp("results"))
    simulate(SimulateParams(users=200, days=21, seed=21, end=WORLD_END), settings)
    features(FeaturesParams(as_of=AS_OF), settings)
    training(TrainParams(as_of=AS_OF, min_rows=300), settings)
    assert promote(settings).outcome == "promoted"
    grid = CollectParams(
        models=("rules", "generic-baseline"), prompts=("v1", "v3-few-shot"), scenarios=SCENARIOS
    )
    collect(grid, settings)
    auto(AutoJudgeParams(judge="rules-judge"), settings)
    compare(CompareParams(n_boot=200), settings)
    return settings


def execute(settings: Settings, monkeypatch: pytest.MonkeyPatch, workdir: Path):
    """The notebook run by a python3 kernel, which jupyter_client starts with this very
    interpreter (sys.executable), so it sees the venv's packages and the test's environment."""
    monkeypatch.setenv(ENV_VARS["home"], str(settings.home))
    monkeypatch.setenv(ENV_VARS["mlflow_tracking_uri"], settings.tracking_uri)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=300,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()  # raises CellExecutionError on the first cell that fails
    return notebook


def printed(notebook, tag: str) -> str:
    (cell,) = [c for c in notebook.cells if tag in c.metadata.get("tags", [])]
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def images(notebook, tag: str) -> int:
    (cell,) = [c for c in notebook.cells if tag in c.metadata.get("tags", [])]
    return sum("image/png" in o.get("data", {}) for o in cell.outputs)


def test_the_notebook_runs_on_a_small_world(world, monkeypatch, tmp_path):
    notebook = execute(world, monkeypatch, tmp_path)

    assert str(world.home) in printed(notebook, "setup")
    card = printed(notebook, "card")
    assert "tip-scorer v1" in card and "last decision: promoted" in card
    assert "ECE" in printed(notebook, "calibration")
    assert "timezone_region" in printed(notebook, "fairness")
    assert printed(notebook, "benchmark") == ""  # found the compare run: no note
    board = printed(notebook, "leaderboard")
    assert "latest compare run" in board
    assert "rules|v1" in board and "generic-baseline|v3-few-shot" in board
    assert "world-uniform" in printed(notebook, "experiment")
    ope = printed(notebook, "ope")
    assert "candidate uniform" in ope and "candidate greedy" in ope
    assert "DR" in ope and "effective sample size" in ope
    for tag in ("calibration", "fairness", "leaderboard", "accept_over_time", "ope_plot"):
        assert images(notebook, tag) >= 1, tag


def test_production_code_never_imports_notebooks():
    """notebooks/ is research: a production module importing it would ship a dependency on
    files no package contains. Not a package, so import-linter cannot check it; this does."""
    offenders = []
    for package in PRODUCTION:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module or ""]
                else:
                    continue
                if any(name.split(".")[0] == "notebooks" for name in names):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def test_the_committed_notebook_has_no_outputs():
    """The test executes it; committed outputs would be stale numbers from someone's world."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
