"""Experiment analytics: reward attribution, the statistics, and the report on a real event log.

Synthetic data whose answer is known by construction: hand-counted event logs, A/A sequences
for the sequential test's error rate, and splits with a known sample ratio.
"""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import quad
from scipy.stats import norm
from typer.testing import CliRunner

from flows.experiments.report import PLOT_FILE, REPORT_FILE, ExperimentResult, experiment_report
from flows.experiments.rewards import ExperimentNotLogged, decision_rewards
from flows.experiments.stats import (
    UNLOGGED,
    evaluate_guardrails,
    guardrail_window,
    mixture_log_lr,
    msprt,
    msprt_p_values,
    sample_ratio_mismatch,
    wilson_interval,
)
from service.events.lake import EventLake, open_lake
from service.events.models import ATTRIBUTION_WINDOW, Decision, Feedback
from service.experiments.config import ExperimentsConfig, Guardrails
from service.tracking import REPORT_EXPERIMENT, registry_client
from tipml.experiments_cli import experiments_app

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
AS_OF = T0 + timedelta(hours=10)
MINUTE = timedelta(minutes=1)


def decision(
    n: int,
    at: datetime,
    arm: str,
    *,
    outcome: str = "ok",
    experiment: str = "prompt-test",
    propensity: float = 0.5,
    latency_ms: float = 300.0,
) -> Decision:
    return Decision(
        event_id=f"dec-{experiment}-{n}",
        user_id=f"u{n % 7:06d}",
        timestamp=at,
        request_id=f"req-{experiment}-{n}",
        tip_id=f"tip-{experiment}-{n}",
        experiment=experiment,
        arm=arm,
        propensity=propensity,
        policy="weighted",
        policy_version="w1",
        outcome=outcome,
        latency_ms=latency_ms,
    )


def feedback(d: Decision, after: timedelta, reaction: str, k: int = 0) -> Feedback:
    return Feedback(
        event_id=f"fb-{d.tip_id}-{k}",
        user_id=d.user_id,
        timestamp=d.timestamp + after,
        tip_id=d.tip_id,
        reaction=reaction,
        prompt_version=d.arm,
    )


def hand_counted_events() -> list[Decision | Feedback]:
    """Eleven decisions whose rewards as of AS_OF are worked out in the comments."""
    old = T0 + timedelta(hours=1)
    late = AS_OF - 10 * MINUTE  # inside the window at AS_OF
    v1 = [decision(i, old + i * MINUTE, "v1") for i in range(4)]
    v1.append(decision(4, old + 4 * MINUTE, "v1", outcome="error", latency_ms=9000.0))
    v1.append(decision(5, late, "v1"))
    v3 = [decision(10 + i, old + i * MINUTE, "v3-few-shot", outcome="fallback") for i in range(4)]
    v3.append(decision(14, late, "v3-few-shot"))
    return [
        *v1,
        *v3,
        feedback(v1[0], 5 * MINUTE, "accepted"),  # 1
        feedback(v1[1], 5 * MINUTE, "dismissed"),  # 0, dismissed
        feedback(v1[2], 5 * MINUTE, "ignored"),  # 0
        # v1[3]: no feedback, window closed -> 0; v1[4]: error -> no reward;
        # v1[5]: no feedback, window open -> pending
        feedback(v3[0], 2 * MINUTE, "accepted"),  # 1
        feedback(v3[1], 30 * MINUTE, "accepted"),  # 1 ...
        feedback(v3[1], 40 * MINUTE, "dismissed", k=1),  # ... the first answer wins
        feedback(v3[2], 3 * MINUTE, "dismissed"),  # 0, dismissed
        feedback(v3[3], ATTRIBUTION_WINDOW + MINUTE, "accepted"),  # after the window -> 0
        feedback(v3[4], 20 * MINUTE, "accepted"),  # after AS_OF -> still pending
        # After AS_OF: neither the decision nor its feedback exists yet.
        decision(99, AS_OF + MINUTE, "v1"),
    ]


@pytest.fixture
def hand_log(settings) -> EventLake:
    log = open_lake(settings)
    log.append(hand_counted_events())
    return log


# -- rewards ------------------------------------------------------------------------------------


def test_rewards_follow_feedback_window_and_as_of(hand_log):
    frame = decision_rewards(hand_log, AS_OF).set_index("event_id")
    assert len(frame) == 11  # the decision after AS_OF is not there
    expected = {  # event -> (reward, dismissed, settled, shown)
        "dec-prompt-test-0": (1, 0, True, True),
        "dec-prompt-test-1": (0, 1, True, True),
        "dec-prompt-test-2": (0, 0, True, True),
        "dec-prompt-test-3": (0, 0, True, True),
        "dec-prompt-test-4": (None, None, False, False),
        "dec-prompt-test-5": (None, None, False, True),
        "dec-prompt-test-10": (1, 0, True, True),
        "dec-prompt-test-11": (1, 0, True, True),
        "dec-prompt-test-12": (0, 1, True, True),
        "dec-prompt-test-13": (0, 0, True, True),
        "dec-prompt-test-14": (None, None, False, True),
    }
    for event_id, (reward, dismissed, settled, shown) in expected.items():
        row = frame.loc[event_id]
        got = (
            None if pd.isna(row.reward) else int(row.reward),
            None if pd.isna(row.dismissed) else int(row.dismissed),
            bool(row.settled),
            bool(row.shown),
        )
        assert got == (reward, dismissed, settled, shown), event_id
    assert frame.loc["dec-prompt-test-11", "reaction"] == "accepted"
    # A reward settles when its feedback arrives, or when the window closes without one.
    row = frame.loc["dec-prompt-test-3"]
    assert row.settled_at == row.timestamp + ATTRIBUTION_WINDOW
    row = frame.loc["dec-prompt-test-0"]
    assert row.settled_at == row.feedback_at


def test_settled_rewards_never_change_later(hand_log):
    """What a report saw as settled stays so: the bandit and the sequential test rely on it."""
    final = decision_rewards(hand_log, AS_OF + timedelta(days=1)).set_index("event_id")
    # Minute by minute through the windows of the early decisions, then around AS_OF.
    minutes = [*range(60, 190), *range(580, 660, 5)]
    for minute in minutes:
        frame = decision_rewards(hand_log, T0 + minute * MINUTE).set_index("event_id")
        settled = frame[frame.settled]
        assert (settled.reward == final.loc[settled.index, "reward"]).all(), minute


def test_rewards_need_an_aware_as_of(hand_log):
    with pytest.raises(ValueError, match="timezone"):
        decision_rewards(hand_log, datetime(2026, 11, 2, 12))


# -- statistics ---------------------------------------------------------------------------------


def test_wilson_matches_hand_computation():
    # 8/10 at 95%: z = 1.959964, center = (0.8 + z^2/20) / (1 + z^2/10) = 0.716740,
    # half = z * sqrt(0.8 * 0.2 / 10 + z^2 / 400) / (1 + z^2/10) = 0.226578.
    interval = wilson_interval(8, 10)
    assert interval.low == pytest.approx(0.716740 - 0.226578, abs=2e-6)
    assert interval.high == pytest.approx(0.716740 + 0.226578, abs=2e-6)
    assert wilson_interval(0, 0).model_dump() == {"low": 0.0, "high": 1.0}
    assert wilson_interval(0, 20).low == 0.0


@pytest.mark.parametrize(("theta_hat", "var"), [(0.0, 1e-4), (0.03, 2e-4), (-0.08, 5e-5)])
def test_mixture_likelihood_ratio_matches_its_definition(theta_hat, var):
    """The closed form against the integral it stands for."""
    tau = 0.05
    numerator, _ = quad(
        lambda t: norm.pdf(theta_hat, t, np.sqrt(var)) * norm.pdf(t, 0, tau), -1, 1, points=[0]
    )
    expected = np.log(numerator / norm.pdf(theta_hat, 0, np.sqrt(var)))
    got = mixture_log_lr(np.array([theta_hat]), np.array([var]), tau)[0]
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-9)


def naive_peeking_rejects(in_arm: np.ndarray, reward: np.ndarray, peeks: np.ndarray) -> bool:
    """A two-proportion z-test at each peek, stopping at the first |z| > 1.96."""
    n_a, n_c = np.cumsum(in_arm)[peeks], np.cumsum(~in_arm)[peeks]
    s_a, s_c = np.cumsum(reward * in_arm)[peeks], np.cumsum(reward * ~in_arm)[peeks]
    pooled = (s_a + s_c) / (n_a + n_c)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_c))
    z = np.abs(s_a / n_a - s_c / n_c) / np.where(se > 0, se, np.inf)
    return bool((z > norm.ppf(0.975)).any())


def test_msprt_stays_valid_under_peeking_where_a_naive_test_does_not():
    rng = np.random.default_rng(7)
    runs, length = 200, 3000
    peeks = np.arange(50, length + 1, 50) - 1  # look after every 50 observations
    always_valid = naive = 0
    for _ in range(runs):
        in_arm = rng.random(length) < 0.5
        reward = (rng.random(length) < 0.23).astype(float)
        always_valid += bool((msprt_p_values(in_arm, reward)[peeks] <= 0.05).any())
        naive += naive_peeking_rejects(in_arm, reward, peeks)
    assert always_valid / runs <= 0.07
    assert naive / runs >= 0.2  # peeking 60 times at a fixed-n test: the familiar inflation
    assert naive >= 3 * max(always_valid, 1)


def test_msprt_finds_a_real_effect_and_its_interval_matches_the_p_value():
    rng = np.random.default_rng(3)
    p_control, p_arm = 0.23, 0.29
    in_arm = rng.random(20_000) < 0.5
    reward = (rng.random(20_000) < np.where(in_arm, p_arm, p_control)).astype(float)
    result = msprt(in_arm, reward)
    assert result.significant and result.p_value <= 0.05
    assert result.ci.low > 0  # the always-valid interval excludes 0 exactly when p <= alpha
    assert result.ci.low <= p_arm - p_control <= result.ci.high
    p_path = msprt_p_values(in_arm, reward)
    assert (np.diff(p_path) <= 0).all()  # a running minimum
    assert p_path[-1] == pytest.approx(result.p_value)
    # The same data without the effect: no rejection, and 0 stays inside the interval.
    null = msprt(in_arm, (rng.random(20_000) < p_control).astype(float))
    assert not null.significant and null.ci.low <= 0 <= null.ci.high


def split(counts: dict[str, int], propensity: dict[str, float]) -> pd.DataFrame:
    arms = [arm for arm, n in counts.items() for _ in range(n)]
    return pd.DataFrame(
        {"arm": arms, "propensity": [propensity[a] for a in arms], "policy_version": "w1"}
    )


def test_srm_flags_a_skewed_split_and_not_a_fair_one():
    weights = {"v1": 0.5, "v3-few-shot": 0.5}
    skewed = sample_ratio_mismatch(split({"v1": 5500, "v3-few-shot": 4500}, weights))
    assert skewed.mismatch and skewed.p_value < 1e-6
    assert skewed.expected == {"v1": 5000.0, "v3-few-shot": 5000.0}
    fair_n = int(np.random.default_rng(0).binomial(10_000, 0.5))
    fair = sample_ratio_mismatch(split({"v1": fair_n, "v3-few-shot": 10_000 - fair_n}, weights))
    assert not fair.mismatch and fair.p_value > 0.001


def test_srm_counts_the_mass_of_arms_never_logged():
    # Three arms at 1/3 each, but v2-mentor never shows up: its decisions went missing.
    third = {"v1": 1 / 3, "v3-few-shot": 1 / 3}
    result = sample_ratio_mismatch(split({"v1": 500, "v3-few-shot": 500}, third))
    assert result.observed[UNLOGGED] == 0
    assert result.expected[UNLOGGED] == pytest.approx(1000 / 3)
    assert result.mismatch


def test_srm_is_not_checked_when_propensities_vary_within_a_version():
    frame = split({"v1": 50, "v3-few-shot": 50}, {"v1": 0.5, "v3-few-shot": 0.5})
    frame.loc[0, "propensity"] = 0.7
    result = sample_ratio_mismatch(frame)
    assert result.p_value is None and not result.mismatch and "varies" in result.detail


def arm_frame(arm: str, n: int, *, dismissed: int, errors: int, latency_ms: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "arm": arm,
            "outcome": ["error"] * errors + ["ok"] * (n - errors),
            "settled": [False] * errors + [True] * (n - errors),
            "dismissed": [pd.NA] * errors + [1] * dismissed + [0] * (n - errors - dismissed),
            "latency_ms": latency_ms,
        }
    )


def test_guardrails_pause_a_breaching_arm_but_never_control():
    frame = pd.concat(
        [
            arm_frame("v1", 300, dismissed=200, errors=30, latency_ms=100.0),
            arm_frame("v2-mentor", 300, dismissed=200, errors=30, latency_ms=100.0),
            arm_frame("v3-few-shot", 300, dismissed=10, errors=0, latency_ms=9000.0),
        ]
    )
    frame["dismissed"] = frame["dismissed"].astype("Int64")
    limits = Guardrails(
        max_dismiss_rate=0.5, max_llm_error_rate=0.05, max_p95_latency_ms=2000, min_decisions=100
    )
    results = evaluate_guardrails(frame, limits, control="v1")
    assert results["v2-mentor"].action == "pause"
    assert len(results["v2-mentor"].breaches) == 2  # dismissals 200/270 and errors 30/300
    assert results["v2-mentor"].llm_error_rate == pytest.approx(0.1)
    assert results["v3-few-shot"].action == "pause"
    assert results["v3-few-shot"].breaches == ["p95 latency 9000 ms > 2000 ms"]
    assert results["v1"].action == "continue" and len(results["v1"].breaches) == 2
    # A limit left out (None, as in experiments.yaml) is not checked.
    unlimited = limits.model_copy(update={"max_p95_latency_ms": None})
    assert evaluate_guardrails(frame, unlimited, "v1")["v3-few-shot"].action == "continue"
    # With fewer decisions than min_decisions nothing is judged yet.
    patient = evaluate_guardrails(frame, limits.model_copy(update={"min_decisions": 1000}), "v1")
    assert all(r.action == "continue" and not r.breaches for r in patient.values())
    # The dismiss rate waits for min_decisions settled impressions, not decisions: v2-mentor
    # has 300 decisions but 270 impressions.
    settling = evaluate_guardrails(frame, limits.model_copy(update={"min_decisions": 280}), "v1")
    assert settling["v2-mentor"].breaches == ["LLM error rate 0.100 > 0.05"]


def test_the_guardrail_window_is_the_lookback_before_as_of():
    limits = Guardrails(lookback_days=7)
    frame = pd.DataFrame(
        {"timestamp": pd.to_datetime([AS_OF - timedelta(days=d) for d in (8, 7, 1)], utc=True)}
    )
    assert len(guardrail_window(frame, limits, AS_OF)) == 2


# -- the report ---------------------------------------------------------------------------------


def simulated_experiment(n: int, seed: int) -> list[Decision | Feedback]:
    """A 50/50 test where v3-few-shot truly accepts 0.35 against v1's 0.20."""
    rng = np.random.default_rng(seed)
    events: list[Decision | Feedback] = []
    for i in range(n):
        arm = "v3-few-shot" if rng.random() < 0.5 else "v1"
        d = decision(i, T0 + i * 5 * timedelta(seconds=1), arm, experiment="big-test")
        accepted = rng.random() < (0.35 if arm == "v3-few-shot" else 0.20)
        events += [d, feedback(d, 2 * MINUTE, "accepted" if accepted else "ignored")]
    return events


def test_report_counts_by_hand_and_logs_the_plot_to_mlflow(settings, hand_log):
    hand_log.append(simulated_experiment(4000, seed=11))
    limits = Guardrails(
        max_dismiss_rate=0.2, max_llm_error_rate=0.1, max_p95_latency_ms=60_000, min_decisions=1
    )
    report = experiment_report(settings, as_of=AS_OF, guardrails={"prompt-test": limits})
    assert [e.experiment for e in report.experiments] == ["big-test", "prompt-test"]
    big, hand = report.experiments

    assert hand.control == "v1" and hand.decisions == 11 and hand.limits == limits
    # big-test is not in experiments.yaml: the default limits.
    assert big.limits == Guardrails() and big.control == "v1"
    v1, v3 = hand.arms
    assert (v1.arm, v1.decisions, v1.errors, v1.impressions, v1.pending, v1.accepted) == (
        "v1",
        6,
        1,
        4,
        1,
        1,
    )
    assert v1.accept_rate == 0.25 and v1.dismiss_rate == 0.25
    assert v1.accept_ci == wilson_interval(1, 4)
    assert (v3.decisions, v3.errors, v3.impressions, v3.pending, v3.accepted) == (5, 0, 4, 1, 2)
    assert v3.accept_rate == 0.5 and v3.dismiss_rate == 0.25
    assert v1.guardrail.llm_error_rate == pytest.approx(1 / 6)
    assert v1.guardrail.action == "continue" and len(v1.guardrail.breaches) == 2  # control
    assert v3.guardrail.action == "pause"
    assert v3.guardrail.breaches == ["dismiss rate 0.250 > 0.2"]
    assert v1.comparison is None
    assert v3.comparison.n_control == 4 and v3.comparison.p_value == 1.0  # before burn-in

    control, arm = big.arms
    assert control.impressions + arm.impressions == 4000
    assert arm.comparison.significant and arm.comparison.ci.low > 0
    assert arm.comparison.difference == pytest.approx(arm.accept_rate - control.accept_rate)
    assert not big.srm.mismatch and big.srm.expected == {"v1": 2000.0, "v3-few-shot": 2000.0}

    summary = report.summary()
    assert "PAUSE v3-few-shot: dismiss rate" in summary
    assert "control over limit v1" in summary
    assert len(summary.splitlines()) <= 20

    client = registry_client(settings)
    runs = client.search_runs(
        [client.get_experiment_by_name(REPORT_EXPERIMENT).experiment_id],
        filter_string="tags.experiment = 'prompt-test'",
    )
    assert [r.info.run_id for r in runs] == [hand.run_id]
    assert runs[0].data.tags["as_of"] == AS_OF.isoformat()
    assert runs[0].data.metrics["v3-few-shot.accept_rate"] == 0.5
    assert {a.path for a in client.list_artifacts(hand.run_id)} == {PLOT_FILE, REPORT_FILE}
    plot = Path(urlparse(hand.plot_uri).path)
    assert plot.read_bytes().startswith(b"\x89PNG")
    logged = json.loads((plot.parent / REPORT_FILE).read_text())
    assert ExperimentResult.model_validate(logged) == hand


def test_report_takes_guardrails_and_control_from_experiments_yaml(settings):
    """The limits the bandit_update flow enforces: a configured experiment's, on its lookback
    window; the simulated world's experiment, not configured, gets Guardrails() and v1."""
    ab = ExperimentsConfig.from_yaml().active("prompt-ab")
    limits = ab.guardrails
    recent = AS_OF - timedelta(days=1)
    old = AS_OF - timedelta(days=limits.lookback_days + 1)
    n = limits.min_decisions + 20
    events = [decision(i, recent, "v1", experiment=ab.id) for i in range(n)]
    # v2-mentor: 10% of its requests fail, over the limit of 0.05.
    events += [
        decision(
            1000 + i,
            recent,
            "v2-mentor",
            experiment=ab.id,
            outcome="error" if i % 10 == 0 else "ok",
        )
        for i in range(n)
    ]
    # v3-few-shot: failures only before the window, and too few decisions inside it.
    events += [
        decision(2000 + i, old, "v3-few-shot", experiment=ab.id, outcome="error") for i in range(n)
    ]
    events += [decision(3000 + i, recent, "v3-few-shot", experiment=ab.id) for i in range(10)]
    # world-uniform: v2-mentor is slow; control v1 fails as well but is never paused.
    events += [
        decision(i, recent, "v1", experiment="world-uniform", outcome="error") for i in range(n)
    ]
    events += [
        decision(1000 + i, recent, "v2-mentor", experiment="world-uniform", latency_ms=7000.0)
        for i in range(n)
    ]
    # An experiment nobody configured, without a v1 arm: no control, nothing compared.
    events += [decision(i, recent, "v3-few-shot", experiment="no-control") for i in range(3)]
    open_lake(settings).append(events)

    report = experiment_report(settings, as_of=AS_OF)
    results = {e.experiment: e for e in report.experiments}
    assert set(results) == {"prompt-ab", "world-uniform", "no-control"}

    configured = results["prompt-ab"]
    assert configured.limits == limits and configured.control == ab.control
    verdicts = {a.arm: a.guardrail for a in configured.arms}
    assert verdicts["v2-mentor"].action == "pause"
    assert verdicts["v2-mentor"].breaches == ["LLM error rate 0.100 > 0.05"]
    assert verdicts["v1"].action == "continue" and not verdicts["v1"].breaches
    v3 = next(a for a in configured.arms if a.arm == "v3-few-shot")
    assert v3.decisions == n + 10 and v3.errors == n  # the whole log is reported ...
    assert v3.guardrail.decisions == 10 and v3.guardrail.action == "continue"  # ... judged: 7 days

    world = results["world-uniform"]
    assert world.limits == Guardrails() and world.control == "v1"
    verdicts = {a.arm: a.guardrail for a in world.arms}
    assert verdicts["v2-mentor"].breaches == ["p95 latency 7000 ms > 6000 ms"]
    assert verdicts["v2-mentor"].action == "pause"
    assert verdicts["v1"].action == "continue" and verdicts["v1"].llm_error_rate == 1.0

    lonely = results["no-control"]
    assert lonely.control is None and lonely.arms[0].comparison is None

    summary = report.summary()
    assert "PAUSE v2-mentor: LLM error rate 0.100 > 0.05" in summary
    assert "PAUSE v2-mentor: p95 latency 7000 ms > 6000 ms" in summary
    assert (
        "guardrails (last 7 days, min 100 decisions/impressions): dismiss rate <= 0.5, "
        "LLM error rate <= 0.05, p95 latency <= 6000 ms"
    ) in summary


def test_report_of_an_empty_log_says_so(settings):
    report = experiment_report(settings, as_of=AS_OF)
    assert report.experiments == [] and "no experiment decisions" in report.summary()
    with pytest.raises(ExperimentNotLogged, match="none"):
        experiment_report(settings, as_of=AS_OF, experiment="prompt-test")


def test_cli_report_prints_the_summary_and_names_a_bad_option(settings, hand_log):
    runner = CliRunner()
    args = ["report", "--as-of", AS_OF.isoformat(), "--experiment", "prompt-test"]
    result = runner.invoke(experiments_app, args, obj=settings)
    assert result.exit_code == 0, result.output
    assert "prompt-test as of 2026-11-02 18:00 UTC, control v1: 11 decisions" in result.output
    assert "plot: file://" in result.output
    unknown = runner.invoke(experiments_app, ["report", "--experiment", "nope"], obj=settings)
    assert unknown.exit_code == 2 and "--experiment" in unknown.output
    assert "prompt-test" in unknown.output
    bad_time = runner.invoke(experiments_app, ["report", "--as-of", "noon"], obj=settings)
    assert bad_time.exit_code == 2 and "--as-of" in bad_time.output
