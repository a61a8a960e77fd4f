"""Run `bentoml serve` as a user would: for the demo and for tests of the real server."""

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from service.settings import ENV_VARS, Settings

BIN = Path(sys.executable).parent
PROJECT_DIR = Path(__file__).resolve().parent.parent
SERVICE = "service.service:TipService"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def bentoml_serve(
    home: Settings,
    log_path: Path,
    target: str = SERVICE,
    cwd: Path = PROJECT_DIR,
    **env: str,
) -> Iterator[str]:
    """`target` (the service in the source tree, or a Bento's tag) on a free port, run from
    `cwd`; yields its base URL once /readyz answers."""
    port = free_port()
    # The registry is `home`'s: MLflow's set_tracking_uri exports MLFLOW_TRACKING_URI into
    # this process's environment, so an inherited one may name another registry.
    pinned = {ENV_VARS["home"]: str(home.home), ENV_VARS["mlflow_tracking_uri"]: home.tracking_uri}
    environment = os.environ | pinned | env
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [str(BIN / "bentoml"), "serve", target, "--port", str(port)],
            cwd=cwd,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"bentoml serve did not become ready:\n{log_path.read_text()}"
                    )
                time.sleep(0.5)
            yield url
        finally:
            server.terminate()
            server.wait(timeout=60)
