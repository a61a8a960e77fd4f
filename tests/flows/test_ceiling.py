"""The scorer's ceilings: the observable ceiling checked by hand and against a tiny world, the
ceiling model's inputs, and the metrics that carry them."""

import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from feature_repo.categories import TIP_CATEGORIES
from feature_repo.scorer_versions import SCORER_VERSIONS, TIP_SCORER_V2
from flows.modeling.ceiling import (
    ceiling_inputs,
    ceiling_model_inputs,
    fit_ceiling_model,
    history_bound,
    observable_ceiling,
)
from flows.modeling.evaluation import evaluate
from flows.modeling.scorer_models import CANDIDATES
from flows.modeling.training_set import TrainingSet
from flows.simulation.world import (
    PROMPT_EFFECT,
    PROMPT_PROPENSITY,
    SimUser,
    World,
    observable_p_accept,
    p_accept,
)
from service.api.prompt_versions import RELEASED_PROMPT_VERSIONS

COLUMNS = TIP_SCORER_V2.columns

END = datetime(2026, 11, 20, tzinfo=UTC)
USER = SimUser(
    user_id="u000000",
    persona="parent",
    timezone="Europe/Berlin",
    preferred_hour=9,
    first_day=0,
    base_logit=-1.0,
    receptivity={c: 0.5 if c == "focus" else -0.5 for c in TIP_CATEGORIES},
)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_the_observable_ceiling_by_hand():
    # A focus tip at the preferred hour with a task due today, nothing shown this week:
    # logit -1 + 0.5 + 0.5 = 0 before the prompt version's effect (0, 0.15 or 0.3).
    p = {v: p_accept(USER, "focus", 9.0, 1, 0, 1, 0, v) for v in RELEASED_PROMPT_VERSIONS}
    assert p["v1"] == 0.5 and p["v3-few-shot"] == pytest.approx(sigmoid(0.3))
    by_hand = (0.5 + 0.5374298453437496 + 0.574442516811659) / 3  # = 0.5372908
    # Whichever version was drawn, the ceiling is the same: the versions' uniform average.
    drawn = list(p)
    ceiling = observable_p_accept(np.array([p[v] for v in drawn]), np.array(drawn))
    assert ceiling == pytest.approx([by_hand] * 3, abs=1e-12)
    # The world draws versions uniformly: each a third of the time.
    assert set(PROMPT_PROPENSITY) == set(RELEASED_PROMPT_VERSIONS)
    assert all(share == 1 / 3 for share in PROMPT_PROPENSITY.values())


def test_an_oracle_p_of_one_half_drawn_with_the_strongest_version():
    # logit(0.5) - 0.3 = -0.3: the versions give sigmoid(-0.3), sigmoid(-0.15), sigmoid(0).
    [ceiling] = observable_p_accept(np.array([0.5]), np.array(["v3-few-shot"]))
    assert ceiling == pytest.approx((0.4255574832 + 0.4625701547 + 0.5) / 3, abs=1e-9)
    assert max(PROMPT_EFFECT.values()) == PROMPT_EFFECT["v3-few-shot"] == 0.3


def test_on_a_finite_sample_the_ceiling_may_outrank_the_oracle():
    # Two tips with the same true p: the oracle cannot tell them apart (AUC 0.5); the ceiling
    # ranks the one drawn with the weaker version higher, and here that one was accepted.
    # So ceiling AUC <= oracle AUC holds in expectation only, not row for row.
    y, oracle, version = np.array([1, 0]), np.array([0.5, 0.5]), np.array(["v1", "v3-few-shot"])
    m = evaluate(y, oracle, oracle=oracle, ceiling=observable_p_accept(oracle, version))
    assert (m.oracle_auc, m.ceiling_auc) == (0.5, 1.0)


def _inputs_of(user: SimUser, impression, earlier: list[datetime]) -> dict:
    """p_accept's arguments but the prompt version, from what /score sees: the request, the
    impressions logged before it, and the user's traits."""
    zone = ZoneInfo(user.timezone)
    at, tasks = impression.timestamp, impression.context.tasks
    local = at.astimezone(zone)
    return {
        "user": user,
        "category": impression.category,
        "local_hour": local.hour + local.minute / 60,
        "open_tasks": len(tasks),
        "overdue": sum(t.due is not None and t.due < at for t in tasks),
        "due_today": sum(
            t.due is not None and t.due.astimezone(zone).date() == local.date() for t in tasks
        ),
        "tips_shown_7d": sum(at - timedelta(days=7) <= s < at for s in earlier),
    }


def test_on_a_tiny_world_the_ceiling_is_the_oracle_averaged_over_versions():
    # Everything else p_accept reads is knowable at /score time: rebuilt from the request and
    # the log, each version's p averages to the ceiling, and the drawn one is the oracle's.
    world = World(users=3, days=10, seed=5, end=END)
    users = {u.user_id: u for u in world.users}
    shown: dict[str, list[datetime]] = {}
    oracle, drawn, every = [], [], []
    for event in world.events():
        if event.type != "impression":
            continue
        inputs = _inputs_of(users[event.user_id], event, shown.setdefault(event.user_id, []))
        shown[event.user_id].append(event.timestamp)
        p = {v: p_accept(**inputs, prompt_version=v) for v in RELEASED_PROMPT_VERSIONS}
        assert p[event.prompt_version] == pytest.approx(event.oracle_p_accept, abs=1e-12)
        oracle.append(event.oracle_p_accept)
        drawn.append(event.prompt_version)
        every.append(p)
    assert len(oracle) > 30 and len(set(drawn)) == len(RELEASED_PROMPT_VERSIONS)
    averaged = [np.mean(list(p.values())) for p in every]
    ceiling = observable_p_accept(np.array(oracle), np.array(drawn))
    assert ceiling == pytest.approx(averaged, abs=1e-12)
    # Had another version been drawn, the ceiling would be the same.
    for version in RELEASED_PROMPT_VERSIONS:
        other = observable_p_accept(np.array([p[version] for p in every]), [version] * len(every))
        assert other == pytest.approx(ceiling, abs=1e-12)


def rows(users: list[str], categories: list[str], hours: list[int]) -> pd.DataFrame:
    out = pd.DataFrame(0.0, index=range(len(users)), columns=list(COLUMNS))
    out["hour_of_day"] = hours
    out["tip_accept_rate_28d"] = 0.2
    return out.assign(
        user_id=pd.array(users, dtype="string[pyarrow]"),
        category=categories,
        oracle_p_accept=0.5,
        prompt_version="v1",
        accepted=[i % 2 for i in range(len(users))],
    )


def world_users() -> pd.DataFrame:
    other = USER.model_copy(update={"user_id": "u000001", "preferred_hour": 22, "base_logit": -2.0})
    return pd.DataFrame([u.model_dump() for u in (USER, other)])


@pytest.mark.parametrize("version", SCORER_VERSIONS.values(), ids=SCORER_VERSIONS)
def test_the_ceiling_model_reads_each_users_true_traits(version):
    x = ceiling_inputs(
        rows(["u000001", "u000000", "u000000"], ["focus", "focus", "review"], [23, 12, 9]),
        world_users(),
        version.columns,
    )
    assert list(x.columns) == list(ceiling_model_inputs(version.columns))
    assert list(x["true_base_logit"]) == [-2.0, -1.0, -1.0]
    assert list(x["true_receptivity"]) == [0.5, 0.5, -0.5]
    # The hour features follow the true preferred hour (22 and 9), not the estimate (0).
    assert list(x["preferred_hour"]) == [22.0, 9.0, 9.0]
    assert list(x["hour_gap"]) == [1.0, 3.0, 0.0]
    assert list(x["in_preferred_window"]) == [1.0, 0.0, 1.0]
    if "focus_x_hour_gap" in version.columns:  # and what crosses the gap with the category
        assert list(x["focus_x_hour_gap"]) == [1.0, 3.0, 0.0]
        assert list(x["review_x_hour_gap"]) == [0.0, 0.0, 0.0]


def test_without_the_worlds_truth_there_is_no_ceiling():
    stranger = rows(["u000009"], ["focus"], [9])
    assert ceiling_inputs(stranger, world_users(), COLUMNS) is None
    assert observable_ceiling(stranger.assign(oracle_p_accept=None)) is None
    data = TrainingSet(
        train=stranger, valid=stranger, validation_start=END, as_of=END, columns=COLUMNS
    )
    assert fit_ceiling_model(CANDIDATES["logistic_regression"], data, None) is None
    assert fit_ceiling_model(CANDIDATES["logistic_regression"], data, world_users()) is None


def test_the_ceiling_model_is_scored_on_the_validation_rows():
    train = rows(["u000000", "u000001"] * 20, ["focus"] * 40, list(range(24)) + [9] * 16)
    valid = rows(["u000001", "u000000", "u000000"], ["focus"] * 3, [1, 2, 3])
    data = TrainingSet(train=train, valid=valid, validation_start=END, as_of=END, columns=COLUMNS)
    model = fit_ceiling_model(CANDIDATES["logistic_regression"], data, world_users())
    assert model.p_accept.shape == (3,) and model.fit_seconds >= 0


def test_metrics_carry_four_aucs_and_the_ratios_to_each_ceiling():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.01, 0.6, 5000)
    y = (rng.random(truth.size) < truth).astype(int)
    noisy = truth + rng.normal(0, 0.1, truth.size)
    m = evaluate(y, noisy, oracle=truth, ceiling=truth, ceiling_model=truth, bound=truth)
    assert m.ceiling_auc == m.oracle_auc == m.ceiling_model_auc == m.bound_auc
    assert m.auc_to_ceiling == pytest.approx(m.auc / m.ceiling_auc) and m.auc_to_ceiling < 1
    assert m.auc_to_bound == pytest.approx(m.auc / m.bound_auc)
    line = m.discrimination()
    for part in (
        "observable ceiling AUC",
        "AUC/ceiling",
        "oracle AUC",
        "ceiling model AUC",
        "history bound AUC",
        "AUC/bound",
    ):
        assert part in line
    bare = evaluate(y, noisy).discrimination()
    assert "observable ceiling AUC unknown (AUC/ceiling -)" in bare
    assert bare.endswith("ceiling model AUC unknown | history bound AUC unknown (AUC/bound -)")


def test_the_history_bound_scores_the_validation_rows_from_earlier_outcomes():
    # One user, 6 days: 5 impressions a day, the last two days validate.
    start = END - timedelta(days=6)
    stamps = [start + timedelta(days=d, hours=8 + h) for d in range(6) for h in range(5)]
    category = [TIP_CATEGORIES[i % len(TIP_CATEGORIES)] for i in range(len(stamps))]
    local = [t.astimezone(ZoneInfo(USER.timezone)) for t in stamps]
    oracle = [
        p_accept(USER, c, t.hour + t.minute / 60, 3, 0, 0, 2, "v1")
        for c, t in zip(category, local, strict=True)
    ]
    frame = pd.DataFrame(
        {
            "user_id": USER.user_id,
            "event_timestamp": pd.to_datetime(stamps),
            "category": category,
            "prompt_version": "v1",
            "oracle_p_accept": oracle,
            "accepted": [i % 3 == 0 for i in range(len(stamps))],
        }
    ).astype({"accepted": "int64"})
    split = END - timedelta(days=2)
    data = TrainingSet(
        train=frame[frame.event_timestamp < split],
        valid=frame[frame.event_timestamp >= split],
        validation_start=split,
        as_of=END,
        columns=COLUMNS,
    )
    users = pd.DataFrame([USER.model_dump()])
    bound = history_bound(data, users)
    assert bound.shape == (10,) and ((bound > 0) & (bound < 1)).all()
    # A validation row is scored from the outcomes before its day: other outcomes on the first
    # validation day move the second day's scores, not its own.
    first_day = data.valid.event_timestamp < split + timedelta(days=1)
    flipped = data.valid.copy()
    flipped.loc[first_day, "accepted"] = 1 - flipped.loc[first_day, "accepted"]
    moved = history_bound(TrainingSet(data.train, flipped, split, END, COLUMNS), users)
    assert moved[:5] == pytest.approx(bound[:5]) and (moved[5:] != bound[5:]).all()
    assert history_bound(data, None) is None
    assert history_bound(data, users.assign(user_id="someone-else")) is None
    assert history_bound(data, users.assign(persona="retired")) is None
    odd = TrainingSet(data.train.assign(category="finance"), data.valid, split, END, COLUMNS)
    assert history_bound(odd, users) is None
