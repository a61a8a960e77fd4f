"""Benchmark: users/min materialized into the online store, ours vs Feast, on the same data.

For each online store (embedded SQLite; Redis at 127.0.0.1:6379, db 12, flushed before every
run) and each user count, synthetic daily profiles (3 as-of days, SCHEMA columns, realistic
counts and Binomial rates with some nulls) are written once as Parquet day files and copied
into three fresh homes, one per method, each starting from an empty online store:

  ours       flows.featurestore.materialize.materialize_profiles(...) in-process (only that call is
  timed) feast-api  FeatureStore.materialize(start, end) in-process (only that call is timed)
  feast-cli  `feast materialize START END` as a subprocess after an untimed `feast apply` (wall time
  of the whole process, i.e. what an operator pays)

All three materialize the same window, [end - view TTL, end] with end = last as-of day + 1h.
After each run a few users are read back through `get_online_features` and compared with
their latest row, and the number of stored entities is checked. Shared machines are noisy,
so the headline is the ratio of throughputs measured in the same run.

    .venv/bin/python -m perf.materialize [--users 10000 100000] [--stores sqlite redis] [--keep]
"""

import argparse
import contextlib
import gc
import io
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import redis
from feast import FeatureStore
from feast.infra.online_stores.helpers import compute_table_id

from feature_repo.feature_views import user_profile
from feature_repo.profile_features import PROFILE_AS_OF, PROFILE_FEATURES
from feature_repo.profile_transforms import TIMESTAMP
from flows.featurestore.materialize import materialize_profiles
from flows.featurestore.offline_table import SCHEMA, offline_reads, write_partitions
from service.scoring.feature_store import CONFIG_FILES, apply_definitions, open_store
from service.settings import ENV_VARS, FEATURE_REPO_DIR, Settings

REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 12
REDIS_URL = f"{REDIS_HOST}:{REDIS_PORT},db={REDIS_DB}"
FEAST_CLI = Path(sys.executable).with_name("feast")

LAST_DAY = date(2026, 11, 20)
AS_OF_DAYS = [LAST_DAY - timedelta(days=d) for d in (2, 1, 0)]
END = datetime.combine(LAST_DAY, datetime.min.time(), UTC) + timedelta(hours=1)
START = END - user_profile.ttl  # what our first (no previous interval) run uses
CHUNK_SIZE = 5000
OVERLAP = timedelta(days=2)
CHECKED = ("tips_shown_7d", "preferred_hour")
SAMPLE = 10

GOAL_USERS_PER_MIN = 100_000
GOAL_VS_CLI = 3.0
METHODS = ("ours", "feast-api", "feast-cli")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


# --- data ---------------------------------------------------------------------------------


def make_profiles(users: int, seed: int = 7) -> pd.DataFrame:
    """Daily profile rows for `users` users on each of AS_OF_DAYS, columns exactly as SCHEMA.

    Each user has a latent activity level and acceptance propensity; counts are Poisson around
    them, rates are Binomial(n, p)/n with small n (null when n == 0), as the daily flow makes.
    """
    rng = np.random.default_rng(seed)
    ids = np.array([f"u{i:07d}" for i in range(users)])
    activity = rng.gamma(2.0, 0.75, users)  # tasks per day
    accept = rng.beta(2.0, 6.0, users)  # tip acceptance propensity
    completes = rng.beta(5.0, 3.0, users)  # task completion propensity
    tenure0 = rng.integers(0, 720, users)
    hour = rng.integers(6, 23, users)
    frames = []
    for offset, day in enumerate(AS_OF_DAYS):
        stamp = pd.Timestamp(day, tz="UTC")
        opened = rng.poisson(activity * 7)
        done = rng.binomial(opened, completes)
        shown = rng.poisson(np.minimum(activity, 3.0) * 7)
        shown28 = shown * 4 + rng.poisson(2, users)
        active28 = rng.binomial(28, np.minimum(activity / 3, 0.95))
        ints = {
            "tasks_completed_7d": done,
            "open_tasks_eod": rng.poisson(activity * 2),
            "overdue_tasks_eod": rng.poisson(activity * 0.3),
            "preferred_hour": np.where(active28 > 2, (hour + rng.integers(-1, 2, users)) % 24, -1),
            "tips_shown_7d": shown,
            "streak_days": np.minimum(rng.geometric(0.3, users) - 1, active28),
            "active_days_28d": active28,
            "tenure_days": tenure0 + offset,
        }
        rates = {"completion_rate_7d": (opened, done)}
        for f in PROFILE_FEATURES:
            if f.dtype == "float64" and f.name not in rates:
                n = rng.binomial(shown28, 0.25) if "_28d" in f.name else shown28
                n = np.minimum(n, 12)  # few shown per category: rates repeat, some undefined
                rates[f.name] = (n, rng.binomial(n, accept))
        frame = pd.DataFrame(
            {"user_id": ids, TIMESTAMP: stamp, PROFILE_AS_OF: stamp}, index=range(users)
        )
        for f in PROFILE_FEATURES:
            if f.dtype == "int64":
                column = pd.array(ints[f.name], dtype="Int64")
                if f.name == "preferred_hour":
                    column[column == -1] = pd.NA  # unknown hour is stored as null
                frame[f.name] = column
            else:
                n, k = rates[f.name]
                with np.errstate(divide="ignore", invalid="ignore"):
                    frame[f.name] = np.where(n > 0, k / np.maximum(n, 1), np.nan)
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True).sort_values([TIMESTAMP, "user_id"])
    assert list(out.columns) == SCHEMA.names
    return out.reset_index(drop=True)


def expected_values(profiles: pd.DataFrame, seed: int = 11) -> dict[str, dict[str, object]]:
    """Latest CHECKED values of a few users: ones whose value changed on the last day, a null."""
    stamp = pd.Timestamp(AS_OF_DAYS[-1], tz="UTC")
    latest = profiles[profiles[TIMESTAMP] == stamp].set_index("user_id")
    before = profiles[profiles[TIMESTAMP] == stamp - pd.Timedelta(days=1)].set_index("user_id")
    changed = latest.index[(latest.tips_shown_7d != before.tips_shown_7d).fillna(False)]
    rng = np.random.default_rng(seed)
    picked = [latest.index[0], latest.index[-1], *rng.choice(changed, SAMPLE, replace=False)]
    nulls = latest.index[latest.preferred_hour.isna()]
    if len(nulls):
        picked.append(nulls[0])
    return {
        uid: {name: None if pd.isna(v := latest.at[uid, name]) else int(v) for name in CHECKED}
        for uid in dict.fromkeys(picked)
    }


# --- stores and checks --------------------------------------------------------------------


def settings_for(home: Path, kind: str) -> Settings:
    if kind == "redis":
        return Settings(home=home, online_store="redis", redis_url=REDIS_URL)
    return Settings(home=home)


def redis_client() -> redis.Redis:
    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)


def redis_reachable() -> str | None:
    """None when Redis answers, else why not."""
    try:
        socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=1).close()
        redis_client().ping()
    except (OSError, redis.RedisError) as exc:
        return f"Redis is not reachable at {REDIS_HOST}:{REDIS_PORT} ({exc})"
    return None


def stored_entities(store: FeatureStore, settings: Settings) -> int:
    if settings.online_store == "redis":
        return int(redis_client().dbsize())  # one hash per entity key
    config = store.config
    table = compute_table_id(
        config.project, user_profile, config.registry.enable_online_feature_view_versioning
    )
    path = settings.home / config.online_store.path
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(f'SELECT COUNT(DISTINCT entity_key) FROM "{table}"').fetchone()[0]


def verify(store: FeatureStore, settings: Settings, expected: dict, users: int) -> None:
    """Raise unless every user was stored and sampled users read back their latest values."""
    got = store.get_online_features(
        features=[f"{user_profile.name}:{name}" for name in CHECKED],
        entity_rows=[{"user_id": uid} for uid in expected],
    ).to_dict()
    for i, (uid, want) in enumerate(expected.items()):
        have = {name: got[name][i] for name in CHECKED}
        if have != want:
            raise AssertionError(f"{settings.home}: {uid} reads {have}, latest row has {want}")
    if (count := stored_entities(store, settings)) != users:
        raise AssertionError(f"{settings.home}: {count} entities stored, expected {users}")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Swallow Feast's progress bars and prints (the CLI's go to a pipe, too)."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def timed(call: Callable[[], object]) -> float:
    gc.collect()
    begin = time.perf_counter()
    call()
    return time.perf_counter() - begin


# --- the three methods --------------------------------------------------------------------


def run_ours(settings: Settings, users: int) -> tuple[float, FeatureStore]:
    store = open_store(settings)
    apply_definitions(store)
    reports = []
    seconds = timed(
        lambda: reports.append(
            materialize_profiles(store, settings, end=END, overlap=OVERLAP, chunk_size=CHUNK_SIZE)
        )
    )
    report = reports[0]
    if (report.start, report.users) != (START, users):
        raise AssertionError(f"ours materialized {report}, expected {users} users from {START}")
    return seconds, store


def run_feast_api(settings: Settings, users: int) -> tuple[float, FeatureStore]:
    store = open_store(settings)
    apply_definitions(store)
    with offline_reads(settings), quiet():
        seconds = timed(lambda: store.materialize(start_date=START, end_date=END))
    return seconds, store


def feast(args: list[str], home: Path, env: dict[str, str]) -> None:
    done = subprocess.run(
        [str(FEAST_CLI), *args], cwd=home, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(f"feast {' '.join(args)} failed in {home}:\n{done.stderr[-3000:]}")


def run_feast_cli(settings: Settings, users: int) -> tuple[float, FeatureStore]:
    home = settings.home
    shutil.copy(FEATURE_REPO_DIR / CONFIG_FILES[settings.online_store], home / "feature_store.yaml")
    for name in ("repo.py", ".feastignore"):
        shutil.copy(FEATURE_REPO_DIR / name, home / name)
    env = os.environ | {ENV_VARS["redis_url"]: settings.redis_url}
    feast(["apply"], home, env)
    seconds = timed(lambda: feast(["materialize", START.isoformat(), END.isoformat()], home, env))
    return seconds, open_store(settings)


RUNNERS: dict[str, Callable[[Settings, int], tuple[float, FeatureStore]]] = {
    "ours": run_ours,
    "feast-api": run_feast_api,
    "feast-cli": run_feast_cli,
}


# --- driver -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    store: str
    users: int
    method: str
    seconds: float

    @property
    def per_min(self) -> float:
        return self.users / self.seconds * 60


def bench(kind: str, users: int, root: Path) -> list[Result]:
    profiles = make_profiles(users)
    expected = expected_values(profiles)
    source = settings_for(root / f"{kind}-{users}-data", kind)
    write_partitions(source, profiles)
    results = []
    for method in METHODS:
        settings = settings_for(root / f"{kind}-{users}-{method}", kind)
        shutil.copytree(source.offline_location, settings.offline_location)  # the same files
        if kind == "redis":
            redis_client().flushdb()
        seconds, store = RUNNERS[method](settings, users)
        verify(store, settings, expected, users)
        result = Result(kind, users, method, seconds)
        print(
            f"{kind:6} {users:>7,} users  {method:9}  {seconds:8.2f} s  "
            f"{result.per_min:>11,.0f} users/min",
            flush=True,
        )
        results.append(result)
        del store
    return results


def summarize(results: list[Result]) -> bool:
    by = {(r.store, r.users, r.method): r for r in results}
    print("\nratios (throughput of ours / theirs, same run, same data):")
    cases = sorted({(r.store, r.users) for r in results}, key=lambda c: (c[0] != "sqlite", c))
    for kind, users in cases:
        ours, api, cli = (by[kind, users, m] for m in METHODS)
        print(
            f"{kind:6} {users:>7,} users  ours/CLI {cli.seconds / ours.seconds:6.1f}x  "
            f"ours/Feast-API {api.seconds / ours.seconds:6.1f}x"
        )
    print(f"\ngoal: ours >= {GOAL_USERS_PER_MIN:,} users/min and >= {GOAL_VS_CLI:g}x the CLI")
    met = True
    for kind, users in cases:
        ours, cli = by[kind, users, "ours"], by[kind, users, "feast-cli"]
        ok = ours.per_min >= GOAL_USERS_PER_MIN and cli.seconds / ours.seconds >= GOAL_VS_CLI
        met &= ok
        print(
            f"{kind:6} {users:>7,} users  {ours.per_min:>11,.0f} users/min  "
            f"{cli.seconds / ours.seconds:6.1f}x CLI  {'MET' if ok else 'NOT MET'}"
        )
    print(f"goal {'met' if met else 'NOT met'} in every case")
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument(
        "--stores", nargs="+", choices=["sqlite", "redis"], default=["sqlite", "redis"]
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary homes")
    args = parser.parse_args()

    stores = list(dict.fromkeys(args.stores))
    if "redis" in stores and (problem := redis_reachable()):
        if IN_CI:
            print(f"error: {problem}; CI must have it running", file=sys.stderr)
            return 2
        print(f"skipping Redis: {problem}")
        stores.remove("redis")
    if not stores:
        return 0

    root = Path(tempfile.mkdtemp(prefix="tipml-bench-"))
    print(f"window [{START.isoformat()}, {END.isoformat()}], chunk_size {CHUNK_SIZE}, homes {root}")
    started = time.perf_counter()
    try:
        results = [r for kind in stores for users in args.users for r in bench(kind, users, root)]
    finally:
        if "redis" in stores and not args.keep:
            with contextlib.suppress(redis.RedisError):
                redis_client().flushdb()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    summarize(results)
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
