"""No train/serve skew: what training reads equals what serving reads, row for row.

For random (user, time, time zone) triples, the point-in-time training read
(get_historical_features on the FeatureService, then the shared TTL/fallback rule and
candidate function) must equal the serving read (online store after materializing up to that
time, through the serving reader). The FeatureService is tip_scorer_v2: the user's profile, the
cohort of the request's zone and the context; v1 reads a subset of the same views.
"""

import json
import math
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from feature_repo.candidate_features import candidate_features
from feature_repo.categories import TIP_CATEGORIES
from feature_repo.cohort_features import COHORT_AS_OF, COHORT_FEATURES, COHORT_KEY
from feature_repo.context_features import CONTEXT_FEATURES
from feature_repo.feature_services import tip_scorer_v2
from feature_repo.freshness import resolve_cohorts, resolve_profiles
from feature_repo.profile_features import PROFILE_AS_OF, PROFILE_FEATURES
from feature_repo.profile_transforms import DAY, compute_daily_profiles
from flows.featurestore.cohort_table import materialize_cohorts, update_cohorts
from flows.featurestore.event_frames import load_event_frames
from flows.featurestore.materialize import materialize_profiles
from flows.featurestore.offline_table import offline_reads, read_range, write_partitions
from flows.featurestore.profile_update import update_profiles
from flows.shards import WHOLE
from flows.simulation.world import World
from service.api.request import RequestContext, Task
from service.events.lake import open_lake
from service.scoring.feature_store import apply_definitions, open_store
from service.scoring.online_features import OnlineFeatureReader
from tests.conftest import WORLD_END_TS

PAIRS = 240
CANDIDATES = np.array([*TIP_CATEGORIES, "unheard-of"])
ZONES = ("UTC", "America/Los_Angeles", "Asia/Kolkata", "Australia/Sydney", "Europe/Berlin")


def random_context(rng: np.random.Generator, at: pd.Timestamp) -> RequestContext:
    tasks = []
    for i in range(int(rng.integers(0, 7))):
        due = None
        if rng.random() < 0.7:
            due = at + pd.Timedelta(hours=float(rng.uniform(-72, 72)))
        tasks.append(Task(id=f"t{i}", title="x", priority=int(rng.integers(1, 5)), due=due))
    return RequestContext(timestamp=at, timezone=str(rng.choice(ZONES)), tasks=tasks)


@pytest.fixture(scope="module")
def world_store(tmp_path_factory):
    """The world's offline table built as production builds it: one full run, then a daily
    run per day from the state the last one kept; it must equal a full recompute exactly."""
    from service.settings import Settings

    settings = Settings(home=tmp_path_factory.mktemp("parity"))
    world = World(users=60, days=21, seed=11, end=WORLD_END_TS)
    open_lake(settings).append(world.events())
    days = [(world.start + timedelta(days=i)).date() for i in range(1, 22)]
    noon = [pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=12) for day in days]
    update = update_profiles(settings, noon[13])
    assert update.mode == "full"
    update_cohorts(settings, update.days_computed, [WHOLE])
    for at in noon[14:]:
        update = update_profiles(settings, at)
        assert update.mode == "incremental"
        update_cohorts(settings, update.days_computed, [WHOLE])
    full = Settings(home=tmp_path_factory.mktemp("parity-full"))
    write_partitions(full, compute_daily_profiles(load_event_frames(open_lake(settings)), days))
    pd.testing.assert_frame_equal(
        read_range(settings, noon[0] - DAY, noon[-1]), read_range(full, noon[0] - DAY, noon[-1])
    )
    store = open_store(settings)
    apply_definitions(store)
    return settings, store, world


def test_training_read_equals_serving_read(world_store):
    settings, store, world = world_store
    rng = np.random.default_rng(2026)
    users = [u.user_id for u in world.users] + ["never-seen"]
    first = world.start + timedelta(hours=12)
    # Past the world's end too, so that values go stale and then beyond the view's TTL.
    span = (WORLD_END_TS + timedelta(days=16) - first).total_seconds()
    pairs = sorted(
        (first + timedelta(seconds=float(rng.uniform(0, span))), str(rng.choice(users)))
        for _ in range(PAIRS)
    )
    contexts = [random_context(rng, pd.Timestamp(at)) for at, _ in pairs]

    # Serving: materialize up to each time, then read as the service does.
    reader = OnlineFeatureReader(store, tip_scorer_v2.name)
    served = []
    for (at, user_id), context in zip(pairs, contexts, strict=True):
        materialize_profiles(store, settings, end=at, overlap=timedelta(days=2), chunk_size=25)
        materialize_cohorts(store, settings, world.start, at)
        served.append(reader.read(user_id, context, now=at))

    # Training: one point-in-time read of every pair.
    entity_df = pd.DataFrame(
        [
            {
                "user_id": user_id,
                COHORT_KEY: c.timezone,
                "event_timestamp": pd.Timestamp(at),
                **c.feast_request_data(),
            }
            for (at, user_id), c in zip(pairs, contexts, strict=True)
        ]
    )
    entity_df["row"] = range(len(entity_df))
    with offline_reads(settings):
        historical = store.get_historical_features(
            entity_df=entity_df, features=store.get_feature_service(tip_scorer_v2.name)
        ).to_df()
    historical = historical.sort_values("row", ignore_index=True)
    assert list(historical["row"]) == list(range(PAIRS)), "every entity row comes back once"
    trained, reasons = resolve_profiles(
        {f.name: historical[f.name] for f in PROFILE_FEATURES},
        historical[PROFILE_AS_OF],
        historical["event_timestamp"],
    )
    cohorts, cohort_reasons = resolve_cohorts(
        {f.name: historical[f.name] for f in COHORT_FEATURES},
        historical[COHORT_AS_OF],
        historical["event_timestamp"],
    )
    trained, reasons = {**trained, **cohorts}, {**reasons, **cohort_reasons}

    mismatches = []
    kinds = {"fresh": 0, "stale": 0, "missing": 0}
    cohort_kinds = {"fresh": 0, "stale": 0, "missing": 0}
    for i, read in enumerate(served):
        for f in (*PROFILE_FEATURES, *COHORT_FEATURES):
            a, b = trained[f.name][i].item(), read.profile[f.name]
            if not math.isclose(a, b, rel_tol=1e-12, abs_tol=0) or (
                bool(reasons[f.name][i]) != (f.name in read.fallbacks)
            ):
                mismatches.append((i, f.name, a, b))
        for f in CONTEXT_FEATURES:
            if int(historical[f.name][i]) != read.context[f.name]:
                mismatches.append((i, f.name, historical[f.name][i], read.context[f.name]))
        n = len(CANDIDATES)
        train_c = candidate_features(
            CANDIDATES,
            {name: np.repeat(v[i], n) for name, v in trained.items()},
            {f.name: np.repeat(int(historical[f.name][i]), n) for f in CONTEXT_FEATURES},
        )
        serve_c = candidate_features(
            CANDIDATES,
            {name: np.repeat(v, n) for name, v in read.profile.items()},
            {f.name: np.repeat(read.context[f.name], n) for f in CONTEXT_FEATURES},
        )
        assert "cohort_category_logit" in train_c
        for name in train_c:
            if not np.allclose(train_c[name], serve_c[name], rtol=1e-12, atol=0):
                mismatches.append((i, name, train_c[name], serve_c[name]))
        kinds[read.fallbacks.get("tips_shown_7d", "fresh")] += 1
        cohort_kinds[read.fallbacks.get("cohort_shown_28d", "fresh")] += 1

    print(
        json.dumps(
            {
                "pairs": PAIRS,
                "mismatches": len(mismatches),
                "tips_shown_7d": kinds,
                "cohort_shown_28d": cohort_kinds,
            }
        )
    )
    assert mismatches == []
    # The sample must exercise every path, or it proves little.
    assert all(count >= 10 for count in kinds.values()), kinds
    assert all(count >= 10 for count in cohort_kinds.values()), cohort_kinds
