"""The baseline /score for perf/score_load.py: stock BentoML, every candidate row through Feast.

    bentoml serve perf.baseline_service:BaselineService --port 3001   # from the repo root

The issue defines it as "stock BentoML, /score reading all 20 candidate rows through the
FeatureService per request, nothing else". Same request and response contract as
`service.service:TipService`'s /score, the same TTL/fallback rule, model rows and champion
model, hence the same scores. What differs, on purpose:

- stock BentoML: `service.bentoml_patches` is never imported (no TimeoutMiddleware timer fix),
  no `gc.freeze()`, BentoML's default access log and traffic settings;
- one Feast entity row per candidate (user_id plus the request's context fields), so Feast's
  entity handling, online lookup, response building and on-demand view run over N rows, not 1;
- no shadow scoring, no skew metrics and no degraded mode: a store failure is a 500.
"""

import uuid
from datetime import UTC, datetime

import bentoml
import numpy as np

from feature_repo.cohort_features import COHORT_AS_OF, COHORT_FEATURES, COHORT_KEY
from feature_repo.context_features import CONTEXT_FEATURES
from feature_repo.freshness import resolve_cohorts, resolve_profiles
from feature_repo.profile_features import PROFILE_AS_OF, PROFILE_FEATURES
from service.api.request import Id, RequestContext
from service.api.schemas import (
    CandidateList,
    ModelInfo,
    ProfileFeatures,
    ScoredCandidate,
    ScoreResponse,
)
from service.scoring.feature_store import open_store
from service.scoring.model_inputs import model_frame
from service.scoring.model_names import CHAMPION, MODEL_NAME
from service.scoring.model_registry import load_scorer
from service.settings import Settings


@bentoml.service
class BaselineService:
    def __init__(self) -> None:
        settings = Settings.from_env()
        self.store = open_store(settings)
        self.champion = load_scorer(settings, self.store, CHAMPION)
        self.feature_service = self.store.get_feature_service(self.champion.feature_service)

    @bentoml.api(route="/score")
    def score(
        self,
        user_id: Id,
        candidates: CandidateList,
        context: RequestContext,
        profile_features: ProfileFeatures | None = None,
    ) -> ScoreResponse:
        """Score candidate tips for a user now; best first."""
        rows = len(candidates)
        request = context.feast_request_data()
        read = self.store.get_online_features(
            features=self.feature_service,
            entity_rows=[
                {"user_id": user_id, COHORT_KEY: context.timezone, **request} for _ in range(rows)
            ],
        ).to_dict()
        now = datetime.now(UTC)
        profile, reasons = resolve_profiles(
            {f.name: read[f.name] for f in PROFILE_FEATURES}, read[PROFILE_AS_OF], [now] * rows
        )
        if COHORT_AS_OF in read:
            cohort, cohort_reasons = resolve_cohorts(
                {f.name: read[f.name] for f in COHORT_FEATURES}, read[COHORT_AS_OF], [now] * rows
            )
            profile, reasons = {**profile, **cohort}, {**reasons, **cohort_reasons}
        # The contract's rule: the recommender's values fill in only where the store had none.
        supplied = profile_features.model_dump(exclude_none=True) if profile_features else {}
        for name, value in supplied.items():
            profile[name] = np.where(reasons[name] != "", value, profile[name]).astype(
                profile[name].dtype
            )
        context_values = {
            f.name: np.asarray(read[f.name], dtype=np.int64) for f in CONTEXT_FEATURES
        }
        categories = np.asarray([c.category for c in candidates])
        frame = model_frame(self.champion.columns, profile, context_values, categories)
        scores = self.champion.model.predict_proba(frame)[:, 1]
        order = np.argsort(-scores, kind="stable")
        return ScoreResponse(
            request_id=uuid.uuid4().hex,
            model=ModelInfo(name=MODEL_NAME, version=self.champion.version),
            feature_service=self.champion.feature_service,
            candidates=[
                ScoredCandidate(
                    tip_id=candidates[i].tip_id,
                    category=candidates[i].category,
                    score=float(scores[i]),
                )
                for i in order
            ],
            fallbacks={
                name: str(reason[0])
                for name, reason in reasons.items()
                if reason[0] and name not in supplied
            },
            dependency_fallbacks={},  # no degraded mode: a store failure is a 500
            degraded=False,
        )
