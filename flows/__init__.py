"""Prefect flow entrypoints (simulate, features, training, promote, benchmark, bandit_update,
demo) over their library sub-packages: featurestore, modeling, experiments, simulation.

Runs offline by design: Prefect's and MLflow's telemetry are off unless the environment turns
them on. Prefect's ephemeral API server gets STARTUP_TIMEOUT_S to start, not Prefect's 20 s,
which a busy 2-core machine has missed on a first run; the environment's own
PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS wins (a value in a Prefect profile does
not: the environment outranks profiles).

Third-party warnings a user cannot act on are silenced here (service/known_warnings.py), by
message and category, so every warning of our own still shows.
"""

import os

from service import known_warnings

STARTUP_TIMEOUT_S = 120

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(STARTUP_TIMEOUT_S))
known_warnings.silence()

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Flows log progress themselves; MLflow's per-download bars only clutter their output.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
