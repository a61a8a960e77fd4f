"""Benchmark: the batch flows at 5k and 20k users (50k with --big), on 1 and 2 Dask workers.

For each world size (--users, default 5,000 and 20,000; --big adds 50,000) a world of --days
days (default 35, --seed 7, last UTC day of events AS_OF = 2026-11-20) is built once into its
own event lake, then compacted as the nightly `compaction` flow leaves every closed day (one
file per event type and day, sorted by user hash in row groups: a shard reads its own), and
split into ceil(users / --users-per-shard) user shards (default 2,500
users a shard: 2 shards at 5k, 8 at 20k, 20 at 50k), so a shard holds the same number of users
whatever the world's size. The training set is split finer (--train-users-per-shard, default
625: 8 shards at 5k, 32 at 20k), because a shard's labelled impressions carry their logged
request contexts, and Feast's point-in-time join holds every profile row in the TTL of every
impression: per user, several times what a features shard holds. One Prefect server
(prefect_test_harness: a temporary SQLite one) serves every flow run; the Dask workers get its
PREFECT_API_URL. For each worker count (--workers, default 1 and 2) every phase below runs on a
cluster of its own, started here and stopped after it so that each phase's peaks are its own:
`dask scheduler` plus N `dask worker --nthreads 1 --memory-limit --worker-memory` processes
(each a nanny and its worker process), worker i pinned to core i (sched_setaffinity: DuckDB and
pyarrow start threads for every core, so an unpinned single worker would already use both and
"2 workers over 1" would measure nothing of scaling out; pinned, a worker is one core, as on a
cluster of 1-core pods); the scheduler and the workers import the flows' modules as they
start (--preload, as a long-lived cluster has them imported: the phase's time is the flow's
work, not a first import of pandas, Feast and Prefect; the scheduler unpickles each task, so
it imports the task's module too), the flow's Settings pointing dask_address at it.
Each phase's flow runs in a process of its own (`python -m perf.scale --phase NAME`), timed
there around the flow call only (imports and cluster start excluded). On the smallest world the
three phases after simulate also run on the embedded default's two candidate runners
(flows/shards.py task_runner), with no cluster started here: "threads" (TIPML_DASK_ADDRESS
unset: threads of the flow's process) and "local" (a LocalCluster of one worker process per
core that the flow starts, its start-up inside the timing, as a user of `local` pays it on
every run):

  simulate              the world's events into its lake: the `simulate` flow with
                        SimulateParams.shards = n on the cluster (the 2-worker run writes a
                        scratch lake, deleted after; the 1-worker run builds the world).
  features-full         flows.features.features(FeaturesParams(as_of=AS_OF 00:00 UTC,
                        shards=n, full=True)) in a fresh home reading the world's lake: every
                        shard's profiles, the offline table, the Feast registry and the online
                        store (SQLite), all of what the flow does.
  features-incremental  then the same flow as of AS_OF + 1 day, full=False, in that home: the
                        next day's daily run (one new as-of day plus overlap_days=2 before it).
  training-set          the `training` flow's build step alone, in that home, as of AS_OF + 1
                        day: its subflow `training-set-shards` (per shard, TrainParams.shards
                        = n: its users' labelled impressions, then their point-in-time read;
                        the rows put in one order); not the fit. Of a sample of
                        --train-sample-users users (default 5,000; TrainParams.user_sample =
                        5,000 / users, chosen by user hash; 0: every user): the fit holds
                        every training row in one process, so a world larger than that
                        process trains on a sample, and this is the build such a world runs.
  training-set-all      only on the largest world, on the most workers, when it has more
                        users than the sample: the same build of every user, for reference
                        (no goal: its rows outgrow the one process the fit runs in).
  redis-online          only when Redis answers at 127.0.0.1:6379, on the smallest world, no
                        Dask: materialize_profiles() of the 1-worker home's profiles into a
                        Redis online store (db 14, flushed before and after); the bytes per
                        user are the sum of MEMORY USAGE over the keys it wrote / users.

Memory: the driver samples the resident set of the flow's process, every worker process and
their children with psutil every 0.2 s, and at the end of each phase reads each live worker
process's VmHWM (/proc/<pid>/status: the kernel's exact peak); the flow's process reports its
own VmHWM as it ends (not ru_maxrss, which Linux carries over from the driver that forked it).
A process's peak is the largest of these. Rows per second: events written (simulate), events
read (features: each shard's users' events), training rows (training-set).

A phase whose processes hold more than --rss-cap-gib (default 12 GiB) in all is killed (the
machine is shared); it is printed FAILED with the peaks its processes reached, and counts as
NOT MET for every goal it is part of.

Printed: the load average first; each world's events, lake files and bytes (events per user
per day, bytes per event, and bytes per event of one day compacted in a copy, as the nightly
compaction leaves it; the busiest UTC hour's events over the mean hour's); a table of wall
seconds, peak RSS of the flow's process and of the largest worker, rows and rows/s per
(world, workers, phase); then the ratios: each phase's speed on 2 workers over 1, and its
peaks at the largest world over the smallest. Then the goals as MET / NOT MET: the peak RSS
of any process at 20k users <= 1 GiB (1,024 MiB; training-set-all aside); in each phase, the
largest worker's peak at 20k users <= 1.25x its peak at 5k (shards of the same size: it must
not grow with the world); 2 workers >= 1.6x one worker on the features full run and the
training-set build, at each world; the daily incremental features run at 20k users under 60 s
(with each worker count).
Nothing asserts on timings: the machine is shared and noisy (the load average is printed
first), so compare the ratios measured in the same run.

Building a 20k world takes minutes: --keep DIR keeps the worlds there (and reuses one built
with the same flags, printing the simulate timings measured when it was built).

    .venv/bin/python -m perf.scale [--users 5000 20000] [--big] [--days 35] [--seed 7]
                                   [--users-per-shard 2500] [--train-users-per-shard 625]
                                   [--train-sample-users 5000] [--workers 1 2]
                                   [--worker-memory 6GiB] [--rss-cap-gib 12] [--keep DIR]
                                   [--no-redis]
"""

import argparse
import gc
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flows.compaction import CompactionParams, compaction
from flows.features import FeaturesParams, features
from flows.shards import task_runner
from flows.simulate import SimulateParams, simulate
from flows.training import TrainParams
from flows.training_shards import training_set_shards
from perf.events import AS_OF, NEXT_DAY, OVERLAP_DAYS, midnight, rss_mb, verdict
from service.events.lake import DAY_PREFIX, TYPE_PREFIX, EventLake, open_lake
from service.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DASK = str(Path(sys.executable).with_name("dask"))
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 14
SAMPLE_EVERY = 0.2  # seconds between psutil samples

GOAL_PEAK_MIB = 1024  # any process at GOAL_USERS
GOAL_USERS = 20_000
GOAL_WORKER_GROWTH = 1.25  # largest worker's peak, GOAL_USERS over the smallest world
GOAL_SPEEDUP = 1.6  # 2 workers over 1
GOAL_INCREMENTAL_S = 60.0  # the daily run at GOAL_USERS
# Imported by the scheduler and each worker as they start, as a long-lived cluster has them:
# a phase's time is its flow's work, not a first import of pandas, Feast and Prefect. The
# scheduler unpickles every task it is given, so it imports the task's module: without these,
# a fresh scheduler held the first features task ~7 s before any worker saw it; a fresh
# worker's first features task spent ~8 s importing Prefect's task engine and Feast's DuckDB
# offline store, with ibis and sqlglot, which Feast and Prefect import lazily.
PRELOAD = (
    "flows.features",
    "flows.simulate",
    "flows.training_shards",
    "prefect.task_engine",
    "feast.infra.offline_stores.duckdb",
    "feast.repo_operations",
)
SPEEDUP_PHASES = ("features-full", "training-set")
# The embedded default's candidates (flows/shards.py task_runner), measured on the smallest
# world: threads in the flow's process, or a LocalCluster the flow starts (timed with it).
EMBEDDED = ("threads", "local")
CLUSTER_PHASES = ("features-full", "features-incremental", "training-set")


# --- the homes ------------------------------------------------------------------------------


def world_home(root: Path, users: int, days: int, seed: int) -> Path:
    return root / f"world-{users}u-{days}d-s{seed}"


def run_home(root: Path, users: int, workers: int | str) -> Path:
    """Where one runner's features and training set are computed, from scratch."""
    return root / f"run-{users}u-{workers}"


def run_settings(home: Path, world: Path, address: str | None, **more: str) -> Settings:
    events_url = Settings(home=world).events_location
    return Settings(home=home, events_url=events_url, dask_address=address, **more)


# --- a Dask cluster of N single-threaded workers, and what its processes use ------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A `dask scheduler` and N `dask worker`s (nanny + worker process each), like
    tests/flows/test_distributed.py's, whose task runs report to PREFECT_API_URL."""

    def __init__(self, workers: int, memory_limit: str, api_url: str) -> None:
        port = free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        env = {**os.environ, "PREFECT_API_URL": api_url}
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": REPO}
        preload = [arg for module in PRELOAD for arg in ("--preload", module)]
        address = ["--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]
        self.scheduler = subprocess.Popen([DASK, "scheduler", *address, *preload], **quiet)
        flags = ["--nthreads", "1", "--memory-limit", memory_limit, "--no-dashboard", *preload]
        cores = sorted(os.sched_getaffinity(0))
        self.workers = {
            f"w{i}": subprocess.Popen(
                [DASK, "worker", self.address, "--name", f"w{i}", *flags],
                env=env,
                preexec_fn=partial(os.sched_setaffinity, 0, {cores[i % len(cores)]}),
                **quiet,
            )
            for i in range(workers)
        }
        from distributed import Client

        with Client(self.address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=120)

    def close(self) -> None:
        for process in [*self.workers.values(), self.scheduler]:
            if process.poll() is None:
                process.terminate()
        for process in [*self.workers.values(), self.scheduler]:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def vm_hwm_mb(pid: int) -> float:
    """The kernel's peak resident set of a live process, MiB (0 when it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # the process has exited
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sampler:
    """The peak RSS (MiB) of each process under each named root pid, sampled with psutil;
    when their sum passes `cap_mb`, the "flow" root is killed (the machine is shared: a phase
    must not take its memory from everyone else)."""

    def __init__(self, roots: dict[str, int], cap_mb: float) -> None:
        self.roots = roots
        self.cap_mb = cap_mb
        self.over_cap: str | None = None
        self.peaks: dict[tuple[str, int], float] = {}
        self.spawned: set[tuple[str, int]] = set()  # multiprocessing children: worker processes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tree(self) -> Iterator[tuple[str, psutil.Process]]:
        for name, pid in self.roots.items():
            try:
                root = psutil.Process(pid)
                yield from ((name, p) for p in [root, *root.children(recursive=True)])
            except psutil.Error:
                continue

    def _sample(self, hwm: bool = False) -> None:
        now: dict[str, float] = {}
        for name, process in self._tree():
            key = (name, process.pid)
            try:
                mb = process.memory_info().rss / 2**20
                if key not in self.peaks and "spawn_main" in " ".join(process.cmdline()):
                    self.spawned.add(key)
            except psutil.Error:
                continue
            now[name] = now.get(name, 0.0) + mb
            mb = max(mb, vm_hwm_mb(process.pid)) if hwm else mb
            self.peaks[key] = max(self.peaks.get(key, 0.0), mb)
        if not hwm and self.over_cap is None and sum(now.values()) > self.cap_mb:
            each = ", ".join(f"{name} {mb:,.0f}" for name, mb in now.items())
            self.over_cap = (
                f"killed: its processes held {sum(now.values()):,.0f} MiB, over the --rss-cap "
                f"(MiB by process tree: {each})"
            )
            with suppress(psutil.Error):
                psutil.Process(self.roots["flow"]).kill()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self._sample()

    def stop(self) -> dict[str, dict]:
        """Per root name: its largest process's peak, and how many worker processes a nanny
        started under it (more than one: the nanny restarted its worker)."""
        self._stop.set()
        self._thread.join()
        self._sample(hwm=True)
        out: dict[str, dict] = {}
        for (name, pid), mb in self.peaks.items():
            entry = out.setdefault(name, {"peak_mb": 0.0, "spawned": 0})
            entry["peak_mb"] = max(entry["peak_mb"], mb)
            entry["spawned"] += (name, pid) in self.spawned
        return out


# --- the phases, each in a process of its own ---------------------------------------------------


def task_seconds(since: datetime) -> dict[str, list[float]]:
    """Run seconds of every task run started since `since`, by task name (the server serves
    this benchmark alone, one phase at a time)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterStartTime

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(start_time=TaskRunFilterStartTime(after_=since)),
            limit=200,
        )
    out: dict[str, list[float]] = {}
    for run in runs:
        name = run.name.rsplit("-", 1)[0]
        out.setdefault(name, []).append(run.total_run_time.total_seconds())
    return out


def task_note(tasks: dict[str, list[float]], shards: int) -> str:
    """The shard tasks' longest and total run time (of those that ran: a sample's shards may
    be fewer than `shards`), and the other tasks' times."""
    parts = []
    for name, seconds in sorted(tasks.items()):
        if len(seconds) > 1 and shards > 1:
            parts.append(f"{name} x{len(seconds)} max {max(seconds):.1f} sum {sum(seconds):.1f} s")
        elif sum(seconds) >= 0.1:
            parts.append(f"{name} {sum(seconds):.1f} s")
    return "; ".join(parts)


def simulate_phase(args: argparse.Namespace) -> dict:
    params = SimulateParams(
        users=args.users, days=args.days, seed=args.seed, end=NEXT_DAY, shards=args.shards
    )
    report = simulate(params, Settings(home=args.home, dask_address=args.address))
    return {"rows": report.events, "note": f"{args.shards} shards"}


def features_phase(args: argparse.Namespace, full: bool) -> dict:
    as_of = midnight(AS_OF if full else NEXT_DAY)
    params = FeaturesParams(as_of=as_of, overlap_days=OVERLAP_DAYS, full=full, shards=args.shards)
    report = features(params, run_settings(args.home, args.world, args.address))
    update = report.profiles
    return {
        "rows": update.events_read,
        "mode": update.mode,
        "note": f"{update.mode}, {len(update.days_computed)} days, "
        f"{update.rows_written:,} profile rows, {report.materialized.users:,} users online",
    }


def training_phase(args: argparse.Namespace, sample_users: int) -> dict:
    """The training flow's build step alone: its subflow of per-shard point-in-time reads, of
    a `sample_users` sample of the users (every user when 0)."""
    settings = run_settings(args.home, args.world, args.address)
    as_of = midnight(NEXT_DAY)
    sample = min(1.0, sample_users / args.users) if sample_users else 1.0
    params = TrainParams(as_of=as_of, shards=args.shards, user_sample=sample)
    build = training_set_shards.with_options(task_runner=task_runner(settings))
    rows = build(settings, params, as_of)
    users = rows["user_id"].nunique()
    return {"rows": len(rows), "note": f"{len(rows):,} training rows of {users:,} users"}


def redis_phase(args: argparse.Namespace) -> dict:
    """The features-full home's table materialized into Redis db 14; MEMORY USAGE per user."""
    import redis

    from flows.featurestore.materialize import materialize_profiles
    from service.scoring.feature_store import apply_definitions, open_store

    url = f"{REDIS_HOST}:{REDIS_PORT},db={REDIS_DB}"
    settings = run_settings(args.home, args.world, None, online_store="redis", redis_url=url)
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    client.flushdb()
    try:
        store = open_store(settings)
        apply_definitions(store)
        started = time.perf_counter()
        report = materialize_profiles(
            store, settings, midnight(NEXT_DAY), timedelta(days=OVERLAP_DAYS), 5000
        )
        seconds = time.perf_counter() - started
        keys = list(client.scan_iter(count=1000))
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.memory_usage(key, samples=0)
        used = sum(n or 0 for n in pipe.execute())
    finally:
        client.flushdb()
    per_user = used / max(report.users, 1)
    return {
        "rows": report.users,
        "materialize_s": seconds,
        "bytes_per_user": per_user,
        "keys": len(keys),
        "note": f"{len(keys):,} keys, {used / 2**20:.1f} MiB by MEMORY USAGE, "
        f"{per_user:,.0f} B/user; {report.users / seconds * 60:,.0f} users/min",
    }


PHASES: dict[str, Callable[[argparse.Namespace], dict]] = {
    "simulate": simulate_phase,
    "features-full": lambda args: features_phase(args, full=True),
    "features-incremental": lambda args: features_phase(args, full=False),
    "training-set": lambda args: training_phase(args, args.train_sample_users),
    "training-set-all": lambda args: training_phase(args, 0),
    "redis-online": redis_phase,
}


def run_phase(args: argparse.Namespace) -> None:
    """In the phase's own process: time the flow, take the peak RSS, print one JSON line."""
    from datetime import UTC

    gc.collect()
    before = rss_mb()
    since = datetime.now(UTC)
    started = time.perf_counter()
    result = PHASES[args.phase](args)
    seconds = result.pop("seconds", None) or time.perf_counter() - started
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking driver.
    peak = vm_hwm_mb(os.getpid())
    if args.phase != "redis-online":
        note = task_note(task_seconds(since), args.shards)
        result["note"] = "; ".join(p for p in (result["note"], note) if p)
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "start_mb": before, **result}))


# --- the driver ---------------------------------------------------------------------------------


def measure(
    phase: str,
    args: argparse.Namespace,
    home: Path,
    world: Path,
    users: int,
    shards: int,
    workers: int,
    api_url: str,
) -> dict:
    """One phase in its own process: on a fresh cluster of `workers` when it is a number (0:
    no Dask), or on the embedded default's runner ("threads" or "local") when it is a name."""
    cluster = (
        Cluster(workers, args.worker_memory, api_url)
        if isinstance(workers, int) and workers
        else None
    )
    command = [sys.executable, "-m", "perf.scale", "--phase", phase, "--home", str(home)]
    command += ["--world", str(world), "--users", str(users), "--shards", str(shards)]
    command += ["--days", str(args.days), "--seed", str(args.seed)]
    command += ["--train-sample-users", str(args.train_sample_users)]
    if cluster or workers == "local":
        command += ["--address", cluster.address if cluster else "local"]
    env = {**os.environ, "PREFECT_API_URL": api_url}
    row = {"users": users, "workers": workers, "phase": phase, "shards": shards}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=err, text=True)
        roots = {"flow": process.pid}
        roots |= {name: p.pid for name, p in (cluster.workers if cluster else {}).items()}
        sampler = Sampler(roots, args.rss_cap_gib * 1024)
        started = time.perf_counter()
        try:
            process.wait()
        finally:
            row["wall"] = time.perf_counter() - started
            if process.poll() is None:
                process.kill()
            peaks = sampler.stop()
            if cluster:
                cluster.close()
        out.seek(0)
        err.seek(0)
        lines = [line for line in out.read().splitlines() if line.startswith("{")]
        failed = process.returncode or not lines
        if failed:
            row["error"] = sampler.over_cap or err.read()[-3000:]
    result = {"peak_mb": 0.0} if failed else json.loads(lines[-1])
    worker_peaks = {k: v for k, v in peaks.items() if k != "flow"}
    row |= result
    # A failed phase's peaks are what its processes reached before it stopped.
    row["flow_mb"] = max(result["peak_mb"], peaks.get("flow", {}).get("peak_mb", 0.0))
    row["worker_mb"] = max((v["peak_mb"] for v in worker_peaks.values()), default=0.0)
    row["restarts"] = sum(max(0, v["spawned"] - 1) for v in worker_peaks.values())
    if not failed:
        row["rate"] = row["rows"] / row["seconds"] if row["seconds"] else 0.0
    return row


def print_header() -> None:
    print(
        f"\n{'users':>7} {'runner':>7} {'phase':<21}{'wall s':>8}{'flow MiB':>10}{'worker MiB':>11}"
        f"{'rows':>12}{'rows/s':>10}  notes",
        flush=True,
    )


def print_row(row: dict) -> None:
    head = f"{row['users']:>7,} {row['workers'] or '-':>7} {row['phase']:<21}"
    if "error" in row:
        last = (row["error"].strip().splitlines() or ["no output"])[-1]
        worker = f"{row['worker_mb']:>11,.0f}" if row["workers"] else f"{'-':>11}"
        print(
            f"{head}{row['wall']:>8.1f}{row['flow_mb']:>10,.0f}{worker}{'-':>12}{'-':>10}  "
            f"FAILED: {last}",
            flush=True,
        )
        return
    worker = f"{row['worker_mb']:>11,.0f}" if row["worker_mb"] else f"{'-':>11}"
    notes = row.get("note", "")
    if row.get("restarts"):
        notes += f"; {row['restarts']} worker restart(s)"
    if row.get("cached"):
        notes += "; measured when the world was built"
    print(
        f"{head}{row['seconds']:>8.1f}{row['flow_mb']:>10,.0f}{worker}{row['rows']:>12,}"
        f"{row['rate']:>10,.0f}  {notes}",
        flush=True,
    )


def lake_stats(world: Path, users: int, days: int) -> dict:
    """The world's lake on disk, and one day of it compacted (in a copy) as the nightly
    compaction leaves it: bytes per event both ways."""
    lake = open_lake(Settings(home=world))
    paths = lake.files()
    events = sum(pq.read_metadata(p).num_rows for p in paths)
    size = sum(os.path.getsize(p) for p in paths)
    day = AS_OF - timedelta(days=7)
    with tempfile.TemporaryDirectory(prefix="tipml-scale-compact-") as scratch:
        copy = EventLake(scratch)
        for kind in lake.types():
            for path in lake.day_files(kind, day):
                target = Path(scratch) / f"{TYPE_PREFIX}{kind}" / f"{DAY_PREFIX}{day}"
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target)
            copy.compact(kind, day)
        compacted = [p for k in copy.types() for p in copy.day_files(k, day)]
        day_events = sum(pq.read_metadata(p).num_rows for p in compacted)
        day_bytes = sum(os.path.getsize(p) for p in compacted)
    # Intake's busiest hour: events per UTC hour, whole days of the world, max over mean.
    hours = pa.concat_arrays(
        [
            pc.floor_temporal(lake.read(kind, columns=["timestamp"])["timestamp"], unit="hour")
            .combine_chunks()
            .cast(pa.int64())
            for kind in lake.types()
        ]
    )
    counts = pc.value_counts(hours).field("counts").to_numpy()
    return {
        "events": events,
        "peak_hour_ratio": float(counts.max() / (events / (days * 24))),
        "files": len(paths),
        "bytes": size,
        "events_per_user_day": events / users / days,
        "bytes_per_event": size / events,
        "compacted_bytes_per_event": day_bytes / max(day_events, 1),
    }


def build_world(
    args: argparse.Namespace, root: Path, users: int, shards: int, api_url: str
) -> tuple[list[dict], dict]:
    """The world's simulate rows and lake stats (as written, before the compaction that then
    leaves each day one file per type, as the nightly `compaction` flow leaves every closed
    day): measured now, or those kept from when it was built."""
    world = world_home(root, users, args.days, args.seed)
    record = world / "scale.json"
    if record.exists():
        kept = json.loads(record.read_text())
        if kept.get("shards") == shards and "stats" in kept:
            print(f"reusing the world in {world}", flush=True)
            return [{**row, "cached": True} for row in kept["rows"]], kept["stats"]
    shutil.rmtree(world, ignore_errors=True)
    rows = []
    for workers in sorted(args.workers, reverse=True):
        # The last run builds the kept world; the others write scratch lakes.
        home = world if workers == min(args.workers) else root / "scratch-world"
        shutil.rmtree(home, ignore_errors=True)
        print(f"simulating {users:,} users x {args.days} days ({workers} workers)...")
        row = measure("simulate", args, home, home, users, shards, workers, api_url)
        print_row(row)
        rows.append(row)
        if "error" in row:
            raise SystemExit(f"simulate failed:\n{row['error']}")
        if home != world:
            shutil.rmtree(home, ignore_errors=True)
    stats = lake_stats(world, users, args.days)
    started = time.perf_counter()
    compaction(CompactionParams(closed_after_days=0), Settings(home=world))
    stats["compaction_s"] = time.perf_counter() - started
    stats["compacted_files"] = len(open_lake(Settings(home=world)).files())
    record.write_text(json.dumps({"shards": shards, "rows": rows, "stats": stats}))
    return rows, stats


@contextmanager
def prefect_server() -> Iterator[str]:
    """A temporary Prefect server for every flow run here; yields its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


def redis_up() -> bool:
    try:
        socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=1).close()
    except OSError:
        return False
    return True


def ok_rows(rows: list[dict], **match: object) -> list[dict]:
    """The rows of phases that finished, matching `match`."""
    return [r for r in matching(rows, **match) if "error" not in r]


def matching(rows: list[dict], **match: object) -> list[dict]:
    """The measured rows (finished or failed) matching `match`."""
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def speedup(rows: list[dict], users: int, phase: str) -> tuple[float | None, str]:
    """1-worker seconds over 2-worker seconds, or None and why not."""
    runs = {w: matching(rows, users=users, phase=phase, workers=w) for w in (1, 2)}
    if not (runs[1] and runs[2]):
        return None, "not measured"
    failed = [f"{w} worker(s)" for w, r in runs.items() if "error" in r[0]]
    if failed:
        return None, f"did not finish on {' and '.join(failed)}"
    return runs[1][0]["seconds"] / runs[2][0]["seconds"], ""


def peak_mb(runs: list[dict], key: str) -> float:
    return max(r[key] for r in runs)


def process_peak(row: dict) -> tuple[float, str]:
    if row["flow_mb"] >= row["worker_mb"]:
        return row["flow_mb"], "the flow's process"
    return row["worker_mb"], "a worker"


def summarize(measured: list[dict], sizes: list[int], args: argparse.Namespace) -> None:
    embedded = [r for r in measured if r["workers"] in EMBEDDED]
    rows = [r for r in measured if r not in embedded]  # the clusters' rows and redis-online
    print()
    for users in sizes:
        for phase in ("simulate", *CLUSTER_PHASES):
            ratio, why = speedup(rows, users, phase)
            text = f"{ratio:.2f}x" if ratio else why
            print(f"{users:>7,} users {phase:<21} speed, 2 workers over 1: {text}")
    small, large = min(sizes), max(sizes)
    growth: dict[str, float] = {}
    if large != small:
        print()
        for phase in ("simulate", *CLUSTER_PHASES):
            before, after = (
                ok_rows(rows, users=small, phase=phase),
                matching(rows, users=large, phase=phase),
            )
            if not (before and after):
                continue
            flow_a, worker_a = peak_mb(before, "flow_mb"), peak_mb(before, "worker_mb")
            flow_b, worker_b = peak_mb(after, "flow_mb"), peak_mb(after, "worker_mb")
            note = " (did not finish: peak so far)" if any("error" in r for r in after) else ""
            if not note and worker_a:
                growth[phase] = worker_b / worker_a
            print(
                f"{phase:<21} peak MiB at {small:,} -> {large:,} users: flow's process "
                f"{flow_a:,.0f} -> {flow_b:,.0f} ({flow_b / flow_a:.2f}x), largest worker "
                f"{worker_a:,.0f} -> {worker_b:,.0f} ({worker_b / max(worker_a, 1):.2f}x){note}"
            )
    print()
    for phase in CLUSTER_PHASES:
        runs = {name: ok_rows(embedded, phase=phase, workers=name) for name in EMBEDDED}
        if all(runs.values()):
            threads, local = (runs[name][0]["seconds"] for name in EMBEDDED)
            print(
                f"{small:,} users {phase:<21} embedded default: threads {threads:.1f} s, "
                f"local cluster {local:.1f} s (start-up included): threads "
                f"{local / threads:.2f}x as fast"
            )
    print()

    at_goal = [r for r in matching(rows, users=GOAL_USERS) if r["phase"] != "training-set-all"]
    goal = f"peak RSS of any process at {GOAL_USERS:,} users <= {GOAL_PEAK_MIB:,} MiB"
    if at_goal:
        top = max(at_goal, key=lambda r: process_peak(r)[0])
        peak, which = process_peak(top)
        killed = ", at least: it was killed" if "error" in top else ""
        print(
            f"goal: {goal}: {verdict(peak <= GOAL_PEAK_MIB)} ({peak:,.0f} MiB{killed}: {which}, "
            f"{top['phase']}, {top['workers'] or 'no'} workers)"
        )
    else:
        print(f"goal: {goal}: NOT MEASURED")

    goal = (
        f"largest worker's peak at {GOAL_USERS:,} users <= {GOAL_WORKER_GROWTH:g}x at "
        f"{small:,} in each phase ({args.users_per_shard:,} users a shard, "
        f"{args.train_users_per_shard:,} for the training set)"
    )
    if growth and large == GOAL_USERS:
        phase = max(growth, key=growth.__getitem__)
        worst = growth[phase]
        print(f"goal: {goal}: {verdict(worst <= GOAL_WORKER_GROWTH)} ({worst:.2f}x, {phase})")
    else:
        print(f"goal: {goal}: NOT MEASURED")

    for users in sizes:
        for phase in SPEEDUP_PHASES:
            goal = f"{users:,} users {phase}: 2 workers >= {GOAL_SPEEDUP:g}x one worker"
            ratio, why = speedup(rows, users, phase)
            if ratio:
                print(f"goal: {goal}: {verdict(ratio >= GOAL_SPEEDUP)} ({ratio:.2f}x)")
            elif why == "not measured":
                print(f"goal: {goal}: NOT MEASURED")
            else:
                print(f"goal: {goal}: NOT MET ({why})")

    goal = f"daily incremental features run at {GOAL_USERS:,} users < {GOAL_INCREMENTAL_S:g} s"
    runs = matching(rows, users=GOAL_USERS, phase="features-incremental")
    if any("error" in r for r in runs):
        print(f"goal: {goal}: NOT MET (did not finish)")
    elif runs:
        slowest = max(r["seconds"] for r in runs)
        each = ", ".join(f"{r['seconds']:.1f} s on {r['workers']}" for r in runs)
        print(f"goal: {goal}: {verdict(slowest < GOAL_INCREMENTAL_S)} ({each} workers)")
    else:
        print(f"goal: {goal}: NOT MEASURED")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[5_000, GOAL_USERS])
    parser.add_argument("--big", action="store_true", help="add a 50,000-user world")
    parser.add_argument("--days", type=int, default=35)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--users-per-shard", type=int, default=2_500)
    parser.add_argument("--train-users-per-shard", type=int, default=625)
    parser.add_argument(
        "--train-sample-users",
        type=int,
        default=5_000,
        help="the training set's user sample (TrainParams.user_sample); 0: every user",
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--worker-memory", default="6GiB", help="dask worker --memory-limit")
    parser.add_argument("--keep", type=Path, help="build the worlds here and keep them (or reuse)")
    parser.add_argument(
        "--rss-cap-gib", type=float, default=12, help="kill a phase whose processes pass this"
    )
    parser.add_argument("--no-redis", action="store_true", help="skip the redis-online phase")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--world", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--shards", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        args.users = args.users[0]
        run_phase(args)
        return

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load average {load}", flush=True)
    sizes = sorted({*args.users, *([50_000] if args.big else [])})
    root = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="tipml-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows: list[dict] = []
    worlds: dict[int, dict] = {}
    try:
        with prefect_server() as api_url:
            for users in sizes:
                shards = math.ceil(users / args.users_per_shard)
                train_shards = math.ceil(users / args.train_users_per_shard)
                world = world_home(root, users, args.days, args.seed)
                print(f"\n== {users:,} users, {args.days} days to {AS_OF}, {shards} shards")
                built, stats = build_world(args, root, users, shards, api_url)
                rows += built
                worlds[users] = stats
                print(
                    f"world: {stats['events']:,} events, {stats['events_per_user_day']:.2f} per "
                    f"user-day; lake as written {stats['files']:,} files, "
                    f"{stats['bytes'] / 2**20:,.0f} MiB, {stats['bytes_per_event']:.1f} B/event "
                    f"({stats['compacted_bytes_per_event']:.1f} compacted, one day); busiest "
                    f"UTC hour {stats['peak_hour_ratio']:.2f}x the mean; compacted to "
                    f"{stats['compacted_files']:,} files in {stats['compaction_s']:.0f} s",
                    flush=True,
                )
                print_header()
                for row in (r for r in rows if r["users"] == users):
                    print_row(row)
                runners = [*args.workers, *(EMBEDDED if users == min(sizes) else ())]
                for workers in runners:
                    home = run_home(root, users, workers)
                    shutil.rmtree(home, ignore_errors=True)
                    for phase in CLUSTER_PHASES:
                        count = train_shards if phase == "training-set" else shards
                        row = measure(phase, args, home, world, users, count, workers, api_url)
                        print_row(row)
                        rows.append(row)
                if users == max(sizes) and args.train_sample_users < users:
                    workers = max(args.workers)
                    home = run_home(root, users, workers)
                    row = measure(
                        "training-set-all", args, home, world, users, train_shards, workers, api_url
                    )
                    print_row(row)
                    rows.append(row)
                if users == min(sizes) and not args.no_redis and redis_up():
                    home = run_home(root, users, args.workers[0])
                    row = measure("redis-online", args, home, world, users, shards, 0, api_url)
                    print_row(row)
                    rows.append(row)
                if not args.keep:
                    for workers in runners:
                        shutil.rmtree(run_home(root, users, workers), ignore_errors=True)
        results = {"worlds": worlds, "rows": rows}
        (root / "scale-results.json").write_text(json.dumps(results, indent=1, default=str))
        summarize(rows, sizes, args)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
