"""The serving read path: online features for one user and request, TTL and fallbacks applied.

Profile values come from the online store through the model's FeatureService; context
features from the same FeatureService's on-demand view. When the store cannot be read, the
profile falls back whole and the context features are computed by the view's own function,
so a request is still answered, marked degraded.

The store is read through a circuit breaker (service/circuit.py) that counts only the
store's own failures; an unexpected error in one read degrades that request alone.
"""

import logging
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from feature_repo.context_features import CONTEXT_FEATURES, request_context_features
from feature_repo.freshness import FallbackReason, fallback_profile, resolve_profiles
from feature_repo.profile_features import PROFILE_AS_OF, PROFILE_FEATURES
from service.api.request import RequestContext
from service.circuit import STARTUP_BUDGET_S, Breaker, DependencyFailed

if TYPE_CHECKING:  # the reader is handed a store; FeatureRead's users need no Feast
    from feast import FeatureStore

log = logging.getLogger(__name__)

ONLINE_STORE = "online_store"
# What the online stores raise when they cannot be reached or read.
STORE_ERRORS: tuple[type[BaseException], ...] = (OSError, sqlite3.Error, RedisError)


@dataclass(frozen=True)
class FeatureRead:
    profile: dict[str, int | float]
    context: dict[str, int]
    fallbacks: dict[str, str]  # feature -> FallbackReason value, only for features that fell back
    as_of: datetime | None
    # Why the store was not read ("timeout", "unavailable", "circuit_open", "error"), or None.
    store_failure: str | None = None

    @property
    def degraded(self) -> bool:
        return self.store_failure is not None


def _first_row(values: dict) -> dict:
    return {name: column[0].item() for name, column in values.items()}


class OnlineFeatureReader:
    """Reads one user's features; `budget` bounds each read of a network store (None: no
    bound, for an embedded SQLite file, which cannot hang)."""

    def __init__(
        self,
        store: "FeatureStore",
        feature_service_name: str,
        cooldown: float = 5.0,
        budget: float | None = None,
    ) -> None:
        self.store = store
        self.feature_service = store.get_feature_service(feature_service_name)
        self.breaker = Breaker(ONLINE_STORE, STORE_ERRORS, budget=budget, cooldown=cooldown)

    def warm_up(self, context: RequestContext, now: datetime) -> FeatureRead:
        """A first read with the start-up budget, so later reads meet the request budget."""
        return self.read("warm-up", context, now, budget=STARTUP_BUDGET_S)

    def read(
        self, user_id: str, context: RequestContext, now: datetime, budget: float | None = None
    ) -> FeatureRead:
        request = context.feast_request_data()
        try:
            row = self.breaker.call(self._fetch, {"user_id": user_id, **request}, budget=budget)
        except DependencyFailed as exc:
            return self._degraded(request, exc.reason)
        except Exception as exc:  # not the store's failure: this request alone falls back
            log.error("online read failed for one request: %s", type(exc).__name__)
            return self._degraded(request, "error")
        values, reasons = resolve_profiles(
            {f.name: row[f.name] for f in PROFILE_FEATURES}, row[PROFILE_AS_OF], [now]
        )
        fallbacks = {name: str(r[0]) for name, r in reasons.items() if r[0]}
        return FeatureRead(
            profile=_first_row(values),
            context={f.name: int(row[f.name][0]) for f in CONTEXT_FEATURES},
            fallbacks=fallbacks,
            as_of=row[PROFILE_AS_OF][0],
        )

    def _fetch(self, entity_row: dict) -> dict:
        return self.store.get_online_features(
            features=self.feature_service, entity_rows=[entity_row]
        ).to_dict()

    def _degraded(self, request: dict, failure: str) -> FeatureRead:
        values, reasons = fallback_profile(1, FallbackReason.STORE_UNAVAILABLE)
        local = request_context_features({name: [value] for name, value in request.items()})
        return FeatureRead(
            profile=_first_row(values),
            context={f.name: int(local[f.name][0]) for f in CONTEXT_FEATURES},
            fallbacks={name: str(reason[0]) for name, reason in reasons.items()},
            as_of=None,
            store_failure=failure,
        )
