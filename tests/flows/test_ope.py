"""Off-policy evaluation on logs simulated from the world's true prompt effects.

A uniform logging policy over the three prompt versions (propensity 1/3), accept probability
sigmoid(-1.2 + PROMPT_EFFECT[arm]); a candidate's true value is sum_a pi(a) p(a).
"""

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.experiments.ope import OpeParams, UnsupportedArms, evaluate_policy, off_policy_estimates
from flows.simulation.world import PROMPT_EFFECT
from service.events.lake import EventLake, open_lake
from service.events.models import Decision, Feedback
from tipml.experiments_cli import experiments_app

BASE_LOGIT = -1.2
ARMS = tuple(PROMPT_EFFECT)
P_ACCEPT = {arm: 1 / (1 + np.exp(-(BASE_LOGIT + effect))) for arm, effect in PROMPT_EFFECT.items()}
TARGET = {"v3-few-shot": 0.8, "v1": 0.1, "v2-mentor": 0.1}
SEEDS = 60
T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


def true_value(target: dict[str, float]) -> float:
    return sum(p * P_ACCEPT[arm] for arm, p in target.items())


def logged(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    arms = rng.choice(ARMS, n)
    reward = (rng.random(n) < np.array([P_ACCEPT[a] for a in arms])).astype(int)
    return pd.DataFrame(
        {
            "event_id": [f"d{i}" for i in range(n)],
            "arm": arms,
            "propensity": 1 / 3,
            "reward": pd.array(reward, dtype="Int64"),
        }
    )


def test_estimators_cover_the_true_value_and_dr_is_no_wider_than_ips():
    truth = true_value(TARGET)
    covered = {"ips": 0, "snips": 0, "dr": 0}
    width = {"ips": [], "snips": [], "dr": []}
    for seed in range(SEEDS):
        result = off_policy_estimates(logged(3000, seed), TARGET, seed=seed)
        for name in covered:
            estimate = getattr(result, name)
            covered[name] += estimate.low <= truth <= estimate.high
            width[name].append(estimate.high - estimate.low)
    for name, hits in covered.items():
        assert hits / SEEDS >= 0.85, (name, hits)
    assert np.mean(width["dr"]) <= np.mean(width["ips"])
    # Uniform logging against a 0.8/0.1/0.1 target: weights 2.4 and 0.3.
    assert result.max_weight == pytest.approx(2.4)
    assert 0.4 * result.n < result.effective_sample_size < 0.6 * result.n


def test_snips_handles_a_degenerate_target():
    target = {"v3-few-shot": 1.0}
    covered = 0
    for seed in range(SEEDS):
        rows = logged(3000, seed)
        result = off_policy_estimates(rows, target)
        arm_mean = rows.loc[rows.arm == "v3-few-shot", "reward"].astype(float).mean()
        assert result.snips.value == pytest.approx(arm_mean)  # exactly that arm's mean
        assert result.effective_sample_size == pytest.approx((rows.arm == "v3-few-shot").sum())
        covered += result.snips.low <= P_ACCEPT["v3-few-shot"] <= result.snips.high
    assert covered / SEEDS >= 0.85


def test_a_per_decision_policy_gives_what_the_same_fixed_policy_gives():
    rows = logged(2000, 5)
    fixed = off_policy_estimates(rows, TARGET)
    per_row = off_policy_estimates(rows, lambda row: TARGET)
    assert per_row == fixed
    # A context-aware candidate: it may read any logged field of the decision.
    greedy = off_policy_estimates(
        rows, lambda row: {"v3-few-shot": 1.0} if row["event_id"] < "d5" else {"v1": 1.0}
    )
    assert 0 < greedy.snips.value < 1


def test_impossible_candidates_are_refused():
    rows = logged(600, 1)
    with pytest.raises(UnsupportedArms, match="v9"):
        off_policy_estimates(rows[rows.arm != "v9"], {"v1": 0.5, "v9": 0.5})
    with pytest.raises(UnsupportedArms, match="v2-mentor"):
        off_policy_estimates(rows[rows.arm != "v2-mentor"], {"v1": 0.5, "v2-mentor": 0.5})
    with pytest.raises(ValueError, match=r"sum to 0\.9"):
        off_policy_estimates(rows, {"v1": 0.9})
    with pytest.raises(ValueError, match="decision d0"):
        off_policy_estimates(rows, lambda row: {"v1": -0.5, "v3-few-shot": 1.5})
    with pytest.raises(ValueError, match="settled"):
        off_policy_estimates(rows.assign(reward=pd.NA), TARGET)


def test_policy_option_validation_names_the_option():
    ok = OpeParams(experiment="prompt-test", policy={"v1": "0.2", "v3-few-shot": "0.8"})
    assert ok.policy == {"v1": 0.2, "v3-few-shot": 0.8}
    for policy in ({"v1": 0.5}, {"v1": -0.2, "v3-few-shot": 1.2}, {"v1": "half", "v3": 0.5}):
        with pytest.raises(ValueError, match="policy"):
            OpeParams(experiment="prompt-test", policy=policy)


@pytest.fixture
def uniform_log(settings) -> EventLake:
    """900 decisions logged uniformly over the three arms, each with a reaction."""
    rng = np.random.default_rng(4)
    events: list[Decision | Feedback] = []
    for i in range(900):
        arm = str(rng.choice(ARMS))
        at = T0 + timedelta(seconds=10 * i)
        d = Decision(
            event_id=f"dec-{i}",
            user_id=f"u{i % 50:06d}",
            timestamp=at,
            request_id=f"req-{i}",
            tip_id=f"tip-{i}",
            experiment="prompt-test",
            arm=arm,
            propensity=1 / 3,
            policy="weighted",
            policy_version="uniform-1",
            outcome="error" if i % 100 == 0 else "ok",
            latency_ms=250.0,
        )
        reaction = "accepted" if rng.random() < P_ACCEPT[arm] else "ignored"
        events += [
            d,
            Feedback(
                event_id=f"fb-{i}",
                user_id=d.user_id,
                timestamp=at + timedelta(minutes=3),
                tip_id=d.tip_id,
                reaction=reaction,
                prompt_version=arm,
            ),
        ]
    log = open_lake(settings)
    log.append(events)
    return log


def test_evaluate_policy_reads_only_settled_shown_decisions(settings, uniform_log):
    report = evaluate_policy(settings, "prompt-test", TARGET, T0 + timedelta(days=1))
    assert report.errors == 9 and report.pending == 0
    assert report.result.n == 891
    assert report.result.snips.low <= true_value(TARGET) <= report.result.snips.high


def test_cli_ope_prints_the_estimates_and_names_bad_options(settings, uniform_log):
    runner = CliRunner()
    base = ["ope", "--experiment", "prompt-test", "--as-of", "2026-11-03T08:00:00"]
    result = runner.invoke(
        experiments_app, [*base, "--policy", "v3-few-shot=0.8,v1=0.1,v2-mentor=0.1"], obj=settings
    )
    assert result.exit_code == 0, result.output
    for label in ("IPS", "SNIPS", "DR", "logged", "effective sample size"):
        assert label in result.output
    assert "891 settled decisions (0 pending, 9 errors not counted)" in result.output
    bad = {
        "v3-few-shot=0.8,v1=0.1": "sum to 0.9",
        "v3-few-shot=0.8,v1=-0.1,v2-mentor=0.3": "greater than or equal to 0",
        "v3-few-shot=0.8,v1=lots": "valid number",
        "v3-few-shot=0.8,v7=0.2": "v7 not arms of experiment",
        "v3-few-shot:0.8": "arm=probability",
        "v1=0.5,v1=0.5": "given twice",
    }
    for policy, message in bad.items():
        result = runner.invoke(experiments_app, [*base, "--policy", policy], obj=settings)
        assert result.exit_code == 2, (policy, result.output)
        assert "--policy" in result.output and message in result.output, policy
    unknown = runner.invoke(
        experiments_app, ["ope", "--experiment", "nope", "--policy", "v1=1"], obj=settings
    )
    assert unknown.exit_code == 2 and "--experiment" in unknown.output
