"""The one candidate-feature function both training and serving call."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from feature_repo.candidate_features import (
    CANDIDATE_FEATURES,
    COHORT_PRIOR,
    COHORT_RATES,
    CROSSED,
    UNKNOWN_HOUR_GAP,
    candidate_features,
    hour_gap,
)
from feature_repo.categories import TIP_CATEGORIES
from feature_repo.cohort_features import COHORT_FEATURES


def profile(rows: int, preferred_hour: int) -> dict[str, np.ndarray]:
    rates = {f"accept_rate_{c}_28d": 0.1 * (i + 1) for i, c in enumerate(TIP_CATEGORIES)}
    values = {name: np.full(rows, rate) for name, rate in rates.items()}
    values["tip_accept_rate_28d"] = np.full(rows, 0.25)
    values["preferred_hour"] = np.full(rows, preferred_hour)
    return values


def context(rows: int, hour: int) -> dict[str, np.ndarray]:
    return {
        "hour_of_day": np.full(rows, hour),
        "open_task_count": np.full(rows, 7),
        "overdue_task_count": np.full(rows, 3),
        "due_today_count": np.full(rows, 1),
    }


def cohort(rows: int, shown: int, accepted: dict[str, int]) -> dict[str, np.ndarray]:
    """Counts of a cohort shown `shown` tips of each category, with `accepted` of them taken."""
    counts = {"cohort_shown_28d": 4 * shown, "cohort_accepted_28d": sum(accepted.values())}
    for c in TIP_CATEGORIES:
        counts[f"cohort_shown_{c}_28d"] = shown
        counts[f"cohort_accepted_{c}_28d"] = accepted[c]
    return {name: np.full(rows, counts[name]) for name in counts}


def test_outputs_are_the_table_and_the_cohorts_need_their_counts():
    out = candidate_features(np.array(["focus"]), profile(1, 9), context(1, 9))
    assert list(out) == [f.name for f in CANDIDATE_FEATURES if f.name not in COHORT_RATES]
    with_cohort = {**profile(1, 9), **cohort(1, 10, dict.fromkeys(TIP_CATEGORIES, 2))}
    out = candidate_features(np.array(["focus"]), with_cohort, context(1, 9))
    assert sorted(out) == sorted(f.name for f in CANDIDATE_FEATURES)
    assert set(COHORT_RATES) <= {f.name for f in CANDIDATE_FEATURES}
    assert [n for n in with_cohort if n.startswith("cohort_")] == [f.name for f in COHORT_FEATURES]


def test_affinity_picks_the_category_rate_and_unknown_gets_the_overall_rate():
    categories = np.array([*TIP_CATEGORIES, "brand-new"])
    out = candidate_features(categories, profile(5, 9), context(5, 9))
    assert out["category_affinity"] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.25])
    assert out["category_lift"] == pytest.approx([-0.15, -0.05, 0.05, 0.15, 0.0])


@pytest.mark.parametrize(
    ("hour", "preferred", "gap", "window"),
    [(9, 9, 0, 1), (10, 9, 1, 1), (23, 1, 2, 0), (21, 9, 12, 0), (3, -1, UNKNOWN_HOUR_GAP, 0)],
)
def test_hour_gap_is_circular_and_unknown_is_neutral(hour, preferred, gap, window):
    out = candidate_features(np.array(["focus"]), profile(1, preferred), context(1, hour))
    assert out["hour_gap"][0] == gap
    assert out["in_preferred_window"][0] == window


def test_crosses_carry_the_value_in_their_own_category_only():
    categories = np.array([*TIP_CATEGORIES, "brand-new"])
    out = candidate_features(categories, profile(5, 9), context(5, 12))
    for i, category in enumerate(categories):
        for c in TIP_CATEGORIES:
            for name in CROSSED:
                expected = out[name][i] if name in out else context(5, 12)[name][i]
                assert out[f"{c}_x_{name}"][i] == (expected if c == category else 0.0)


def test_a_cohort_without_evidence_reads_the_prior_and_lifts_follow_its_rates():
    logit = np.log(COHORT_PRIOR / (1 - COHORT_PRIOR))
    empty = {**profile(1, 9), **cohort(1, 0, dict.fromkeys(TIP_CATEGORIES, 0))}
    out = candidate_features(np.array(["focus"]), empty, context(1, 9))
    assert out["cohort_category_logit"][0] == pytest.approx(logit)
    assert out["cohort_category_lift"][0] == pytest.approx(0.0)
    # 1,000 focus tips, half taken, against 100 of 1,000 in each other category: (500 + 1) /
    # (1000 + 5) for focus, (1,800 + 1) / (4,000 + 5) overall.
    taken = {"focus": 500, "planning": 100, "wellbeing": 100, "review": 100}
    rich = {**profile(2, 9), **cohort(2, 1000, taken)}
    out = candidate_features(np.array(["focus", "review"]), rich, context(2, 9))
    focus, review, overall = 501 / 1005, 101 / 1005, 801 / 4005

    def to_logit(p: float) -> float:
        return float(np.log(p / (1 - p)))

    assert out["cohort_category_logit"] == pytest.approx([to_logit(focus), to_logit(review)])
    assert out["cohort_category_lift"] == pytest.approx(
        [to_logit(focus) - to_logit(overall), to_logit(review) - to_logit(overall)]
    )


HOURS = st.floats(min_value=-48, max_value=48, allow_nan=False)


def test_the_hour_gap_goes_round_the_clock():
    assert [hour_gap(23, h) for h in (23, 0, 1, 11, 12)] == [0, 1, 2, 12, 11]
    assert hour_gap(np.array([[0], [6]]), np.array([3, 21])).tolist() == [[3, 3], [3, 9]]


@given(HOURS, HOURS, st.integers(-3, 3))
def test_the_hour_gap_is_a_distance_on_the_clock(a, b, days):
    gap = hour_gap(a, b)
    assert 0 <= gap <= 12
    assert gap == pytest.approx(hour_gap(b, a), abs=1e-9)
    assert hour_gap(a, b + 24 * days) == pytest.approx(gap, abs=1e-9)
