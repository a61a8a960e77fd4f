"""Prefect flows: simulate, features (and later training, promotion, benchmark, bandits).

Runs offline by design: Prefect's telemetry is off unless the environment turns it on.
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
