"""Per-candidate features: the CANDIDATE_FEATURES table and the one function computing them.

They join a candidate tip with the user's profile, the request time zone's cohort counts
(tip_scorer_v2) and the request context. Feast could run
them as an on-demand view, but one user row plus numpy is ~8x cheaper than twenty candidate
rows through an ODFV, so they are computed here instead: by this function only, which both
the training set builder and the service call.
"""

from collections.abc import Mapping
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from feature_repo.categories import TIP_CATEGORIES
from feature_repo.cohort_features import COHORT_FEATURES

# A zone with little evidence reads as the app-wide accept rate of tips, ~0.2.
COHORT_PRIOR = 0.2
COHORT_PSEUDO_COUNT = 5


class CandidateFeature(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    dtype: Literal["int64", "float64"]
    inputs: tuple[str, ...]
    description: str


_RATES = tuple(f"accept_rate_{c}_28d" for c in TIP_CATEGORIES)
_COHORT = tuple(f.name for f in COHORT_FEATURES)
# The request's task counts and the two candidate features whose effect differs by category
# (the trees found these splits slowly: docs/scorer_quality.md, variant (d)).
CROSSED = (
    "open_task_count",
    "overdue_task_count",
    "due_today_count",
    "hour_gap",
    "category_affinity",
)
CROSS_FEATURES = tuple(f"{c}_x_{name}" for c in TIP_CATEGORIES for name in CROSSED)
COHORT_RATES = ("cohort_category_logit", "cohort_category_lift")

CANDIDATE_FEATURES: tuple[CandidateFeature, ...] = (
    CandidateFeature(
        name="category_affinity",
        dtype="float64",
        inputs=("category", *_RATES, "tip_accept_rate_28d"),
        description="The user's 28-day accept rate for the candidate's category.",
    ),
    CandidateFeature(
        name="category_lift",
        dtype="float64",
        inputs=("category", *_RATES, "tip_accept_rate_28d"),
        description="category_affinity minus the user's overall 28-day accept rate.",
    ),
    CandidateFeature(
        name="hour_gap",
        dtype="float64",
        inputs=("hour_of_day", "preferred_hour"),
        description="Circular distance in hours (0-12) from the preferred hour; 6 if unknown.",
    ),
    CandidateFeature(
        name="in_preferred_window",
        dtype="int64",
        inputs=("hour_of_day", "preferred_hour"),
        description="1 when the request is within one hour of the preferred hour.",
    ),
    CandidateFeature(
        name="cohort_category_logit",
        dtype="float64",
        inputs=("category", *_COHORT),
        description=(
            "Log-odds of the cohort's 28-day accept rate for the candidate's category, "
            f"smoothed by {COHORT_PSEUDO_COUNT} pseudo-impressions at {COHORT_PRIOR}."
        ),
    ),
    CandidateFeature(
        name="cohort_category_lift",
        dtype="float64",
        inputs=("category", *_COHORT),
        description="cohort_category_logit minus the log-odds of the cohort's overall rate.",
    ),
    *(
        CandidateFeature(
            name=f"{category}_x_{name}",
            dtype="float64",
            inputs=("category", name),
            description=f"{name} when the candidate is a '{category}' tip, else 0.",
        )
        for category in TIP_CATEGORIES
        for name in CROSSED
    ),
)

# The expected circular distance between two uniformly random hours.
UNKNOWN_HOUR_GAP = 6.0


def hour_gap(a, b):
    """Hours between `a` and `b` around the 24-hour clock (0 to 12), elementwise with numpy's
    broadcasting. The simulator's acceptance and the Bayes bound measure the same gap."""
    diff = np.abs(np.subtract(a, b)) % 24
    return np.minimum(diff, 24 - diff)


def _cohort_logit(accepted: np.ndarray, shown: np.ndarray) -> np.ndarray:
    rate = (accepted + COHORT_PSEUDO_COUNT * COHORT_PRIOR) / (shown + COHORT_PSEUDO_COUNT)
    return np.log(rate / (1 - rate))


def _by_category(category: np.ndarray, columns: list[np.ndarray], default) -> np.ndarray:
    return np.select([category == c for c in TIP_CATEGORIES], columns, default=default)


def candidate_features(
    category: np.ndarray,
    profile: Mapping[str, np.ndarray],
    context: Mapping[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Compute CANDIDATE_FEATURES row-wise; the cohort's only when `profile` holds the cohort
    counts (a version that reads no cohort view has none).

    `profile` holds resolved values (TTL and fallbacks applied), `context` the context
    features, one entry per row (or one for all rows), as does `category`. A category outside
    TIP_CATEGORIES gets the overall rates and no cross.
    """
    category = np.asarray(category)
    hour_of_day = np.asarray(context["hour_of_day"])
    overall = np.asarray(profile["tip_accept_rate_28d"], dtype=np.float64)
    affinity = _by_category(
        category, [np.asarray(profile[rate], dtype=np.float64) for rate in _RATES], overall
    )
    preferred = np.asarray(profile["preferred_hour"], dtype=np.int64)
    gap = np.where(
        preferred >= 0, hour_gap(hour_of_day.astype(np.int64), preferred), UNKNOWN_HOUR_GAP
    )
    out = {
        "category_affinity": affinity,
        "category_lift": affinity - overall,
        "hour_gap": gap.astype(np.float64),
        "in_preferred_window": (gap <= 1).astype(np.int64),
    }
    for c in TIP_CATEGORIES:
        is_c = category == c
        for name in CROSSED:
            value = out[name] if name in out else np.asarray(context[name], dtype=np.float64)
            out[f"{c}_x_{name}"] = np.where(is_c, value, 0.0)
    if _COHORT[0] in profile:
        counts = {n: np.asarray(profile[n], dtype=np.float64) for n in _COHORT}
        overall_logit = _cohort_logit(counts["cohort_accepted_28d"], counts["cohort_shown_28d"])
        logit = _by_category(
            category,
            [
                _cohort_logit(counts[f"cohort_accepted_{c}_28d"], counts[f"cohort_shown_{c}_28d"])
                for c in TIP_CATEGORIES
            ],
            overall_logit,
        )
        out["cohort_category_logit"] = logit
        out["cohort_category_lift"] = logit - overall_logit
    return out
