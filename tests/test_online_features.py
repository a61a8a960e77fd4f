"""The serving read path keeps answering when the online store cannot be read."""

from datetime import timedelta

from feature_repo.context_features import CONTEXT_FEATURES
from feature_repo.feature_services import tip_scorer_v1
from feature_repo.profile_features import PROFILE_FEATURES
from service.context import RequestContext, Task
from service.feast_store import apply_definitions, open_store
from service.online_features import OnlineFeatureReader
from service.settings import Settings
from tests.conftest import WORLD_END_TS

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
