"""The Bayes-optimal scorer from history (flows/simulation/posterior.py) on worlds small
enough to check by hand: its prior, what it may not see, and that it finds a user's traits
once the history is long."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from feature_repo.categories import TIP_CATEGORIES
from feature_repo.personas import PERSONAS
from flows.simulation.posterior import history_posteriors, hour_prior
from flows.simulation.world import (
    PROMPT_EFFECT,
    SimUser,
    observable_p_accept,
    p_accept,
)

PERSONA = PERSONAS[0]  # night_owl_student: active hour 22.5
START = datetime(2026, 10, 1, tzinfo=UTC)


def user(**traits) -> SimUser:
    fields = {
        "user_id": "u-1",
        "persona": PERSONA.name,
        "timezone": "Europe/Madrid",
        "preferred_hour": 22,
        "first_day": 0,
        "base_logit": PERSONA.base_logit + 0.4,
        "receptivity": {c: PERSONA.receptivity[c] - 0.2 for c in TIP_CATEGORIES},
    }
    return SimUser(**(fields | traits))


def users_frame(*who: SimUser) -> pd.DataFrame:
    return pd.DataFrame([u.model_dump() for u in who])


def impressions(who: SimUser, days: int, per_day: int, seed: int = 0) -> pd.DataFrame:
    """`per_day` impressions a day of `who`, at spread local hours, drawn from p_accept."""
    rng = np.random.default_rng(seed)
    rows = []
    for day in range(days):
        for _ in range(per_day):
            at = START + timedelta(days=day, minutes=int(rng.integers(0, 24 * 60)))
            local = at.astimezone(ZoneInfo(who.timezone))
            category = TIP_CATEGORIES[int(rng.integers(len(TIP_CATEGORIES)))]
            version = list(PROMPT_EFFECT)[int(rng.integers(len(PROMPT_EFFECT)))]
            p = p_accept(
                who,
                category,
                local.hour + local.minute / 60,
                open_tasks=int(rng.integers(0, 12)),
                overdue=int(rng.integers(0, 5)),
                due_today=int(rng.integers(0, 3)),
                tips_shown_7d=int(rng.integers(0, 20)),
                prompt_version=version,
            )
            rows.append(
                {
                    "user_id": who.user_id,
                    "event_timestamp": pd.Timestamp(at),
                    "category": category,
                    "prompt_version": version,
                    "oracle_p_accept": p,
                    "accepted": int(rng.random() < p),
                }
            )
    return pd.DataFrame(rows)


def test_the_preferred_hour_prior_is_the_rounded_normal_around_the_active_hour():
    hours, prior = hour_prior(22.5)
    at = dict(zip(hours, prior, strict=True))
    assert prior.sum() == pytest.approx(1.0)
    # round(22.5 + z): 22 for z in [-1, 0), 23 for [0, 1), 24 = 0 for [1, 2).
    assert at[22.0] == pytest.approx(norm.cdf(0) - norm.cdf(-1), abs=1e-6)
    assert at[23.0] == pytest.approx(norm.cdf(1) - norm.cdf(0), abs=1e-6)
    assert at[0.0] == pytest.approx(norm.cdf(2) - norm.cdf(1), abs=1e-6)
    assert 12.0 not in at


def test_the_first_day_is_predicted_from_the_persona_alone():
    who = user()
    rows = impressions(who, days=1, per_day=6)
    post = history_posteriors(rows, users_frame(who))
    assert post["post_base_logit"].to_numpy() == pytest.approx(PERSONA.base_logit)
    expected = [PERSONA.receptivity[c] for c in rows["category"]]
    assert post["post_receptivity"].to_numpy() == pytest.approx(expected)


def test_an_outcome_is_seen_only_from_the_midnight_after_its_window_closed():
    who = user()
    rows = impressions(who, days=4, per_day=5, seed=3)
    before = history_posteriors(rows, users_frame(who))
    day = rows["event_timestamp"].dt.floor("D")
    flipped = rows.copy()
    third_day = day == day.unique()[2]
    flipped.loc[third_day, "accepted"] = 1 - flipped.loc[third_day, "accepted"]
    after = history_posteriors(flipped, users_frame(who))
    unchanged = day <= day.unique()[2]
    pd.testing.assert_frame_equal(before[unchanged], after[unchanged])
    assert (before.loc[~unchanged, "p_history"] != after.loc[~unchanged, "p_history"]).all()


def test_a_long_history_finds_the_traits_and_the_observable_ceiling():
    # A keen user (about 1 in 4 accepted) whose hour the prior makes unlikely (0.14): enough
    # outcomes for the likelihood to overrule it.
    who = user(preferred_hour=0, base_logit=PERSONA.base_logit + 1.2)
    rows = impressions(who, days=200, per_day=8, seed=7)
    post = history_posteriors(rows, users_frame(who))
    last = rows["event_timestamp"] >= START + timedelta(days=190)
    assert post.loc[last, "post_preferred_hour"].eq(0).all()
    # Outcomes tell only base_logit + receptivity[category] apart; the prior splits it.
    truth = [who.base_logit + who.receptivity[c] for c in rows.loc[last, "category"]]
    estimate = post.loc[last, "post_base_logit"] + post.loc[last, "post_receptivity"]
    # ~400 outcomes a category: a standard error of ~0.1 on the logit scale.
    assert np.abs(estimate.to_numpy() - truth).max() < 0.25
    ceiling = observable_p_accept(
        rows.loc[last, "oracle_p_accept"].to_numpy(), rows.loc[last, "prompt_version"].to_numpy()
    )
    predicted = post.loc[last, "p_history"].to_numpy()
    assert np.abs(predicted - ceiling).mean() < 0.02
    assert np.corrcoef(predicted, ceiling)[0, 1] > 0.98
