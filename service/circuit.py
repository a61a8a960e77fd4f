"""Time budgets and circuit breakers for what the request path depends on.

Every dependency a request waits on (the online store, the bandit state store, the event log)
is called through a `Breaker`:

- The call gets a time budget. A client that retries with backoff (redis-py sleeps seconds
  between attempts) or a disk that stalls must not hold the request: past the budget the
  request goes on with its fallback, and the call is left to finish on its own thread.
- Only the dependency's own failures count: a timeout, or an exception of the types the
  breaker is told are the dependency's (connection refused, a locked or missing database).
  Anything else a call raises passes through untouched, so a request's own bad data can
  never open the breaker for every other request.
- After a failure the breaker opens for `cooldown` seconds: calls fail at once, without
  waiting out another budget, then the dependency is tried again.

A failure is a `DependencyFailed` with a reason the response and /metrics report.
"""

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Literal, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
# A worker's first call opens connections and warms caches: far slower than any later one,
# and it happens before the worker takes requests, so it gets this budget instead.
STARTUP_BUDGET_S = 30.0
FailureReason = Literal["timeout", "unavailable", "circuit_open"]


class DependencyFailed(RuntimeError):
    def __init__(self, dependency: str, reason: FailureReason) -> None:
        self.dependency = dependency
        self.reason = reason
        super().__init__(f"{dependency}: {reason}")


class Breaker:
    def __init__(
        self,
        dependency: str,
        failures: tuple[type[BaseException], ...],
        budget: float | None,
        cooldown: float = 5.0,
    ) -> None:
        self.dependency = dependency
        self.failures = failures
        self.budget = budget
        self.cooldown = cooldown
        self._closed_at = 0.0  # monotonic time from which the dependency is tried again
        # Two threads: one may be stuck in a slow client while the breaker is open.
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix=dependency)

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self._closed_at

    def call(self, fn: Callable[..., T], *args: object, budget: float | None = None) -> T:
        """fn(*args) within the budget (`budget` overrides it for this call, e.g. at start-up)."""
        if self.is_open:
            raise DependencyFailed(self.dependency, "circuit_open")
        budget = budget if budget is not None else self.budget
        try:
            if budget is None:
                return fn(*args)
            return self._pool.submit(fn, *args).result(timeout=budget)
        except FutureTimeout:  # also a TimeoutError the call raised itself
            reason, detail = "timeout", f"no answer within {budget}s"
        except self.failures as exc:
            reason, detail = "unavailable", type(exc).__name__
        log.warning("%s %s (%s): open for %.0f s", self.dependency, reason, detail, self.cooldown)
        self._closed_at = time.monotonic() + self.cooldown
        raise DependencyFailed(self.dependency, reason)
