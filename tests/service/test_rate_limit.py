"""The /generate rate limit alone: the in-process buckets on a clock the test turns, and the
Redis ones against a real Redis (db REDIS_DB, keys under a prefix of the test's own). The
limit through `bentoml serve`, with two workers, is in tests/service/test_serve_access.py."""

import asyncio
import copy
import math
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from service.rate_limit import RATE_LIMIT, MemoryRateLimiter, RedisRateLimiter, open_rate_limiter
from service.settings import Settings
from tests.conftest import require_server
from tipml.serving import free_port

# Not used by other tests (they use 12-15); only keys under the test's prefix are deleted.
REDIS_DB = 10
REDIS_URL = f"127.0.0.1:6379,db={REDIS_DB}"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(per_minute: int = 2, burst: int = 2, **options) -> tuple[MemoryRateLimiter, Clock]:
    clock = Clock()
    return MemoryRateLimiter(per_minute, burst, clock=clock, **options), clock


def test_a_user_gets_the_burst_then_waits_for_the_refill():
    bucket, clock = limiter(per_minute=2, burst=2)
    assert [bucket.take("a").allowed for _ in range(3)] == [True, True, False]
    assert bucket.take("a").retry_after == 30  # one request every 30 s
    clock.now += 29.5
    assert bucket.take("a") == (False, 1, None)  # half a second, rounded up
    clock.now += 0.5
    assert bucket.take("a").allowed
    assert not bucket.take("a").allowed


def test_one_user_never_uses_another_users_requests():
    bucket, _ = limiter(per_minute=1, burst=1)
    assert bucket.take("a").allowed and not bucket.take("a").allowed
    assert bucket.take("b").allowed


def test_full_buckets_are_forgotten_and_the_rest_are_bounded():
    bucket, clock = limiter(per_minute=60, burst=2, max_users=3)
    for user in "abcde":
        bucket.take(user)
    assert len(bucket) == 3
    clock.now += 2  # 2 requests back at 1 a second: every bucket is full again
    bucket.take("f")
    assert len(bucket) == 1


requests = st.lists(
    st.tuples(st.floats(0, 40, allow_nan=False), st.sampled_from(["a", "b", "c"])), max_size=40
)


@given(per_minute=st.integers(1, 120), burst=st.integers(1, 5), requests=requests)
def test_users_are_independent_and_retry_after_is_enough(per_minute, burst, requests):
    shared, clock = limiter(per_minute, burst)
    alone = {user: limiter(per_minute, burst) for user in "abc"}
    for delay, user in requests:
        clock.now += delay
        own, own_clock = alone[user]
        own_clock.now = clock.now
        before = copy.deepcopy(shared, {id(clock): clock})
        verdict = shared.take(user)
        assert verdict == own.take(user)  # what the others did changes nothing
        if not verdict.allowed:
            assert 1 <= verdict.retry_after <= math.ceil(60 / per_minute)
            # Retry-After seconds later (and a millisecond, for the float clock's rounding)
            # the same request is served.
            clock.now += verdict.retry_after + 0.001
            assert before.take(user).allowed
            clock.now -= verdict.retry_after + 0.001


def test_no_rate_means_no_limiter(tmp_path):
    assert open_rate_limiter(Settings(home=tmp_path)) is None
    memory = open_rate_limiter(Settings(home=tmp_path, generate_rate=5))
    assert isinstance(memory, MemoryRateLimiter) and memory.burst == 5
    with pytest.raises(ValueError, match="generate_burst"):
        Settings(home=tmp_path, generate_burst=3)


# --- Redis ---------------------------------------------------------------------------------


@pytest.fixture
def redis_limiter():
    require_server("Redis", "127.0.0.1", 6379)
    prefix = f"tipml-test:rate:{uuid.uuid4().hex}:"
    yield RedisRateLimiter(REDIS_URL, per_minute=2, burst=2, prefix=prefix, budget=2.0)
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)


@pytest.mark.integration
def test_redis_buckets_count_exactly_under_concurrency(redis_limiter):
    asyncio.run(redis_limiter.warm_up())
    with ThreadPoolExecutor(max_workers=10) as pool:
        waits = list(pool.map(redis_limiter.take, ["a"] * 20))
    assert sum(wait == 0 for wait in waits) == 2
    refused = asyncio.run(redis_limiter.check("a"))
    assert not refused.allowed and 1 <= refused.retry_after <= 30 and refused.failure is None
    assert asyncio.run(redis_limiter.check("b")).allowed
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    assert 0 < client.pttl(f"{redis_limiter.prefix}a") <= 60_000  # gone once full again


@pytest.mark.integration
def test_without_redis_generate_is_served_and_says_so():
    down = RedisRateLimiter(f"127.0.0.1:{free_port()}", per_minute=1, burst=1, budget=1.0)
    asyncio.run(down.warm_up())  # a worker starts without Redis
    first, second = (asyncio.run(down.check("a")) for _ in range(2))
    assert first.allowed and second.allowed
    assert second.failure == "circuit_open" and down.breaker.dependency == RATE_LIMIT
