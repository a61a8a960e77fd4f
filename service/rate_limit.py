"""A per-user rate limit on /generate, which spends LLM money on every call.

A token bucket per user_id: `burst` requests at once, refilled at `per_minute` requests a
minute (TIPML_GENERATE_RATE, TIPML_GENERATE_BURST; unset = no limit). A request the bucket
cannot pay for is refused with the whole seconds until it could (`Retry-After`), rounded up,
so a client that waits that long is served. Each user has a bucket of their own: one user's
requests never use another's.

Where the buckets live (TIPML_RATE_LIMIT_STORE):

- `memory` (the default): in each worker process. Nothing to run, but approximate: a user's
  requests spread over the workers (TIPML_SERVICE_WORKERS) and replicas, each with its own
  bucket, so they get up to that many times the rate. At most MAX_TRACKED_USERS buckets are
  kept per worker; a full bucket is dropped (it is the same as none), and past the bound the
  least recently used one is, which gives that user a fresh bucket.
- `redis`: one bucket per user in the Redis at TIPML_REDIS_URL, updated by one Lua script on
  Redis's own clock: exact across workers and replicas. A bucket expires once it would be
  full again.

When Redis fails the request is served (fail open), with `rate_limit` in its
`dependency_fallbacks`: like every other dependency on the request path it has a time budget
and a breaker (service/circuit.py), and the limit guards cost, not correctness, so an outage
of Redis should not also be an outage of /generate.
"""

import contextlib
import functools
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple, Protocol

import anyio
from redis.exceptions import RedisError

from service.circuit import STARTUP_BUDGET_S, Breaker, DependencyFailed
from service.redis_client import redis_client
from service.settings import Settings

RATE_LIMIT = "rate_limit"
REDIS_PREFIX = "tipml:rate:generate:"
MAX_TRACKED_USERS = 100_000


class Verdict(NamedTuple):
    allowed: bool
    # Whole seconds until the user's next request is allowed; 0 when this one is.
    retry_after: int = 0
    # Why the store was not asked ("timeout", "unavailable", "circuit_open"); the request
    # was allowed.
    failure: str | None = None


def _verdict(wait_s: float) -> Verdict:
    """The seconds a request would have to wait, as a verdict: at least 1 when refused."""
    if wait_s <= 0:
        return Verdict(True)
    return Verdict(False, max(1, math.ceil(wait_s)))


class RateLimiter(Protocol):
    per_minute: int
    burst: int

    async def check(self, user_id: str) -> Verdict:
        """Take one request from the user's bucket, or say how long until it can be taken."""
        ...

    async def warm_up(self) -> None:
        """Open what the first check would, before the worker takes requests."""
        ...


class MemoryRateLimiter:
    """Buckets in this process. `check` never awaits: on the event loop it is atomic."""

    def __init__(
        self,
        per_minute: int,
        burst: int,
        max_users: int = MAX_TRACKED_USERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_minute = per_minute
        self.burst = burst
        self.max_users = max_users
        self._clock = clock
        # user_id -> (requests left, when counted), least recently checked first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    async def check(self, user_id: str) -> Verdict:
        return self.take(user_id)

    def take(self, user_id: str) -> Verdict:
        now = self._clock()
        left, at = self._buckets.get(user_id, (float(self.burst), now))
        left = min(self.burst, left + self._refill(now - at))
        wait = 0.0
        if left >= 1:
            left -= 1
        else:
            # Multiplied before divided: an empty bucket at 2 a minute waits 30.0 s, not the
            # 30.000000000000004 that dividing by a rate of 2/60 gives (a Retry-After of 31).
            wait = (1 - left) * 60 / self.per_minute
        self._buckets[user_id] = (left, now)
        self._buckets.move_to_end(user_id)
        self._forget(now)
        return _verdict(wait)

    def _forget(self, now: float) -> None:
        """Drop buckets from the least recently checked end while they are full again or
        there are too many. Each bucket is dropped once: O(1) a check, on average."""
        while self._buckets:
            user_id, (left, at) = next(iter(self._buckets.items()))
            full = left + self._refill(now - at) >= self.burst
            if not full and len(self._buckets) <= self.max_users:
                return
            del self._buckets[user_id]

    def _refill(self, seconds: float) -> float:
        return seconds * self.per_minute / 60

    def __len__(self) -> int:
        return len(self._buckets)

    async def warm_up(self) -> None:
        return None


# MemoryRateLimiter.take in Lua. KEYS[1]: the user's bucket, a hash of `left` and `at`
# (seconds on Redis's clock). ARGV: requests per minute, bucket size. Returns the seconds to
# wait, 0 when allowed, as a string: Redis would truncate a Lua number to an integer.
_TAKE_LUA = """
local per_minute = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local saved = redis.call('HMGET', KEYS[1], 'left', 'at')
local left = burst
if saved[1] then
  local elapsed = math.max(0, now - tonumber(saved[2]))
  left = math.min(burst, tonumber(saved[1]) + elapsed * per_minute / 60)
end
local wait = 0
if left >= 1 then
  left = left - 1
else
  wait = (1 - left) * 60 / per_minute
end
redis.call('HSET', KEYS[1], 'left', tostring(left), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 60000 / per_minute))
return tostring(wait)
"""


class RedisRateLimiter:
    """Buckets in Redis, one key per user, shared by every worker and replica."""

    def __init__(
        self,
        redis_url: str,
        per_minute: int,
        burst: int,
        budget: float,
        prefix: str = REDIS_PREFIX,
    ) -> None:
        self.client = redis_client(redis_url)
        self.per_minute = per_minute
        self.burst = burst
        self.prefix = prefix
        self.breaker = Breaker(RATE_LIMIT, (RedisError, OSError), budget=budget)
        self._take = self.client.register_script(_TAKE_LUA)
        self._args = [per_minute, burst]

    async def check(self, user_id: str) -> Verdict:
        try:
            wait = await anyio.to_thread.run_sync(self.breaker.call, self.take, user_id)
        except DependencyFailed as exc:
            return Verdict(True, failure=exc.reason)
        return _verdict(wait)

    def take(self, user_id: str) -> float:
        """The seconds this request would wait; 0 when it was allowed and counted."""
        return float(self._take(keys=[f"{self.prefix}{user_id}"], args=self._args))

    async def warm_up(self) -> None:
        """Connect and load the script. A Redis that is down leaves the breaker open (it logs
        why) and the worker starts anyway: the limit fails open."""
        load = functools.partial(
            self.breaker.call, self.client.script_load, _TAKE_LUA, budget=STARTUP_BUDGET_S
        )
        with contextlib.suppress(DependencyFailed):
            await anyio.to_thread.run_sync(load)


def open_rate_limiter(settings: Settings) -> RateLimiter | None:
    """The /generate limit the settings ask for; None when there is none."""
    if settings.generate_rate is None:
        return None
    burst = settings.generate_burst or settings.generate_rate
    if settings.rate_limit_store == "redis":
        return RedisRateLimiter(
            settings.redis_url, settings.generate_rate, burst, settings.store_budget_s
        )
    return MemoryRateLimiter(settings.generate_rate, burst)
