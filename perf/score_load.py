"""Benchmark: /score requests/s and latency under load, our service vs the issue's baseline.

What is measured. Two services, each started here as `bentoml serve` on a free port, one after
the other (never both at once, so they don't share the CPUs):

  ours      service.service:TipService: one Feast row per request, the TimeoutMiddleware timer
            fix, gc.freeze() after warm-up, no access log, and shadow scoring when the home
            has a challenger (as deployed).
  baseline  perf.baseline_service:BaselineService: stock BentoML, one Feast row per
            candidate through the same FeatureService, same fallbacks, model and scores.

For each level of requests in flight (--levels, default 1 8 32), for --seconds each: requests
per second, p50 and p99 latency (ms), failed requests (non-200 responses plus connections lost
mid-request), and the CPU the server's processes and this client used (% of one core). Then
ratios per level (throughput ours/baseline, p99 baseline/ours) and the issue's goal: ours >= 3x
the baseline's throughput, p99 <= 5 ms at 1 in flight and <= 15 ms at 8 in flight. Printed as
MET / NOT MET; nothing asserts on timings. --service-env KEY=VALUE runs both services with
extra environment (e.g. OMP_NUM_THREADS=1, to compare them with OpenMP out of the picture).

How. A closed-loop asyncio client (uvloop when installed) in this process: one persistent
keep-alive HTTP/1.1 connection per in-flight slot, each slot sending its next request as soon
as the previous one is fully read. Requests are encoded once, up front; latency runs from
writing the request to reading the last byte of the response; the client's garbage collector
is frozen and paused while a level runs. Each service gets a warm-up (--warmup-seconds at 8 in
flight) before its levels, and every level starts once the server is idle again (ours' shadow
scorer drains its queue in the background after a burst). What the numbers include besides
the service's own work is measured with the same client: a trivial HTTP responder in a
subprocess (the client's own floor: client plus loopback) and each service's /livez (client
plus BentoML's HTTP stack, which every /score pays too).

Requests: 20 candidates (5 in each of the 4 tip categories), users drawn from the home's
latest profile partition plus ~10% users the store never saw, a context stamped within the
last hour in one of several timezones with 0-6 open tasks (priorities, some overdue, some due
today, some undated). Before the load a fixed sample is checked for 200 and 20 scored
candidates, and the baseline's scores on that sample are compared with ours.

The services read a scratch copy of the home's Feast registry and SQLite online store (MLflow
is read in place), so benchmark traffic never lands in the home's shadow log. The machine is
shared and noisy: compare the two services by the ratios from one run, and read the CPU
columns (and the load average printed first) before trusting absolute numbers.

    .venv/bin/python -m perf.score_load [--home PATH] [--seconds 10] [--levels 1 8 32]
                                         [--skip-baseline] [--service-env KEY=VALUE ...]
"""

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import psutil

from feature_repo.categories import TIP_CATEGORIES
from flows.featurestore.offline_table import partition_days, read_range
from service.scoring.model_names import CHAMPION, MODEL_NAME
from service.scoring.model_registry import version_by_alias
from service.settings import ENV_VARS, Settings
from service.tracking import registry_client

# MLflow's SQLAlchemy store warns on every client start-up; not ours to fix.
warnings.filterwarnings("ignore", message="The ``noload`` loader strategy is deprecated")

ROOT = Path(__file__).resolve().parent.parent
BENTOML = Path(sys.executable).with_name("bentoml")
SERVICES = {
    "ours": "service.service:TipService",
    "baseline": "perf.baseline_service:BaselineService",
}
HOST = "127.0.0.1"

CANDIDATES_PER_CATEGORY = 5  # 4 categories -> 20 candidates per request
UNKNOWN_USER_SHARE = 0.1
UNKNOWN_PREFIX = "bench-unknown-"
POOL_SIZE = 400
SAMPLE_SIZE = 8
WARMUP_IN_FLIGHT = 8
TIMEZONES = (
    "UTC",
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Australia/Sydney",
)
TASK_TITLES = ("Write report", "Call dentist", "Review PR", "Plan sprint", "Pay rent", "Gym")
PROJECTS = ("Inbox", "Work", "Home", "Study")

GOAL_THROUGHPUT_RATIO = 3.0
GOAL_P99_MS = {1: 5.0, 8: 15.0}
READY_TIMEOUT_S = 300.0
SETTLE_TIMEOUT_S = 15.0
SETTLE_WINDOW_S = 0.5
IDLE_CPU_SHARE = 0.1
STOP_TIMEOUT_S = 30.0

# A keep-alive HTTP/1.1 responder with a fixed answer: what the client costs on its own.
TRIVIAL_SERVER = """
import asyncio
RESPONSE = b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\ncontent-type: text/plain\\r\\n\\r\\nok"
async def handle(reader, writer):
    try:
        while True:
            await reader.readuntil(b"\\r\\n\\r\\n")
            writer.write(RESPONSE)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
try:
    import uvloop
    factory = uvloop.new_event_loop
except ImportError:
    factory = None
with asyncio.Runner(loop_factory=factory) as runner:
    runner.run(main())
"""


T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)


# --- the home and the requests ------------------------------------------------------------


class SetupError(RuntimeError):
    """The home cannot be benchmarked, and what to do about it."""


def check_home(settings: Settings) -> str:
    """The champion's version, or SetupError telling the user how to get one."""
    fix = "run `make demo` (or `tipml train && tipml promote`) first"
    registry = settings.data_dir / "registry.db"
    if not registry.is_file():
        raise SetupError(
            f"no Feast registry at {registry}; run `make demo` first (features, then a champion)"
        )
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise SetupError(f"no MLflow registry at {uri}; {fix}")
    version = version_by_alias(registry_client(settings), CHAMPION)
    if version is None:
        raise SetupError(f"no {MODEL_NAME}@{CHAMPION} in the MLflow registry at {uri}; {fix}")
    return str(version.version)


def home_users(settings: Settings) -> list[str]:
    """Users in the latest partition of the profile table: those the online store holds."""
    days = partition_days(settings)
    if not days:
        raise SetupError(
            f"no profile table at {settings.offline_location}; run `make demo` (or "
            "`tipml simulate && tipml features run`) first"
        )
    latest = pd.Timestamp(days[-1], tz="UTC")
    users = sorted(set(read_range(settings, latest, latest)["user_id"]))
    if not users:
        raise SetupError(f"the profile table's latest day, {days[-1]}, holds no users")
    return users


def make_body(rng: np.random.Generator, users: Sequence[str], index: int) -> dict[str, Any]:
    if rng.random() < UNKNOWN_USER_SHARE:
        user = f"{UNKNOWN_PREFIX}{index:05d}"
    else:
        user = str(rng.choice(users))
    zone = ZoneInfo(str(rng.choice(TIMEZONES)))
    now = datetime.now(UTC).astimezone(zone) - timedelta(seconds=int(rng.integers(0, 3600)))
    tasks = []
    for t in range(int(rng.integers(0, 7))):
        kind = rng.random()
        if kind < 0.35:
            due = None
        elif kind < 0.55:
            due = now - timedelta(hours=int(rng.integers(1, 72)))  # overdue
        elif kind < 0.8:
            due = now.replace(hour=int(rng.integers(0, 24)), minute=0, second=0, microsecond=0)
        else:
            due = now + timedelta(days=int(rng.integers(1, 10)))
        tasks.append(
            {
                "id": f"task-{index}-{t}",
                "title": str(rng.choice(TASK_TITLES)),
                "priority": int(rng.integers(1, 5)),
                "due": due.isoformat() if due else None,
                "project": str(rng.choice(PROJECTS)),
            }
        )
    candidates = [
        {"tip_id": f"tip-{category}-{int(n)}", "category": category}
        for category in TIP_CATEGORIES
        for n in rng.choice(50, CANDIDATES_PER_CATEGORY, replace=False)
    ]
    rng.shuffle(candidates)
    return {
        "user_id": user,
        "candidates": candidates,
        "context": {"timestamp": now.isoformat(), "timezone": zone.key, "tasks": tasks},
    }


def http_request(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


# --- the client ---------------------------------------------------------------------------


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one HTTP/1.1 response (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at >= 0:
        end = lower.index(b"\r\n", at + 2)
        return status, await reader.readexactly(int(lower[at + 17 : end]))
    if b"\r\ntransfer-encoding: chunked" not in lower:
        return status, b""
    chunks = []
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)
    await reader.readuntil(b"\r\n")  # no trailers are sent; the final CRLF
    return status, b"".join(chunks)


@dataclass
class Level:
    label: str
    endpoint: str
    in_flight: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    non_200: int = 0
    errors: int = 0  # connections lost mid-request (the slot reconnects)
    server_cpu: float = math.nan  # % of one core
    client_cpu: float = math.nan

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000 if self.latencies else math.nan


async def _slot(
    port: int, requests: Sequence[bytes], first: int, deadline: float, level: Level
) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    count = len(requests)
    i = first
    try:
        while (begin := time.perf_counter()) < deadline:
            writer.write(requests[i % count])
            i += 1
            try:
                status, _ = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError):
                level.errors += 1
                writer.close()
                try:
                    reader, writer = await asyncio.open_connection(HOST, port)
                except OSError:
                    return  # the server is gone: this slot stops, the failure is counted
                continue
            level.latencies.append(time.perf_counter() - begin)
            if status != 200:
                level.non_200 += 1
    finally:
        writer.close()


def cpu_seconds(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def settle(pids: Sequence[int], timeout: float = SETTLE_TIMEOUT_S) -> None:
    """Wait until the server is idle, so a level doesn't pay for work queued by the last one
    (ours' shadow scorer drains its queue in the background)."""
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        before = cpu_seconds(pids)
        time.sleep(SETTLE_WINDOW_S)
        if cpu_seconds(pids) - before < SETTLE_WINDOW_S * IDLE_CPU_SHARE:
            return


def run_level(
    level: Level, port: int, requests: Sequence[bytes], seconds: float, server: Sequence[int]
) -> Level:
    """Closed loop: `level.in_flight` connections, each sending its next request on answer."""

    async def go() -> None:
        # Every connection is open before the clock starts; slots start at spread offsets.
        step = max(1, len(requests) // level.in_flight)
        ready = time.perf_counter()
        deadline = ready + seconds
        await asyncio.gather(
            *(_slot(port, requests, n * step, deadline, level) for n in range(level.in_flight))
        )
        level.seconds = time.perf_counter() - ready

    settle(server)
    gc.collect()
    gc.disable()
    try:
        server_before, client_before = cpu_seconds(server), time.process_time()
        run_async(go())
        server_after, client_after = cpu_seconds(server), time.process_time()
    finally:
        gc.enable()
    if level.seconds:
        level.server_cpu = (server_after - server_before) / level.seconds * 100
        level.client_cpu = (client_after - client_before) / level.seconds * 100
    return level


async def fetch_all(port: int, requests: Sequence[bytes]) -> list[tuple[int, bytes]]:
    """Send requests one after another on one connection; every status and body."""
    reader, writer = await asyncio.open_connection(HOST, port)
    out = []
    try:
        for request in requests:
            writer.write(request)
            out.append(await read_response(reader))
    finally:
        writer.close()
    return out


# --- the services -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def scratch_home(settings: Settings, root: Path) -> Path:
    """A home holding copies of the Feast registry and SQLite online store, nothing else."""
    home = root / "home"
    (home / "data").mkdir(parents=True)
    shutil.copy2(settings.data_dir / "registry.db", home / "data" / "registry.db")
    if settings.online_store == "sqlite":
        shutil.copy2(settings.data_dir / "online_store.db", home / "data" / "online_store.db")
    return home


def service_env(settings: Settings, home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env[ENV_VARS["home"]] = str(home)
    env[ENV_VARS["online_store"]] = settings.online_store
    env[ENV_VARS["redis_url"]] = settings.redis_url
    env[ENV_VARS["mlflow_tracking_uri"]] = settings.tracking_uri  # the home's, read in place
    env["BENTOML_DO_NOT_TRACK"] = "True"  # offline machine: no usage reporting attempts
    return env


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    started_in: float

    def pids(self) -> list[int]:
        try:
            proc = psutil.Process(self.process.pid)
            return [proc.pid, *(child.pid for child in proc.children(recursive=True))]
        except psutil.Error:
            return []

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def _http_ok(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def start_server(name: str, env: dict[str, str], logs: Path) -> Server:
    port = free_port()
    log = logs / f"{name}.log"
    begin = time.perf_counter()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(BENTOML), "serve", SERVICES[name], "--host", HOST, "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as one
        )
    server = Server(name, port, process, log, 0.0)
    while not _http_ok(port, "/readyz"):
        if process.poll() is not None or time.perf_counter() - begin > READY_TIMEOUT_S:
            stop_server(server)
            raise RuntimeError(f"{name} did not become ready; {log}:\n{server.log_tail()}")
        time.sleep(0.5)
    server.started_in = time.perf_counter() - begin
    return server


def stop_server(server: Server) -> None:
    """SIGTERM (BentoML shuts down gracefully), then SIGKILL to its group if it lingers."""
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # a worker left behind by its arbiter


# --- checks and reporting -----------------------------------------------------------------


def check_sample(
    responses: Sequence[tuple[int, bytes]], bodies: Sequence[dict[str, Any]]
) -> tuple[list[str], list[dict[str, float]]]:
    """Problems found (one per failing response), and each response's scores by tip id."""
    problems: list[str] = []
    scores: list[dict[str, float]] = []
    for n, ((status, raw), body) in enumerate(zip(responses, bodies, strict=True)):
        if status != 200:
            problems.append(f"sample {n}: HTTP {status}: {raw[:300]!r}")
            scores.append({})
            continue
        got = json.loads(raw)["candidates"]
        by_tip = {c["tip_id"]: c["score"] for c in got}
        scores.append(by_tip)
        wanted = {c["tip_id"] for c in body["candidates"]}
        values = [c["score"] for c in got]
        if len(got) != len(wanted) or set(by_tip) != wanted:
            problems.append(f"sample {n}: {len(got)} candidates back, expected {len(wanted)}")
        elif not all(0.0 <= v <= 1.0 for v in values) or values != sorted(values, reverse=True):
            problems.append(f"sample {n}: scores not probabilities, best first: {values}")
    return problems, scores


def row(level: Level) -> str:
    p50, p99 = level.percentile_ms(50), level.percentile_ms(99)
    return (
        f"{level.label:9} {level.endpoint:8} {level.in_flight:>9} {level.requests:>9,} "
        f"{level.per_second:>9,.0f} {p50:>8.2f} {p99:>8.2f} {level.non_200 + level.errors:>8} "
        f"{level.server_cpu:>10.0f}% {level.client_cpu:>10.0f}%"
    )


HEADER = (
    f"{'service':9} {'endpoint':8} {'in-flight':>9} {'requests':>9} {'req/s':>9} "
    f"{'p50 ms':>8} {'p99 ms':>8} {'failed':>8} {'server cpu':>11} {'client cpu':>11}"
)


def bench_service(
    name: str,
    env: dict[str, str],
    logs: Path,
    args: argparse.Namespace,
    score_requests: Sequence[bytes],
    sample: tuple[Sequence[bytes], Sequence[dict[str, Any]]],
) -> tuple[list[Level], list[dict[str, float]], list[str]]:
    server = start_server(name, env, logs)
    try:
        print(f"\n{name}: {SERVICES[name]} on :{server.port}, ready in {server.started_in:.1f} s")
        responses = run_async(fetch_all(server.port, sample[0]))
        problems, scores = check_sample(responses, sample[1])
        ok = len(sample[0]) - len(problems)
        print(f"  sample: {ok}/{len(sample[0])} answered 200 with 20 scored candidates, best first")
        for problem in problems:
            print(f"  SAMPLE CHECK FAILED {problem}")
        warm = run_level(
            Level(name, "/score", WARMUP_IN_FLIGHT),
            server.port,
            score_requests,
            args.warmup_seconds,
            server.pids(),
        )
        print(
            f"  warm-up: {args.warmup_seconds:g} s at {warm.in_flight} in flight, "
            f"{warm.requests:,} requests, {warm.non_200 + warm.errors} non-200"
        )
        print(f"  {HEADER}")
        levels: list[Level] = []
        livez = [http_request("GET", "/livez")]
        for in_flight in args.levels:
            level = Level(name, "/livez", in_flight)
            levels.append(run_level(level, server.port, livez, args.floor_seconds, server.pids()))
            print(f"  {row(level)}", flush=True)
        for in_flight in args.levels:
            level = Level(name, "/score", in_flight)
            levels.append(
                run_level(level, server.port, score_requests, args.seconds, server.pids())
            )
            print(f"  {row(level)}", flush=True)
        return levels, scores, problems
    finally:
        stop_server(server)
        if server.process.returncode not in (0, -signal.SIGTERM):
            print(f"  {name} exited with {server.process.returncode}; log {server.log}")


def client_floor(levels: Sequence[int], seconds: float) -> list[Level]:
    process = subprocess.Popen(
        [sys.executable, "-c", TRIVIAL_SERVER], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        line = process.stdout.readline() if process.stdout else b""
        if not line.strip().isdigit():
            raise RuntimeError("the trivial HTTP responder did not start")
        port = int(line)
        request = [http_request("GET", "/livez")]
        return [
            run_level(Level("client", "trivial", n), port, request, seconds, [process.pid])
            for n in levels
        ]
    finally:
        process.terminate()
        process.wait()


def summarize(ours: list[Level], baseline: list[Level] | None, levels: Sequence[int]) -> None:
    def score(levels_: list[Level], in_flight: int) -> Level:
        return next(lv for lv in levels_ if lv.endpoint == "/score" and lv.in_flight == in_flight)

    print("\nratios (same run, same requests):")
    if baseline is None:
        print("  baseline skipped (--skip-baseline)")
    else:
        print(f"  {'in-flight':>9} {'throughput ours/baseline':>25} {'p99 baseline/ours':>18}")
        for n in levels:
            o, b = score(ours, n), score(baseline, n)
            through = o.per_second / b.per_second if b.per_second else math.nan
            tail = b.percentile_ms(99) / o.percentile_ms(99)
            print(f"  {n:>9} {through:>24.2f}x {tail:>17.2f}x")

    print(
        f"\ngoal: ours >= {GOAL_THROUGHPUT_RATIO:g}x baseline throughput; p99 <= "
        + ", ".join(f"{ms:g} ms at {n} in flight" for n, ms in GOAL_P99_MS.items())
    )
    verdicts = []
    for n in levels:
        if baseline is None:
            print(f"  throughput at {n:>2} in flight: not measured (baseline skipped)")
            continue
        ratio = score(ours, n).per_second / max(score(baseline, n).per_second, 1e-9)
        met = ratio >= GOAL_THROUGHPUT_RATIO
        verdicts.append(met)
        print(f"  throughput at {n:>2} in flight: {ratio:6.2f}x baseline  {verdict(met)}")
    for n, limit in GOAL_P99_MS.items():
        if n not in levels:
            print(f"  p99 at {n:>2} in flight: not measured (not in --levels)")
            continue
        p99 = score(ours, n).percentile_ms(99)
        met = p99 <= limit
        verdicts.append(met)
        print(f"  p99 at {n:>2} in flight: {p99:6.2f} ms (limit {limit:g} ms)  {verdict(met)}")
    failed = sum(lv.non_200 + lv.errors for lv in [*ours, *(baseline or [])])
    if failed:
        print(f"  WARNING: {failed} requests failed (non-200 or connection errors); see above")
    overall = bool(verdicts) and all(verdicts)
    print(f"goal {verdict(overall)}" + ("" if baseline is not None else " (partial check)"))


def verdict(met: bool) -> str:
    return "MET" if met else "NOT MET"


def compare_scores(ours: list[dict[str, float]], baseline: list[dict[str, float]]) -> str:
    diffs = [
        abs(o[tip] - b[tip])
        for o, b in zip(ours, baseline, strict=True)
        if o and b and o.keys() == b.keys()
        for tip in o
    ]
    if not diffs:
        return "baseline vs ours on the sample: nothing to compare"
    compared = sum(1 for o, b in zip(ours, baseline, strict=True) if o and b)
    return (
        f"baseline vs ours on the sample: {compared} requests, max |score difference| "
        f"{max(diffs):.2e}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--home", type=Path, help="tipml home (default: TIPML_HOME or feature_repo)"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="per level and service")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--warmup-seconds", type=float, default=3.0)
    parser.add_argument("--floor-seconds", type=float, default=2.0, help="per floor level")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the scratch home and logs")
    parser.add_argument(
        "--service-env",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="extra environment for both services, e.g. OMP_NUM_THREADS=1 (repeatable)",
    )
    args = parser.parse_args()
    if any(item.find("=") < 1 for item in args.service_env):
        parser.error("--service-env takes KEY=VALUE")
    extra_env = {k: v for k, _, v in (item.partition("=") for item in args.service_env)}
    args.levels = sorted(set(args.levels))
    started = time.perf_counter()

    settings = Settings.from_env()
    if args.home is not None:
        settings = settings.model_copy(update={"home": args.home.resolve()})
    try:
        champion = check_home(settings)
        users = home_users(settings)
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    rng = np.random.default_rng(args.seed)
    bodies = [make_body(rng, users, i) for i in range(POOL_SIZE)]
    encoded = [json.dumps(b, separators=(",", ":")).encode() for b in bodies]
    score_requests = [http_request("POST", "/score", body) for body in encoded]
    # The sample: known users and at least one the store never saw.
    unknown = [b["user_id"].startswith(UNKNOWN_PREFIX) for b in bodies]
    picks = [i for i, u in enumerate(unknown) if not u][: SAMPLE_SIZE - 1]
    picks.append(unknown.index(True))
    sample = ([score_requests[i] for i in picks], [bodies[i] for i in picks])

    print(
        f"home {settings.home} ({settings.online_store} online store), {MODEL_NAME}@{CHAMPION} "
        f"v{champion}, {len(users)} users + {UNKNOWN_USER_SHARE:.0%} unknown, "
        f"{len(TIP_CATEGORIES) * CANDIDATES_PER_CATEGORY} candidates per request"
    )
    print(
        f"levels {args.levels} in flight, {args.seconds:g} s each; {os.cpu_count()} CPUs, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; client loop "
        f"{'uvloop' if loop_factory() else 'asyncio'}"
    )
    if extra_env:
        print(f"both services run with {' '.join(f'{k}={v}' for k, v in extra_env.items())}")

    root = Path(tempfile.mkdtemp(prefix="tipml-score-load-"))
    env = service_env(settings, scratch_home(settings, root)) | extra_env
    gc.collect()
    gc.freeze()  # the client's start-up objects stay out of its collections
    problems: list[str] = []
    try:
        print(f"\nclient floor (trivial HTTP responder, {args.floor_seconds:g} s per level):")
        print(f"  {HEADER}")
        for level in client_floor(args.levels, args.floor_seconds):
            print(f"  {row(level)}")
        ours, ours_scores, found = bench_service("ours", env, root, args, score_requests, sample)
        problems += found
        baseline = None
        if not args.skip_baseline:
            baseline, base_scores, found = bench_service(
                "baseline", env, root, args, score_requests, sample
            )
            problems += found
            print(f"\n{compare_scores(ours_scores, base_scores)}")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    summarize(ours, baseline, args.levels)
    print(f"total {time.perf_counter() - started:.0f} s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
