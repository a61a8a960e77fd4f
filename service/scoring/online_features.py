"""The serving read path: online features for one user and request, TTL and fallbacks applied.

Profile values, and for a FeatureService that reads it the cohort of the request's time zone,
come from the online store through the model's FeatureService; context features from the
same FeatureService's on-demand view, which reads no store
(service/scoring/feature_service_read.py plans both reads once, at start-up). When the store
cannot be read, the profile falls back whole, so a request is still answered, marked degraded.

The store is read through a circuit breaker (service/circuit.py) that counts only the
store's own failures; an unexpected error in one read degrades that request alone.
"""

import logging
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from feature_repo.cohort_features import COHORT_AS_OF, COHORT_FEATURES, COHORT_KEY
from feature_repo.context_features import CONTEXT_FEATURES
from feature_repo.freshness import (
    FallbackReason,
    fallback_cohort,
    fallback_profile,
    resolve_cohorts,
    resolve_profiles,
)
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
    profile: dict[str, int | float]  # and the cohort's counts, when the FeatureService reads them
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
        from service.scoring.feature_service_read import FeatureServiceRead  # imports Feast

        self.feature_service = store.get_feature_service(feature_service_name)
        self.rows = FeatureServiceRead(store, self.feature_service)
        self.reads_cohort = COHORT_KEY in self.rows.join_keys
        self.budget = budget
        self.breaker = Breaker(ONLINE_STORE, STORE_ERRORS, budget=budget, cooldown=cooldown)

    def warm_up(self, context: RequestContext, now: datetime) -> FeatureRead:
        """A first read with the start-up budget, so later reads meet the request budget."""
        return self.read("warm-up", context, now, budget=STARTUP_BUDGET_S)

    def read(
        self, user_id: str, context: RequestContext, now: datetime, budget: float | None = None
    ) -> FeatureRead:
        computed = self.rows.compute_on_demand(context.feast_request_data())
        context_values = {f.name: int(computed[f.name]) for f in CONTEXT_FEATURES}
        # The cohort is the request's zone as sent: training reads the logged request's.
        entity = {"user_id": user_id, COHORT_KEY: context.timezone}
        try:
            row = self.breaker.call(self.rows.read_views, entity, budget=budget)
        except DependencyFailed as exc:
            return _degraded(context_values, exc.reason, self.reads_cohort)
        except Exception as exc:  # not the store's failure: this request alone falls back
            log.error("online read failed for one request: %s", type(exc).__name__)
            return _degraded(context_values, "error", self.reads_cohort)
        values, reasons = resolve_profiles(
            {f.name: [row[f.name]] for f in PROFILE_FEATURES}, [row[PROFILE_AS_OF]], [now]
        )
        if self.reads_cohort:
            cohort, cohort_reasons = resolve_cohorts(
                {f.name: [row[f.name]] for f in COHORT_FEATURES}, [row[COHORT_AS_OF]], [now]
            )
            values, reasons = {**values, **cohort}, {**reasons, **cohort_reasons}
        return FeatureRead(
            profile=_first_row(values),
            context=context_values,
            fallbacks={name: str(r[0]) for name, r in reasons.items() if r[0]},
            as_of=row[PROFILE_AS_OF],
        )


def _degraded(context: dict[str, int], failure: str, reads_cohort: bool) -> FeatureRead:
    values, reasons = fallback_profile(1, FallbackReason.STORE_UNAVAILABLE)
    if reads_cohort:
        cohort, cohort_reasons = fallback_cohort(1, FallbackReason.STORE_UNAVAILABLE)
        values, reasons = {**values, **cohort}, {**reasons, **cohort_reasons}
    return FeatureRead(
        profile=_first_row(values),
        context=context,
        fallbacks={name: str(reason[0]) for name, reason in reasons.items()},
        as_of=None,
        store_failure=failure,
    )
