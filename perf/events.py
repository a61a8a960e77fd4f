"""Benchmark: features from the event lake, a full run vs the next day's, and vs JSON lines.

One simulated world (--users, --days, --seed; last UTC day AS_OF, so the world ends where the
day after AS_OF starts) is built once with `tipml simulate` into a lake, and copied once, event
by event, into a JSON-lines event log (the format before the lake) in a home of its own. Then
every measured phase runs in a process of its own (`python -m perf.events --phase NAME`), so
that its peak RSS (getrusage ru_maxrss) is its own; wall time is taken in that process around
the work only (imports and setup excluded), and both come back as one JSON line:

  jsonl-full            the old reader, as it was before the lake (git e6342bf,
                        flows/featurestore/event_frames.py): every JSON line of the log through
                        EventLog.records() (service/events/log.py, unchanged since: parsed,
                        validated, deduplicated by a set of ids),
                        into lists of dicts, into pandas frames shaped as today's EventFrames;
                        then compute_daily_profiles() for every as-of day of the world up to
                        AS_OF (the first day after the first event .. AS_OF).
  lake-full             the same, read by load_event_frames(open_lake(...)): the lake's reader.
                        Same days; the two must make the same profiles (row count and a hash
                        of every value).
  features-full         update_profiles(full=True) as of AS_OF 00:00 UTC: what the features
                        flow computes and writes (the offline profile table, and the state
                        the next day's run starts from), without Prefect and without
                        materializing, in a fresh home reading the world's lake.
  features-incremental  then update_profiles() as of AS_OF + 1 day in that home: the next
                        day's run, one new as-of day (the world's last day of events) plus
                        overlap_days=2 before it.
  ingest                perf/ingest.py's end-to-end measurement (publish -> `tipml consume`
                        -> durable lake files) of --ingest-events events in batches of 500,
                        on NATS JetStream at TIPML_NATS_URL (default 127.0.0.1:4222).

Printed: the load average first, the world's size (events, files and bytes of the lake, bytes
of the JSON lines), a table of wall seconds, peak RSS, RSS when the clock started (imports
done) and rows per phase, then the issue's goals as MET / NOT MET: the incremental run takes
<= 20% of the full run's time and <= 50% of its peak RSS; the lake's full run is >= 3x faster
than the JSON-lines one; ingest keeps >= 5,000 events/s. Nothing asserts on timings: the
machine is shared and noisy, so compare ratios measured in the same run.

Building the world takes minutes; --keep DIR keeps it (and reuses one built there with the
same flags) instead of a temporary directory deleted at the end.

    .venv/bin/python -m perf.events [--users 5000] [--days 60] [--seed 7] [--keep DIR]
                                    [--skip-ingest] [--ingest-events 50000]
"""

import argparse
import gc
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import fields
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from feature_repo.profile_transforms import EventFrames, compute_daily_profiles
from flows.featurestore.event_frames import load_event_frames
from flows.featurestore.profile_update import update_profiles
from perf.ingest import GOAL_EVENTS_PER_S, consumer_rate
from service.events.lake import EventLake, open_lake
from service.events.log import EventLog
from service.settings import Settings

REPO = Path(__file__).resolve().parents[1]
TIPML = Path(sys.executable).with_name("tipml")

AS_OF = date(2026, 11, 20)  # the full run's as-of day, and the world's last day of events
NEXT_DAY = AS_OF + timedelta(days=1)  # the incremental run's as-of day
OVERLAP_DAYS = 2
INGEST_BATCH = 500

GOAL_INCREMENTAL_TIME = 0.20  # of a full run's wall time
GOAL_INCREMENTAL_RSS = 0.50  # of a full run's peak RSS
GOAL_VS_JSONL = 3.0  # lake-full faster than jsonl-full
MEMORY_PHASES = ("jsonl-full", "lake-full", "features-full", "features-incremental")


# --- the homes ------------------------------------------------------------------------------


def world_settings(root: Path) -> Settings:
    """The simulator's home: the world's lake."""
    return Settings(home=root / "world")


def jsonl_settings(root: Path) -> Settings:
    """The same events as JSON lines, where the log kept them before the lake."""
    return Settings(home=root / "jsonl")


def features_settings(root: Path) -> Settings:
    """A fresh home for the features runs, reading the world's lake."""
    return Settings(home=root / "features", events_url=world_settings(root).events_location)


def midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC)


# --- building the world once ------------------------------------------------------------------


def build_world(root: Path, users: int, days: int, seed: int) -> None:
    """Simulate the world into root/world and copy it to JSON lines, unless already there."""
    world = world_settings(root)
    wanted = {"users": users, "days": days, "seed": seed, "end": NEXT_DAY.isoformat()}
    manifest_path = world.world_dir / "world.json"
    copied = jsonl_settings(root).home / "copied.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    copy = json.loads(copied.read_text()) if copied.exists() else {}
    if manifest == {**wanted, "users_done": users} and {k: copy.get(k) for k in wanted} == wanted:
        print(f"reusing the world in {root}", flush=True)
        return
    same_world = {k: manifest.get(k) for k in wanted} == wanted
    started = time.perf_counter()
    print(f"simulating {users} users x {days} days into {world.home} ...", flush=True)
    command = [str(TIPML), "--home", str(world.home), "simulate", "--users", str(users)]
    command += ["--days", str(days), "--seed", str(seed), "--end", NEXT_DAY.isoformat()]
    done = subprocess.run(
        [*command, *([] if same_world else ["--reset"])],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"tipml simulate failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    print(f"copying it to JSON lines in {jsonl_settings(root).home} ...", flush=True)
    shutil.rmtree(jsonl_settings(root).home, ignore_errors=True)
    count = copy_to_jsonl(open_lake(world), EventLog(jsonl_settings(root).events_dir, "perf"))
    copied.write_text(json.dumps({**wanted, "events": count}))
    print(f"built in {time.perf_counter() - started:.0f} s", flush=True)


def copy_to_jsonl(lake: EventLake, log: EventLog) -> int:
    """Every event of the lake appended to the log, one day's events per batch."""
    return sum(log.append(lake.events(start=day, end=day)) for day in lake.days())


def world_size(root: Path) -> str:
    lake = open_lake(world_settings(root))
    paths = lake.files()
    events = sum(pq.read_metadata(p).num_rows for p in paths)
    lake_bytes = sum(os.path.getsize(p) for p in paths)
    jsonl = jsonl_settings(root).events_dir.glob("day=*/*.jsonl")
    jsonl_bytes = sum(p.stat().st_size for p in jsonl)
    return (
        f"world: {events:,} events; lake {len(paths):,} files, {lake_bytes / 2**20:,.0f} MiB; "
        f"JSON lines {jsonl_bytes / 2**20:,.0f} MiB"
    )


# --- the old reader, the baseline ---------------------------------------------------------------


def _utc(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True, format="ISO8601")


def jsonl_event_frames(log: EventLog) -> EventFrames:
    """The reader before the lake (git e6342bf: flows/featurestore/event_frames.py), line for
    line, its frames then shaped as today's EventFrames: a `completed` column of first
    completions on tasks, or a `completions` frame of every completion."""
    created: list[dict] = []
    completions: list[tuple[str, str]] = []
    impressions: list[dict] = []
    feedback: list[dict] = []
    for record in log.records():
        kind = record["type"]
        if kind == "task_created":
            created.append(record)
        elif kind == "task_completed":
            completions.append((record["task_id"], record["timestamp"]))
        elif kind == "impression":
            impressions.append(
                {
                    "user_id": record["user_id"],
                    "tip_id": record["tip_id"],
                    "timestamp": record["timestamp"],
                    "category": record["category"],
                    "timezone": record["context"]["timezone"],
                }
            )
        elif kind == "feedback":
            feedback.append(
                {
                    "user_id": record["user_id"],
                    "tip_id": record["tip_id"],
                    "timestamp": record["timestamp"],
                    "reaction": record["reaction"],
                }
            )

    tasks = pd.DataFrame(
        created, columns=["user_id", "task_id", "timestamp", "due", "timezone"]
    ).rename(columns={"timestamp": "created"})
    tasks["created"] = _utc(tasks["created"])
    tasks["due"] = _utc(tasks["due"])
    imps = pd.DataFrame(
        impressions, columns=["user_id", "tip_id", "timestamp", "category", "timezone"]
    )
    imps["timestamp"] = _utc(imps["timestamp"])
    fb = pd.DataFrame(feedback, columns=["user_id", "tip_id", "timestamp", "reaction"])
    fb["timestamp"] = _utc(fb["timestamp"])

    frames = {"tasks": tasks, "impressions": imps, "feedback": fb}
    wanted = {f.name for f in fields(EventFrames)}
    if "completions" in wanted:
        done = pd.DataFrame(completions, columns=["task_id", "timestamp"])
        done["timestamp"] = _utc(done["timestamp"])
        frames["completions"] = done
    else:
        # A task completed twice (reopened, then done again) counts from its first completion.
        first: dict[str, str] = {}
        for task_id, stamp in completions:
            first.setdefault(task_id, stamp)
        tasks["completed"] = _utc(tasks["task_id"].map(first))
    if set(frames) != wanted:
        raise SystemExit(f"EventFrames now holds {sorted(wanted)}: update jsonl_event_frames")
    return EventFrames(**frames)


# --- the phases, each in a process of its own ---------------------------------------------------


def full_days(frames: EventFrames, last: date) -> list[date]:
    """As-of days from the day after the first event up to `last`: a full run's days."""
    stamps = pd.concat(
        [frames.tasks["created"], frames.impressions["timestamp"], frames.feedback["timestamp"]]
    )
    first = stamps.min().date() + timedelta(days=1)
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def profiles_from(read: Callable[[], EventFrames]) -> dict:
    started = time.perf_counter()
    frames = read()
    read_seconds = time.perf_counter() - started
    days = full_days(frames, AS_OF)
    profiles = compute_daily_profiles(frames, days)
    return {
        "rows": len(profiles),
        "digest": int(pd.util.hash_pandas_object(profiles, index=False).sum()),
        "note": f"{len(days)} days; read {read_seconds:.1f} s",
    }


def features_run(root: Path, as_of: date, full: bool) -> dict:
    update = update_profiles(
        features_settings(root), midnight(as_of), overlap_days=OVERLAP_DAYS, full=full
    )
    days = update.days_computed
    span = f"{min(days)} .. {max(days)}" if days else "none"
    return {
        "rows": update.rows_written,
        "mode": update.mode,
        "note": f"{update.mode}: {len(days)} days ({span})",
    }


def ingest_run(events: int) -> dict:
    rate, distinct = consumer_rate(events=events, batch=INGEST_BATCH)
    return {
        "rows": distinct,
        "seconds": events / rate,
        "events_per_s": rate,
        "note": f"{rate:,.0f} events/s (batch {INGEST_BATCH})",
    }


PHASES: dict[str, Callable[[Path, argparse.Namespace], dict]] = {
    "jsonl-full": lambda root, _: profiles_from(
        lambda: jsonl_event_frames(EventLog(jsonl_settings(root).events_dir))
    ),
    "lake-full": lambda root, _: profiles_from(
        lambda: load_event_frames(open_lake(world_settings(root)))
    ),
    "features-full": lambda root, _: features_run(root, AS_OF, full=True),
    "features-incremental": lambda root, _: features_run(root, NEXT_DAY, full=False),
    "ingest": lambda _, args: ingest_run(args.ingest_events),
}


def rss_mb() -> float:
    """This process's resident set now, MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_phase(name: str, root: Path, args: argparse.Namespace) -> None:
    """In the phase's own process: time the work, take the peak RSS, print one JSON line."""
    gc.collect()
    before = rss_mb()
    started = time.perf_counter()
    result = PHASES[name](root, args)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "start_mb": before, **result}))


def measure(name: str, root: Path, args: argparse.Namespace) -> dict | None:
    command = [sys.executable, "-m", "perf.events", "--phase", name, "--home", str(root)]
    command += ["--ingest-events", str(args.ingest_events)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        print(f"error: phase {name} failed:\n{done.stderr[-3000:]}", flush=True)
        return None
    result = json.loads(lines[-1])
    print(
        f"{name:<22}{result['seconds']:>9.2f}{result['peak_mb']:>10.0f}{result['start_mb']:>10.0f}"
        f"{result['rows']:>11,}  {result['note']}",
        flush=True,
    )
    return result


# --- the driver ---------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def summarize(results: dict[str, dict | None]) -> None:
    def ratio(goal: str, a: str, b: str, key: str, limit: float, at_most: bool) -> None:
        if not (results.get(a) and results.get(b)):
            print(f"goal: {goal}: NOT MEASURED")
            return
        value = results[a][key] / results[b][key]
        met = value <= limit if at_most else value >= limit
        print(f"goal: {goal}: {verdict(met)} ({value:.2f})")

    print()
    jsonl, lake = results.get("jsonl-full"), results.get("lake-full")
    if jsonl and lake:
        print(f"lake-full / jsonl-full peak RSS: {lake['peak_mb'] / jsonl['peak_mb']:.2f}")
        if (jsonl["rows"], jsonl["digest"]) != (lake["rows"], lake["digest"]):
            print(
                f"error: jsonl-full and lake-full made different profiles ({jsonl['rows']} "
                f"and {lake['rows']} rows)"
            )
        else:
            print(f"jsonl-full and lake-full made the same {lake['rows']:,} profile rows")
    full, step = results.get("features-full"), results.get("features-incremental")
    if full and lake and full["rows"] != lake["rows"]:
        print(f"error: features-full wrote {full['rows']} rows, lake-full made {lake['rows']}")
    for result, mode in ((full, "full"), (step, "incremental")):
        if result and result["mode"] != mode:
            print(f"error: a {mode} run reported mode {result['mode']!r}")
    ratio(
        f"full run >= {GOAL_VS_JSONL:g}x faster on the lake than on JSON lines "
        "(jsonl-full / lake-full time)",
        "jsonl-full",
        "lake-full",
        "seconds",
        GOAL_VS_JSONL,
        at_most=False,
    )
    for key, what, limit in (
        ("seconds", "time", GOAL_INCREMENTAL_TIME),
        ("peak_mb", "peak RSS", GOAL_INCREMENTAL_RSS),
    ):
        ratio(
            f"incremental run <= {limit:.0%} of a full run's {what} (incremental / full)",
            "features-incremental",
            "features-full",
            key,
            limit,
            at_most=True,
        )
    ingest = results.get("ingest")
    goal = f"ingest through the consumer into the lake >= {GOAL_EVENTS_PER_S:,} events/s"
    if "ingest" not in results:
        print(f"goal: {goal}: skipped (--skip-ingest)")
    elif ingest is None:
        print(f"goal: {goal}: NOT MEASURED")
    else:
        rate = ingest["events_per_s"]
        print(f"goal: {goal}: {verdict(rate >= GOAL_EVENTS_PER_S)} ({rate:,.0f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", type=Path, help="build the world here and keep it (or reuse it)")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--ingest-events", type=int, default=50_000)
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        run_phase(args.phase, args.home, args)
        return

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load average {load}", flush=True)
    root = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="tipml-bench-ev-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        build_world(root, args.users, args.days, args.seed)
        print(f"{args.users} users, {args.days} days to {AS_OF}; {world_size(root)}")
        print(f"full runs as of {AS_OF}, the incremental as of {NEXT_DAY}\n")
        print(f"{'phase':<22}{'wall s':>9}{'peak MiB':>10}{'start MiB':>10}{'rows':>11}  notes")
        results: dict[str, dict | None] = {}
        for name in MEMORY_PHASES:
            if name == "features-full":
                shutil.rmtree(features_settings(root).home, ignore_errors=True)
            results[name] = measure(name, root, args)
        if not args.skip_ingest:
            results["ingest"] = measure("ingest", root, args)
        summarize(results)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
