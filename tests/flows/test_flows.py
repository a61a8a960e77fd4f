"""simulate -> features -> online read, as Prefect flows, on SQLite and on the real Redis."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from feature_repo.cohort_features import COHORT_FEATURES, COHORT_KEY
from feature_repo.freshness import resolve_profiles
from feature_repo.profile_features import PROFILE_AS_OF, PROFILE_FEATURES
from flows.features import FeaturesParams, features
from flows.featurestore.cohort_table import read_cohorts
from flows.featurestore.offline_table import partition_days, read_range
from flows.featurestore.show_online import OnlineShowParams, latest_contexts, read_online
from flows.simulate import SimulateParams, WorldExistsError, simulate
from flows.simulation.world import World
from service.events.lake import SCHEMAS, EventLake, open_lake
from service.events.models import Feedback, Impression
from service.settings import Settings
from tests.conftest import WORLD_END, WORLD_END_TS, require_server

pytestmark = pytest.mark.usefixtures("prefect_server")

REDIS_DB = 13
READ_AT = WORLD_END_TS + timedelta(hours=3)


@pytest.fixture(params=["sqlite", "redis"])
def store_settings(request, tmp_path) -> Settings:
    if request.param == "sqlite":
        return Settings(home=tmp_path / "home")
    require_server("Redis", "127.0.0.1", 6379)
    redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()
    return Settings(
        home=tmp_path / "home", online_store="redis", redis_url=f"127.0.0.1:6379,db={REDIS_DB}"
    )


def expected_online(settings: Settings, user_ids: list[str]) -> dict[str, dict]:
    """The latest offline row per user, through the same TTL/fallback rule."""
    rows = read_range(settings, WORLD_END_TS - timedelta(days=30), READ_AT)
    latest = rows.sort_values("event_timestamp").drop_duplicates("user_id", keep="last")
    latest = latest.set_index("user_id").reindex(user_ids)
    values, _ = resolve_profiles(
        {f.name: latest[f.name] for f in PROFILE_FEATURES},
        latest[PROFILE_AS_OF],
        [READ_AT] * len(user_ids),
    )
    return {u: {name: v[i].item() for name, v in values.items()} for i, u in enumerate(user_ids)}


def online(settings: Settings, user_ids: list[str]) -> dict[str, dict]:
    """The profile part of what serving reads (the cohort's counts are checked apart)."""
    reads = read_online(settings, OnlineShowParams(user_ids=user_ids, at=READ_AT)).reads
    return {
        u: {f.name: read.profile[f.name] for f in PROFILE_FEATURES} for u, read in reads.items()
    }


def check_cohort_online(settings: Settings, user_id: str):
    """Serving's cohort counts for `user_id` (keyed by the zone of their last logged request)
    are the cohort table's latest row for that zone."""
    [read] = read_online(settings, OnlineShowParams(user_ids=[user_id], at=READ_AT)).reads.values()
    zone = latest_contexts(open_lake(settings), {user_id})[user_id].timezone
    rows = read_cohorts(settings, WORLD_END_TS - timedelta(days=30), READ_AT)
    latest = rows[rows[COHORT_KEY] == zone].sort_values("event_timestamp").iloc[-1]
    assert latest["event_timestamp"] == pd.Timestamp(WORLD_END, tz="UTC")
    assert {f.name: read.profile[f.name] for f in COHORT_FEATURES} == {
        f.name: int(latest[f.name]) for f in COHORT_FEATURES
    }
    assert not any(f.name in read.fallbacks for f in COHORT_FEATURES)


def test_events_to_online_store_end_to_end(store_settings):
    settings = store_settings
    sim = simulate(SimulateParams(users=24, days=12, seed=9, end=WORLD_END), settings)
    assert sim.events > 1000

    report = features(FeaturesParams(as_of=READ_AT), settings)
    assert report.profiles.users == 24
    assert report.materialized.users == 24
    assert partition_days(settings)[-1] == WORLD_END

    users = ["u000000", "u000007", "u000023", "nobody"]
    served = online(settings, users)
    assert served == expected_online(settings, users)
    assert served["nobody"] == {f.name: f.fallback for f in PROFILE_FEATURES}
    check_cohort_online(settings, "u000007")

    # A rerun changes nothing.
    tables = read_range(settings, WORLD_END_TS - timedelta(days=30), READ_AT)
    again = features(FeaturesParams(as_of=READ_AT), settings)
    assert again.profiles.mode == "incremental"
    assert again.profiles.days_computed[0] == WORLD_END - timedelta(days=2)
    pd.testing.assert_frame_equal(
        read_range(settings, WORLD_END_TS - timedelta(days=30), READ_AT), tables
    )
    assert online(settings, users) == served

    # A late event inside the overlap window reaches the online store on the next run.
    late_at = WORLD_END_TS - timedelta(hours=10)
    context = {"timestamp": late_at, "timezone": "UTC", "tasks": []}
    open_lake(settings).append(
        [
            Impression(
                event_id="late-1",
                user_id="u000007",
                timestamp=late_at,
                tip_id="late-tip",
                category="focus",
                prompt_version="v1",
                context=context,
            ),
            Feedback(
                event_id="late-2",
                user_id="u000007",
                timestamp=late_at + timedelta(minutes=2),
                tip_id="late-tip",
                reaction="accepted",
                prompt_version="v1",
            ),
        ]
    )
    features(FeaturesParams(as_of=READ_AT), settings)
    updated = online(settings, users)
    assert updated["u000007"]["tips_shown_7d"] == served["u000007"]["tips_shown_7d"] + 1
    assert updated["u000000"] == served["u000000"]
    assert updated == expected_online(settings, users)


def test_simulate_resumes_after_a_crash_without_duplicates(tmp_path, monkeypatch):
    settings = Settings(home=tmp_path / "home")
    params = SimulateParams(users=150, days=3, seed=4, end=WORLD_END)
    calls = {"n": 0}
    original = EventLake.append

    def crash_on_second_batch(self, events):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk vanished")
        return original(self, events)

    monkeypatch.setattr(EventLake, "append", crash_on_second_batch)
    with pytest.raises(OSError, match="disk vanished"):
        simulate(params, settings)
    monkeypatch.setattr(EventLake, "append", original)

    report = simulate(params, settings)
    assert report.resumed_at_user == 100
    stored = [r["event_id"] for r in open_lake(settings).records()]
    world = World(users=150, days=3, seed=4, end=WORLD_END_TS)
    assert sorted(stored) == sorted(e.event_id for e in world.events())


def test_simulate_refuses_to_mix_worlds_and_writes_nothing(tmp_path):
    settings = Settings(home=tmp_path / "home")
    simulate(SimulateParams(users=5, days=2, seed=1, end=WORLD_END), settings)
    before = sorted(p.stat().st_size for p in settings.events_dir.rglob("*.parquet"))
    with pytest.raises(WorldExistsError, match="--reset"):
        simulate(SimulateParams(users=5, days=2, seed=2, end=WORLD_END), settings)
    assert sorted(p.stat().st_size for p in settings.events_dir.rglob("*.parquet")) == before
    fresh = simulate(SimulateParams(users=5, days=2, seed=2, end=WORLD_END, reset=True), settings)
    assert fresh.resumed_at_user == 0


# What a lake can hold that no reader should take: rows a writer without the input rules
# stored (a far-dated /feedback and decision, a time before datetime's UTC start), a file
# that is not Parquet, a Parquet file cut short (a copy that stopped half way), and a file of
# another schema. Each is skipped and counted, and every flow that reads the lake still runs.
FAR = {
    "feedback": [
        {"event_id": "far-future", "timestamp": datetime(2300, 1, 1, tzinfo=UTC)},
        {"event_id": "far-past", "timestamp": datetime(1, 1, 2, tzinfo=UTC)},
    ],
    "decision": [{"event_id": "far-decision", "timestamp": datetime(2300, 1, 1, tzinfo=UTC)}],
}


def poison(lake: EventLake) -> None:
    day = WORLD_END - timedelta(days=2)
    template = {
        "feedback": {"user_id": "u000001", "tip_id": "t", "reaction": "accepted"},
        "decision": {"user_id": "u000001", "request_id": "r", "tip_id": "t", "arm": "v1"},
    }
    for kind, rows in FAR.items():
        full = [template[kind] | {"type": kind} | row for row in rows]
        table = pa.Table.from_pylist(full, schema=SCHEMAS[kind])
        lake.write_file(kind, rows[0]["timestamp"].date(), table)
    sample = lake.day_files("task_created", day)[0]
    directory = Path(sample).parent
    (directory / "0-not-parquet.parquet").write_bytes(b"not parquet at all")
    data = Path(sample).read_bytes()
    (directory / "1-cut-short.parquet").write_bytes(data[: len(data) // 2])
    pq.write_table(pa.table({"event_id": ["x"]}), directory / "2-other-schema.parquet")


def test_a_poisoned_lake_is_read_around_by_every_flow(tmp_path, caplog):
    from flows.bandit_update import bandit_update
    from flows.experiments.report import experiment_report
    from flows.featurestore.event_frames import load_event_frames
    from flows.modeling.training_set import labelled_impressions

    settings = Settings(home=tmp_path / "home")
    simulate(SimulateParams(users=12, days=8, seed=3, end=WORLD_END), settings)
    poison(open_lake(settings, writer_id="legacy-writer"))

    lake = open_lake(settings)
    frames = load_event_frames(lake)
    assert lake.skipped == {"out_of_range": 2, "unreadable": 3}
    assert frames.feedback["timestamp"].dt.year.max() == WORLD_END.year
    assert "skipped" in caplog.text

    assert features(FeaturesParams(as_of=READ_AT), settings).profiles.users == 12
    assert not labelled_impressions(open_lake(settings), READ_AT).empty
    assert bandit_update(settings).experiments
    assert experiment_report(settings, as_of=READ_AT).experiments


def test_windowed_readers_never_open_a_partition_outside_their_window(tmp_path):
    from flows.experiments.rewards import decision_rewards
    from flows.featurestore.event_frames import load_event_frames
    from flows.modeling.training_set import labelled_impressions

    settings = Settings(home=tmp_path / "home")
    simulate(SimulateParams(users=12, days=8, seed=3, end=WORLD_END), settings)
    poison(open_lake(settings, writer_id="legacy-writer"))  # two days back, and far off
    since = WORLD_END - timedelta(days=1)

    lake = open_lake(settings)
    assert not labelled_impressions(lake, READ_AT, since).empty
    assert not decision_rewards(lake, READ_AT, since).empty
    assert not load_event_frames(lake, since, WORLD_END).feedback.empty
    assert lake.skipped == {}
    load_event_frames(lake, since - timedelta(days=1), WORLD_END)
    assert lake.skipped == {"unreadable": 3}


def test_training_reads_a_window_longer_than_its_validation():
    from flows.training import TrainParams

    assert TrainParams(history_days=30, validation_days=7).history_days == 30
    with pytest.raises(ValueError, match="history_days must be more than validation_days"):
        TrainParams(history_days=7, validation_days=7)
