"""The one candidate-feature function both training and serving call."""

import numpy as np
import pytest

from feature_repo.candidate_features import (
    CANDIDATE_FEATURES,
    UNKNOWN_HOUR_GAP,
    candidate_features,
)
from feature_repo.categories import TIP_CATEGORIES


def profile(rows: int, preferred_hour: int) -> dict[str, np.ndarray]:
    rates = {f"accept_rate_{c}_28d": 0.1 * (i + 1) for i, c in enumerate(TIP_CATEGORIES)}
    values = {name: np.full(rows, rate) for name, rate in rates.items()}
    values["tip_accept_rate_28d"] = np.full(rows, 0.25)
    values["preferred_hour"] = np.full(rows, preferred_hour)
    return values


def test_outputs_are_the_table():
    out = candidate_features(np.array(["focus"]), profile(1, 9), np.array([9]))
    assert list(out) == [f.name for f in CANDIDATE_FEATURES]


def test_affinity_picks_the_category_rate_and_unknown_gets_the_overall_rate():
    categories = np.array([*TIP_CATEGORIES, "brand-new"])
    out = candidate_features(categories, profile(5, 9), np.full(5, 9))
    assert out["category_affinity"] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.25])
    assert out["category_lift"] == pytest.approx([-0.15, -0.05, 0.05, 0.15, 0.0])


@pytest.mark.parametrize(
    ("hour", "preferred", "gap", "window"),
    [(9, 9, 0, 1), (10, 9, 1, 1), (23, 1, 2, 0), (21, 9, 12, 0), (3, -1, UNKNOWN_HOUR_GAP, 0)],
)
def test_hour_gap_is_circular_and_unknown_is_neutral(hour, preferred, gap, window):
    out = candidate_features(np.array(["focus"]), profile(1, preferred), np.array([hour]))
    assert out["hour_gap"][0] == gap
    assert out["in_preferred_window"][0] == window
