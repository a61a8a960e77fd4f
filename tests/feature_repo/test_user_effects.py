"""Each user's effects over a population model (feature_repo/user_effects.py): the prior with
no history, what a row may see, recovery from a long history, and bounds any history keeps."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit

from feature_repo.categories import TIP_CATEGORIES
from feature_repo.user_effects import (
    EFFECT_PRIOR_SD,
    category_design,
    fit_posterior,
    user_effects,
)

START = datetime(2026, 10, 1, tzinfo=UTC)
SETTLE = timedelta(hours=1)


def impressions(days: int, per_day: int, effects: dict[str, float], base: float, seed: int):
    """One user's impressions with population offsets, outcomes drawn from the true logit
    offset + base + effects[category]."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    stamps = [
        START + timedelta(days=i // per_day, minutes=int(rng.integers(0, 23 * 60)))
        for i in range(n)
    ]
    category = rng.choice(TIP_CATEGORIES, n)
    offsets = rng.normal(-1.5, 0.7, n)
    logit = offsets + base + np.array([effects[c] for c in category])
    rows = pd.DataFrame(
        {
            "user_id": "u-1",
            "event_timestamp": pd.to_datetime(stamps),
            "category": category,
            "accepted": (rng.random(n) < expit(logit)).astype(int),
        }
    )
    return rows, offsets


def test_with_no_history_the_effects_are_the_prior():
    rows, offsets = impressions(1, 6, dict.fromkeys(TIP_CATEGORIES, 0.0), 0.0, seed=0)
    out = user_effects(rows, offsets, SETTLE)
    assert (out["user_effect_logit"] == 0).all() and (out["user_base_effect"] == 0).all()
    # base and category effect, independent, each with the prior's variance.
    assert out["user_effect_variance"].to_numpy() == pytest.approx(2 * EFFECT_PRIOR_SD**2)


def test_an_outcome_counts_from_the_midnight_after_it_settled():
    rows, offsets = impressions(3, 4, dict.fromkeys(TIP_CATEGORIES, 0.0), 0.0, seed=1)
    late = pd.DataFrame(
        {
            "user_id": "u-1",
            # Settles at 00:10 on the next day: not seen at that day's midnight.
            "event_timestamp": [pd.Timestamp(START + timedelta(hours=23, minutes=10))],
            "category": ["focus"],
            "accepted": [1],
        }
    )
    with_late = pd.concat([rows, late], ignore_index=True)
    before = user_effects(rows, offsets, SETTLE)
    after = user_effects(with_late, np.append(offsets, -1.0), SETTLE)
    day = rows["event_timestamp"].dt.floor("D")
    second_day = (day == day.unique()[1]).to_numpy()
    third_day = (day == day.unique()[2]).to_numpy()
    pd.testing.assert_frame_equal(before[second_day], after.iloc[: len(rows)][second_day])
    assert (
        after.iloc[: len(rows)][third_day]["user_effect_logit"]
        > before[third_day]["user_effect_logit"]
    ).all()


def test_a_long_history_recovers_base_plus_category():
    effects = {"focus": 0.8, "planning": -0.6, "wellbeing": 0.2, "review": -0.1}
    rows, offsets = impressions(300, 6, effects, base=0.4, seed=2)
    out = user_effects(rows, offsets, SETTLE)
    last = (rows["event_timestamp"] >= START + timedelta(days=290)).to_numpy()
    truth = 0.4 + rows.loc[last, "category"].map(effects).to_numpy()
    # ~450 outcomes a category: a standard error of ~0.1 on the logit scale.
    assert np.abs(out.loc[last, "user_effect_logit"].to_numpy() - truth).max() < 0.3
    assert out.loc[last, "user_effect_variance"].max() < 0.05


def test_the_evidence_weighs_alternative_offsets():
    rows, offsets = impressions(120, 6, dict.fromkeys(TIP_CATEGORIES, 0.0), 0.0, seed=3)
    design = category_design(rows["category"])
    history = np.ones((1, len(rows)))
    wrong = offsets + np.where(np.arange(len(rows)) % 2 == 0, 1.0, -1.0)
    posterior = fit_posterior(
        design,
        np.stack([wrong, offsets]),
        rows["accepted"].to_numpy(dtype=float),
        history,
        np.zeros(design.shape[1]),
        EFFECT_PRIOR_SD,
    )
    assert posterior.weight[0, 1] > 0.99


def test_a_category_outside_the_tables_is_refused():
    with pytest.raises(ValueError, match="category outside"):
        category_design(np.array(["focus", "ﬁnance"]))


@settings(max_examples=40, deadline=None)
@given(
    outcomes=st.lists(st.integers(0, 1), min_size=1, max_size=40),
    offsets=st.lists(st.floats(-8, 8), min_size=40, max_size=40),
)
def test_any_history_gives_finite_effects_no_wider_than_the_prior(outcomes, offsets):
    n = len(outcomes)
    rows = pd.DataFrame(
        {
            "user_id": "u-1",
            "event_timestamp": pd.to_datetime([START + timedelta(hours=5 * i) for i in range(n)]),
            "category": [TIP_CATEGORIES[i % len(TIP_CATEGORIES)] for i in range(n)],
            "accepted": outcomes,
        }
    )
    out = user_effects(rows, np.array(offsets[:n]), SETTLE)
    assert np.isfinite(out.to_numpy()).all()
    assert (out["user_effect_variance"] <= 2 * EFFECT_PRIOR_SD**2 + 1e-9).all()
