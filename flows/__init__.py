"""Prefect flow entrypoints (simulate, features, training, promote, benchmark, bandit_update,
demo) over their library sub-packages: featurestore, modeling, experiments, simulation.

Runs offline by design: Prefect's and MLflow's telemetry are off unless the environment turns
them on.
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Flows log progress themselves; MLflow's per-download bars only clutter their output.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
