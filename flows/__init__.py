"""Prefect flow entrypoints (simulate, features, training, promote, benchmark, bandit_update,
demo) over their library sub-packages: featurestore, modeling, experiments, simulation.

Runs offline by design: Prefect's and MLflow's telemetry are off unless the environment turns
them on. Prefect's ephemeral API server gets STARTUP_TIMEOUT_S to start, not Prefect's 20 s,
which a busy 2-core machine has missed on a first run; the environment's own
PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS wins (a value in a Prefect profile does
not: the environment outranks profiles).

Third-party warnings a user cannot act on (KNOWN_WARNINGS) are silenced here, by message and
category, so every warning of our own still shows.
"""

import os
import warnings

STARTUP_TIMEOUT_S = 120
# (message regex, category): each raised inside a dependency, about that dependency's own use
# of another, on every run.
KNOWN_WARNINGS = (
    # ibis, inside Feast's DuckDB offline store, calls a DuckDB method DuckDB deprecated.
    (r"fetch_arrow_table\(\) is deprecated", DeprecationWarning),
    # MLflow's SQLAlchemy tracking store uses a loader SQLAlchemy 2.1 deprecated.
    (r"The ``noload`` loader strategy is deprecated", DeprecationWarning),
    # MLflow's signature inference, on the scorer's integer features, which are never missing.
    (r"Hint: Inferred schema contains integer column", UserWarning),
)

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(STARTUP_TIMEOUT_S))
for message, category in KNOWN_WARNINGS:
    warnings.filterwarnings("ignore", message=message, category=category)

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Flows log progress themselves; MLflow's per-download bars only clutter their output.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
