"""The serving read path keeps answering when the online store cannot be read."""

from datetime import timedelta

import pytest

from feature_repo.context_features import CONTEXT_FEATURES
from feature_repo.feature_services import tip_scorer_v1
from feature_repo.profile_features import PROFILE_FEATURES
from service.api.request import RequestContext, Task
from service.scoring.feature_store import apply_definitions, open_store
from service.scoring.online_features import OnlineFeatureReader
from service.settings import Settings
from tests.conftest import WORLD_END_TS, require_server

CONTEXT = RequestContext(
    timestamp=WORLD_END_TS,
    timezone="Europe/Berlin",
    tasks=[Task(id="1", title="x", priority=1, due=WORLD_END_TS - timedelta(hours=1))],
)


def test_unreadable_online_store_degrades_to_fallbacks(tmp_path):
    healthy = open_store(Settings(home=tmp_path / "healthy"))
    apply_definitions(healthy)
    broken_settings = Settings(home=tmp_path / "broken")
    apply_definitions(open_store(broken_settings))
    # The online database turns into something SQLite cannot open (a lost disk, say).
    (broken_settings.data_dir / "online_store.db").unlink()
    (broken_settings.data_dir / "online_store.db").mkdir()
    broken = open_store(broken_settings)

    read = OnlineFeatureReader(broken, tip_scorer_v1.name).read("u1", CONTEXT, WORLD_END_TS)
    assert read.degraded
    assert read.fallbacks == {f.name: "store_unavailable" for f in PROFILE_FEATURES}
    assert read.profile == {f.name: f.fallback for f in PROFILE_FEATURES}
    # Context features still come from the request, computed by the view's own function.
    expected = OnlineFeatureReader(healthy, tip_scorer_v1.name).read("u1", CONTEXT, WORLD_END_TS)
    assert not expected.degraded
    assert read.context == expected.context
    assert read.context["overdue_task_count"] == 1 and read.context["hour_of_day"] == 1
    assert list(read.context) == [f.name for f in CONTEXT_FEATURES]


def test_a_dead_redis_degrades_within_the_budget_and_the_breaker_skips_it(tmp_path):
    import time

    home = tmp_path / "home"
    apply_definitions(open_store(Settings(home=home)))
    # Same registry, but the online store is a Redis nobody listens on: redis-py would retry
    # with backoff for seconds.
    dead = open_store(Settings(home=home, online_store="redis", redis_url="127.0.0.1:1"))
    reader = OnlineFeatureReader(dead, tip_scorer_v1.name, cooldown=60, budget=0.05)
    started = time.perf_counter()
    first = reader.read("u1", CONTEXT, WORLD_END_TS)
    second = reader.read("u1", CONTEXT, WORLD_END_TS)
    elapsed = time.perf_counter() - started
    assert first.degraded and second.degraded
    assert elapsed < 1.0, f"two degraded reads took {elapsed:.2f}s"
    assert second.fallbacks == {f.name: "store_unavailable" for f in PROFILE_FEATURES}


def test_a_read_that_fails_for_its_own_reasons_degrades_only_itself(tmp_path):
    home = Settings(home=tmp_path / "home")
    apply_definitions(open_store(home))
    reader = OnlineFeatureReader(open_store(home), tip_scorer_v1.name, cooldown=60)
    # Feast raises TypeError on an entity key that is not a string: not the store's failure.
    odd = reader.read(None, CONTEXT, WORLD_END_TS)
    assert odd.store_failure == "error" and odd.degraded
    assert not reader.breaker.is_open
    after = reader.read("u1", CONTEXT, WORLD_END_TS)
    assert not after.degraded and after.fallbacks == {f.name: "missing" for f in PROFILE_FEATURES}


@pytest.mark.integration
def test_after_the_warm_up_the_first_redis_read_meets_the_request_budget(tmp_path):
    require_server("Redis", "127.0.0.1", 6379)
    home = tmp_path / "home"
    apply_definitions(open_store(Settings(home=home)))
    store = open_store(Settings(home=home, online_store="redis", redis_url="127.0.0.1:6379,db=13"))
    # The first read opens the connection and warms Feast's caches: slower than the 50 ms a
    # request gets, so a worker that skipped the warm-up answered its first requests degraded.
    reader = OnlineFeatureReader(store, tip_scorer_v1.name, budget=0.05)
    assert not reader.warm_up(CONTEXT, WORLD_END_TS).degraded
    assert not reader.read("u1", CONTEXT, WORLD_END_TS).degraded
