"""Minimum detectable differences and plans, against closed forms and simulated tests."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import nct, norm, t, ttest_1samp

from benchmark import power, stats
from benchmark.power import DEFAULT_NOISE, Noise, check_design, mde, plan, reachable

# statsmodels 0.15.0: TTestPower().solve_power(effect_size=None, nobs=S, alpha=0.05 / m,
# power=0.8, alternative="two-sided"), the standardized MDE (delta / sd) of a paired t test.
# Its root finder stops within about 2e-6 in power, hence rel=5e-6 below.
STATSMODELS_EFFECT = [
    (10, 1, 0.9960019107624178),
    (10, 8, 1.434445729749674),
    (12, 3, 1.0779259223533912),
    (16, 1, 0.7494652785178323),
    (30, 36, 0.8091101422202711),
    (200, 1, 0.19906465946973934),
]


def t_power(delta: float, sd: float, scenarios: int, level: float) -> float:
    """Closed-form power of the two-sided paired t test on scenario means (noncentral t)."""
    df, nc = scenarios - 1, delta * math.sqrt(scenarios) / sd
    critical = t.ppf(1 - level / 2, df)
    return nct.sf(critical, df, nc) + nct.sf(critical, df, -nc)


@pytest.mark.parametrize(("scenarios", "comparisons", "effect"), STATSMODELS_EFFECT)
def test_mde_is_the_paired_t_tests_as_statsmodels_solves_it(scenarios, comparisons, effect):
    found = mde(2.5, scenarios, comparisons=comparisons)
    assert found == pytest.approx(2.5 * effect, rel=5e-6)
    # Exactly the closed form's root: power POWER at the MDE, to float precision.
    assert t_power(found, 2.5, scenarios, 0.05 / comparisons) == pytest.approx(0.8, abs=1e-9)


def test_mde_tends_to_the_normal_approximation():
    scenarios = 10**6
    normal = (norm.ppf(1 - 0.05 / 2) + norm.ppf(0.8)) * 3.0 / math.sqrt(scenarios)
    assert mde(3.0, scenarios) == pytest.approx(normal, rel=1e-6)
    assert mde(0.0, 20) == 0.0


def test_the_sign_flip_floor_makes_small_designs_undetectable():
    # The design: 10 scenarios, 36 comparisons; 2/1024 * 36 = 0.07 > 0.05.
    assert mde(1.0, 10, comparisons=36) is None
    assert mde(1.0, 10, comparisons=25) is not None  # 2/1024 * 25 = 0.049
    assert mde(1.0, 10, comparisons=26) is None  # 0.051
    assert mde(1.0, 5) is None and mde(1.0, 6) is not None  # 2/32 > 0.05 >= 2/64
    assert mde(1.0, 1) is None
    for m in (25, 26):  # the same boundary as the tests' own Holm-adjusted p-values
        smallest = stats.holm([2 / 1024] + [1.0] * (m - 1))[0]
        assert reachable(10, comparisons=m) == (smallest <= 0.05)
    with pytest.raises(ValueError):
        mde(-1.0, 10)


def sign_flip_power(delta: float, scenarios: int, level: float, *, reps: int, seed: int) -> float:
    """Share of `reps` simulated comparisons the benchmark's sign-flip test rejects at level.

    Each rep is one cell whose per-scenario difference from a noiseless control is
    N(delta, 1); each cell its own model and prompt, so no within-model family is added."""
    rng = np.random.default_rng(seed)
    values = rng.normal(delta, 1.0, size=(reps, scenarios))
    frame = pd.DataFrame(
        [
            (f"m{r}|p{r}", f"m{r}", f"p{r}", f"s{s:02d}", 0, values[r, s])
            for r in range(reps)
            for s in range(scenarios)
        ]
        + [("control|c", "control", "c", f"s{s:02d}", 0, 0.0) for s in range(scenarios)],
        columns=["cell", "model", "prompt_version", "scenario", "sample", "composite"],
    )
    tests = stats.comparisons(frame, control="control|c")
    assert len(tests) == reps
    return float(np.mean([power.is_significant(test.p_value, level) for test in tests]))


def test_sign_flip_test_has_the_promised_power_at_the_mde():
    # 14 scenarios, one comparison: far above the floor, where the t test stands in for the
    # sign-flip test. 1000 reps: the standard error of a power of 0.8 is 0.013.
    at = mde(1.0, 14)
    assert sign_flip_power(at, 14, 0.05, reps=1000, seed=1) == pytest.approx(0.8, abs=0.04)
    # The curve around it, so that 0.8 is not reached by any difference at all.
    assert sign_flip_power(0.75 * at, 14, 0.05, reps=1000, seed=2) < 0.65
    assert sign_flip_power(1.25 * at, 14, 0.05, reps=1000, seed=3) > 0.9


def test_near_its_floor_the_sign_flip_test_is_weaker_than_the_mde_says():
    # The caveat benchmark/power.py documents: 10 scenarios, alpha / 8 = 0.00625, three times
    # the floor 2/1024. The t test keeps its 80%; the sign-flip test reaches about 73%.
    at, level = mde(1.0, 10, comparisons=8), 0.05 / 8
    values = np.random.default_rng(4).normal(at, 1.0, size=(2000, 10))
    assert np.mean(ttest_1samp(values, 0, axis=1).pvalue <= level) == pytest.approx(0.8, abs=0.03)
    assert 0.66 < sign_flip_power(at, 10, level, reps=1000, seed=5) < 0.78


def test_samples_reduce_only_the_item_part_of_the_noise():
    assert Noise(scenario_sd=1.0, item_sd=0.0).sd(20) == 1.0
    assert Noise(scenario_sd=0.0, item_sd=2.0).sd(4) == pytest.approx(1.0)
    assert Noise(scenario_sd=3.0, item_sd=8.0).sd(4) == pytest.approx(5.0)
    assert DEFAULT_NOISE.item_sd == pytest.approx(math.sqrt(2) * power.DEFAULT_ITEM_SD)


def test_plan_is_the_cheapest_design_that_detects_the_difference():
    noise = Noise(scenario_sd=0.5, item_sd=2.0)
    result = plan(1.0, noise=noise, max_scenarios=16, max_samples=10, comparisons=3)

    assert result.feasible and (result.scenarios, result.samples) == (14, 5)
    assert result.mde == pytest.approx(mde(noise.sd(5), 14, comparisons=3))
    assert result.mde <= 1.0
    assert "14 scenarios x 5 samples (70 answers per cell)" in result.reason
    # Nothing with fewer answers per cell reaches 1.0 (16 x 4 = 64 comes closest).
    for scenarios in range(2, 17):
        for samples in range(1, 11):
            found = mde(noise.sd(samples), scenarios, comparisons=3)
            if scenarios * samples < 70:
                assert found is None or found > 1.0


def test_a_planned_design_has_its_power_with_scenario_and_item_noise():
    # Scenario effects N(0, 0.5) shared by a scenario's samples, item noise N(0, 2) each: the
    # per-scenario mean difference has the SD the plan assumed, whatever the split.
    noise = Noise(scenario_sd=0.5, item_sd=2.0)
    result = plan(1.0, noise=noise, max_scenarios=16, max_samples=10, comparisons=3)
    rng = np.random.default_rng(6)
    reps, scenarios, samples = 600, result.scenarios, result.samples
    effect = rng.normal(0, noise.scenario_sd, size=(reps, scenarios, 1))
    values = result.mde + effect + rng.normal(0, noise.item_sd, size=(reps, scenarios, samples))
    frame = pd.DataFrame(
        [
            (f"m{r}|p{r}", f"m{r}", f"p{r}", f"s{s:02d}", k, values[r, s, k])
            for r in range(reps)
            for s in range(scenarios)
            for k in range(samples)
        ]
        + [
            ("control|c", "control", "c", f"s{s:02d}", k, 0.0)
            for s in range(scenarios)
            for k in range(samples)
        ],
        columns=["cell", "model", "prompt_version", "scenario", "sample", "composite"],
    )
    tests = stats.comparisons(frame, control="control|c")
    rejected = np.mean([power.is_significant(test.p_value, 0.05 / 3) for test in tests])
    assert rejected == pytest.approx(0.8, abs=0.05)


def test_a_difference_out_of_reach_says_how_many_scenarios_it_needs():
    # The defaults on the tip set: 9 cells, each against the best (8 comparisons).
    result = plan(1.0, max_scenarios=10, max_samples=20, comparisons=8)
    sd = DEFAULT_NOISE.sd(20)

    assert not result.feasible and (result.scenarios, result.samples) == (10, 20)
    assert result.noise == DEFAULT_NOISE
    assert result.mde == pytest.approx(mde(sd, 10, comparisons=8))
    assert result.mde > 1.0
    assert mde(sd, 25, comparisons=8) <= 1.0 < mde(sd, 24, comparisons=8)
    assert "at 20 samples 25 scenarios would" in result.reason


def test_a_design_the_test_cannot_reject_in_plans_nothing():
    result = plan(3.0, max_scenarios=10, max_samples=20, comparisons=36)

    assert not result.feasible and result.mde is None
    assert "cannot reach alpha 0.05/36" in result.reason
    assert "at 20 samples 11 scenarios would" in result.reason
    assert mde(DEFAULT_NOISE.sd(20), 11, comparisons=36) <= 3.0
    with pytest.raises(ValueError, match="positive"):
        plan(0.0, max_scenarios=10, max_samples=20)


def test_a_design_check_is_the_mde_of_that_design_with_the_cheapest_plan_beside_it():
    small = check_design(
        1.0, scenarios=10, samples=1, max_scenarios=10, max_samples=20, comparisons=8
    )
    assert small.mde == mde(DEFAULT_NOISE.sd(1), 10, comparisons=8)
    assert not small.enough and not small.cheapest.feasible
    large = check_design(
        1.0, scenarios=240, samples=1, max_scenarios=240, max_samples=20, comparisons=8
    )
    assert large.enough and large.mde < 1.0
    assert large.cheapest.feasible and large.cheapest.scenarios <= 240
    # The cheapest: one scenario fewer at its samples would not do.
    cheapest = large.cheapest
    fewer = mde(DEFAULT_NOISE.sd(cheapest.samples), cheapest.scenarios - 1, comparisons=8)
    assert cheapest.mde <= 1.0 < fewer
    unreachable = check_design(5.0, scenarios=4, samples=20, max_scenarios=4, max_samples=20)
    assert unreachable.mde is None and not unreachable.enough
