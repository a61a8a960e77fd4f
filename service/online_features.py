"""The serving read path: online features for one user and request, TTL and fallbacks applied.

Profile values come from the online store through the model's FeatureService; context
features from the same FeatureService's on-demand view. When the store cannot be read, the
profile falls back whole and the context features are computed by the view's own function,
so a request is still answered, marked degraded.
"""

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from feast import FeatureStore

from feature_repo.context_features import CONTEXT_FEATURES, request_context_features
from feature_repo.freshness import FallbackReason, fallback_profile, resolve_profiles
from feature_repo.profile_features import PROFILE_AS_OF, PROFILE_FEATURES
from service.context import RequestContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureRead:
    profile: dict[str, int | float]
    context: dict[str, int]
    fallbacks: dict[str, str]  # feature -> FallbackReason value, only for features that fell back
    as_of: datetime | None
    degraded: bool


def _first_row(values: dict) -> dict:
    return {name: column[0].item() for name, column in values.items()}


class OnlineFeatureReader:
    """Reads through a circuit breaker: after a failed read the store is skipped (degraded
    answers, at once) for `cooldown` seconds, then tried again. Remote stores also get a time
    budget per read: a client retrying with backoff (redis-py sleeps seconds between
    attempts) must not hold the request; the read is abandoned and the breaker opens.
    """

    def __init__(
        self,
        store: FeatureStore,
        feature_service_name: str,
        cooldown: float = 5.0,
        budget: float | None = None,
    ) -> None:
        self.store = store
        self.feature_service = store.get_feature_service(feature_service_name)
        self.cooldown = cooldown
        self.budget = budget
        self._closed_at = 0.0  # monotonic time from which the store is tried again
        # Two threads: one may be stuck in a slow client while the breaker is open.
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="online-read")

    def read(self, user_id: str, context: RequestContext, now: datetime) -> FeatureRead:
        request = context.feast_request_data()
        if time.monotonic() < self._closed_at:
            return self._degraded(request)
        try:
            row = self._fetch({"user_id": user_id, **request})
        except Exception as exc:  # any store failure degrades; it must never fail the request
            log.warning("online store unavailable: %s", type(exc).__name__)
            self._closed_at = time.monotonic() + self.cooldown
            return self._degraded(request)
        values, reasons = resolve_profiles(
            {f.name: row[f.name] for f in PROFILE_FEATURES}, row[PROFILE_AS_OF], [now]
        )
        fallbacks = {name: str(r[0]) for name, r in reasons.items() if r[0]}
        return FeatureRead(
            profile=_first_row(values),
            context={f.name: int(row[f.name][0]) for f in CONTEXT_FEATURES},
            fallbacks=fallbacks,
            as_of=row[PROFILE_AS_OF][0],
            degraded=False,
        )

    def _fetch(self, entity_row: dict) -> dict:
        def fetch() -> dict:
            return self.store.get_online_features(
                features=self.feature_service, entity_rows=[entity_row]
            ).to_dict()

        if self.budget is None:
            return fetch()
        return self._pool.submit(fetch).result(timeout=self.budget)

    def _degraded(self, request: dict) -> FeatureRead:
        values, reasons = fallback_profile(1, FallbackReason.STORE_UNAVAILABLE)
        local = request_context_features.feature_transformation.udf(
            {name: [value] for name, value in request.items()}
        )
        return FeatureRead(
            profile=_first_row(values),
            context={f.name: int(local[f.name][0]) for f in CONTEXT_FEATURES},
            fallbacks={name: str(reason[0]) for name, reason in reasons.items()},
            as_of=None,
            degraded=True,
        )
