"""What a newcomer's first run prints: no third-party warning they cannot act on (ours still
show), and a Prefect server that does not start in time is explained, not dumped."""

import os
import subprocess
import sys

import pytest

WARN_AFTER_IMPORTING_FLOWS = """
import warnings
from warnings import warn
import flows
import service.scoring.feature_store  # Feast's import turns DeprecationWarnings back on
from service.known_warnings import KNOWN_WARNINGS
warn("fetch_arrow_table() is deprecated, use to_arrow_table() instead.", DeprecationWarning)
warn("The ``noload`` loader strategy is deprecated and will be removed", DeprecationWarning)
warnings.warn("Hint: Inferred schema contains integer column(s). Integer columns ...", UserWarning)
warnings.warn("tipml: a warning of our own", UserWarning)
warnings.warn("Hint: Inferred schema contains integer column(s)", DeprecationWarning)
print(len(KNOWN_WARNINGS))
"""


def test_the_known_third_party_warnings_are_silenced_and_ours_are_not():
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", WARN_AFTER_IMPORTING_FLOWS],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "3"
    shown = [line for line in done.stderr.splitlines() if "Warning:" in line]
    assert len(shown) == 2, done.stderr
    assert "tipml: a warning of our own" in shown[0]
    # Silenced by message and category both: the same words in another category still show.
    assert "DeprecationWarning: Hint: Inferred schema" in shown[1]


@pytest.mark.integration
def test_a_prefect_server_that_does_not_start_in_time_gets_advice_not_a_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {
        "PREFECT_HOME": str(tmp_path / "prefect"),
        # The user's own setting wins over the flows' generous default: here, no time at all.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "0",
    }
    args = ["--home", str(tmp_path / "home"), "simulate", "--users", "3", "--days", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "tipml", *args, "--seed", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    message = " ".join(done.stderr.split())
    assert "temporary API server did not start in time" in message
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, here 0 s" in message
    assert "prefect server start" in message
