"""Summarise shadow traffic: how the challenger would have scored what the champion served."""

import numpy as np
from pydantic import BaseModel

from flows.modeling.gates import POLICY, GateCheck, PromotionPolicy
from service.scoring.shadow import shadow_log
from service.settings import Settings


class ShadowSummary(BaseModel):
    champion_version: str
    challenger_version: str
    requests: int
    rank_agreement: float | None  # mean Spearman correlation per request
    top_choice_agreement: float | None  # share of requests where both rank the same tip first
    mean_score_shift: float | None  # mean(challenger - champion) over all candidates


def _ranks(scores: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(scores, kind="stable"), kind="stable").astype(float)


def summarize(records: list[dict], champion: str, challenger: str) -> ShadowSummary:
    pairs = [
        (np.asarray(r["champion_scores"]), np.asarray(r["challenger_scores"]))
        for r in records
        if r["champion_version"] == champion and r["challenger_version"] == challenger
    ]
    if not pairs:
        return ShadowSummary(
            champion_version=champion,
            challenger_version=challenger,
            requests=0,
            rank_agreement=None,
            top_choice_agreement=None,
            mean_score_shift=None,
        )
    ranked = [(a, b) for a, b in pairs if len(a) > 1 and a.std() > 0 and b.std() > 0]
    correlations = [np.corrcoef(_ranks(a), _ranks(b))[0, 1] for a, b in ranked]
    return ShadowSummary(
        champion_version=champion,
        challenger_version=challenger,
        requests=len(pairs),
        rank_agreement=float(np.mean(correlations)) if correlations else None,
        top_choice_agreement=float(np.mean([a.argmax() == b.argmax() for a, b in pairs])),
        mean_score_shift=float(np.mean(np.concatenate([b - a for a, b in pairs]))),
    )


def read_summary(settings: Settings, champion: str, challenger: str) -> ShadowSummary:
    records = list(shadow_log(settings.shadow_dir).records(types=frozenset({"shadow_score"})))
    return summarize(records, champion, challenger)


def shadow_check(summary: ShadowSummary, policy: PromotionPolicy = POLICY) -> GateCheck:
    name = "shadow"
    if summary.requests < policy.min_shadow_requests:
        return GateCheck(
            name=name,
            passed=True,
            detail=f"{summary.requests} shadow requests (gated from "
            f"{policy.min_shadow_requests}); not gated yet",
        )
    agreement = summary.rank_agreement if summary.rank_agreement is not None else 1.0
    shift = summary.mean_score_shift or 0.0
    passed = (
        agreement >= policy.min_shadow_rank_agreement
        and abs(shift) <= policy.max_shadow_score_shift
    )
    return GateCheck(
        name=name,
        passed=passed,
        detail=f"{summary.requests} shadow requests: rank agreement {agreement:.3f} "
        f"(minimum {policy.min_shadow_rank_agreement:.2f}), mean score shift {shift:+.4f} "
        f"(maximum {policy.max_shadow_score_shift:.2f})",
    )
