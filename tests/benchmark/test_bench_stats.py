"""Benchmark statistics on synthetic grids whose answer is known by construction."""

import time

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import cohen_kappa_score

from benchmark import power, stats
from benchmark.stats import (
    bootstrap_ci,
    comparisons,
    holm,
    judge_variance,
    krippendorff_alpha_interval,
    paired_tests,
    rank_stability,
    weighted_kappa,
)

COMPONENTS = ["relevance", "actionability", "tone", "format_ok", "overlong"]
BASE_WEIGHTS = {"relevance": 1, "actionability": 1, "tone": 1, "format_ok": 2, "overlong": -1}


def grid(
    offsets: dict[str, float],
    *,
    scenarios: int = 16,
    samples: int = 2,
    scenario_sd: float = 0.2,
    cell_scenario_sd: float = 0.0,
    noise: float = 0.1,
    seed: int = 0,
) -> pd.DataFrame:
    """Composite = 3 + scenario difficulty (shared by every cell) + cell offset
    + cell-by-scenario effect (shared by the samples of one cell and scenario) + item noise."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, scenario_sd, scenarios)
    rows = []
    for cell, offset in offsets.items():
        effect = rng.normal(0, cell_scenario_sd, scenarios)
        rows += [
            (cell, f"s{s:02d}", k, 3 + difficulty[s] + offset + effect[s] + rng.normal(0, noise))
            for s in range(scenarios)
            for k in range(samples)
        ]
    return pd.DataFrame(rows, columns=["cell", "scenario", "sample", "composite"])


def items(cell: str, diffs_by_scenario: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            (cell, scenario, k, value)
            for scenario, values in diffs_by_scenario.items()
            for k, value in enumerate(values)
        ],
        columns=["cell", "scenario", "sample", "composite"],
    )


def as_items(scores: pd.DataFrame) -> pd.DataFrame:
    """Every item its own scenario: the naive analysis that ignores clustering."""
    return scores.assign(scenario=scores["scenario"] + "/" + scores["sample"].astype(str))


# bootstrap_ci


def test_a_cell_one_point_better_has_a_disjoint_higher_interval():
    ci = bootstrap_ci(grid({"A": 1.0, "B": 0.0}))
    a, b = ci["A"], ci["B"]
    assert a.low > b.high
    assert a.mean - b.mean == pytest.approx(1.0, abs=0.1)
    assert a.low <= a.mean <= a.high and (a.n_items, a.n_scenarios) == (32, 16)


def test_every_cell_shares_the_resampled_scenarios():
    # B is A + 1 on every item: with a common draw per replicate its interval is A's shifted.
    a = grid({"A": 0.0}, scenario_sd=1.0)
    b = a.assign(cell="B", composite=a["composite"] + 1)
    ci = bootstrap_ci(pd.concat([a, b]))
    assert ci["B"].low == pytest.approx(ci["A"].low + 1)
    assert ci["B"].high == pytest.approx(ci["A"].high + 1)


def test_cluster_interval_is_wider_than_an_item_interval_when_scenarios_are_correlated():
    # Ten identical samples per scenario: there are 8 independent values, not 80.
    scores = grid({"A": 0.0}, scenarios=8, samples=10, scenario_sd=1.0, noise=0.01)
    cluster, naive = bootstrap_ci(scores)["A"], bootstrap_ci(as_items(scores))["A"]
    assert cluster.mean == pytest.approx(naive.mean)
    assert (cluster.high - cluster.low) > 2 * (naive.high - naive.low)


def test_a_single_scenario_gives_the_point_as_interval():
    ci = bootstrap_ci(items("A", {"only": [1.0, 2.0, 6.0]}))["A"]
    assert ci.low == ci.mean == ci.high == 3.0


def test_bootstrap_is_fast_on_a_full_grid():
    scores = grid({f"cell{i:02d}": 0.0 for i in range(20)}, samples=3)
    started = time.perf_counter()
    bootstrap_ci(scores, n_boot=2000)
    assert time.perf_counter() - started < 1.0


# holm


def test_holm_matches_a_hand_computed_example():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.7, 0.9]) == [1.0, 1.0]
    assert holm([]) == []


# paired_tests


def test_three_positive_scenarios_give_the_exact_two_sided_p():
    # Sign patterns of (+1, +2, +3): only all-plus and all-minus reach |6|, so p = 2/8.
    a = items("A", {"s1": [1.0], "s2": [2.0], "s3": [3.0]})
    b = a.assign(cell="B", composite=0.0)
    (test,) = paired_tests(pd.concat([a, b]))
    assert (test.a, test.b, test.n_pairs, test.n_scenarios) == ("A", "B", 3, 3)
    assert test.mean_diff == pytest.approx(2.0)
    assert test.p_value == pytest.approx(0.25)


def test_signs_flip_per_scenario_not_per_item():
    # Twenty positive differences but only two scenarios: 2 of 4 patterns are as extreme.
    a = items("A", {"s1": [1.0] * 10, "s2": [1.0] * 10})
    (test,) = paired_tests(pd.concat([a, a.assign(cell="B", composite=0.0)]))
    assert test.n_pairs == 20 and test.p_value == pytest.approx(0.5)


def test_a_true_difference_is_significant_after_holm_and_a_null_one_is_not():
    tests = {(t.a, t.b): t for t in paired_tests(grid({"A": 1.0, "B": 0.0, "C": 0.0}))}
    assert list(tests) == [("A", "B"), ("A", "C"), ("B", "C")]
    assert {t.family for t in tests.values()} == {"all pairs"}
    assert tests["A", "B"].significant and tests["A", "B"].mean_diff == pytest.approx(1, abs=0.1)
    assert tests["A", "B"].p_value == pytest.approx(2 / 2**16)
    assert tests["A", "B"].p_holm == pytest.approx(3 * 2 / 2**16)
    assert not tests["B", "C"].significant


def test_false_positive_rate_of_identical_cells_is_near_alpha():
    # Same distribution, but the samples of one cell and scenario share an effect. Flipping
    # per scenario stays calibrated; treating every item as independent would not (about 0.4).
    def rejection_rate(as_clusters) -> float:
        rejections = [
            paired_tests(as_clusters(grid(null, **shape, seed=seed)), n_perm=2000)[0].p_value < 0.05
            for seed in range(100)
        ]
        return float(np.mean(rejections))

    null = {"A": 0.0, "B": 0.0}
    shape = {"samples": 4, "scenario_sd": 0.5, "cell_scenario_sd": 0.5, "noise": 0.2}
    assert rejection_rate(lambda scores: scores) <= 0.1
    assert rejection_rate(as_items) > 0.2


def test_monte_carlo_p_agrees_with_exact_enumeration(monkeypatch):
    scores = grid({"A": 0.05, "B": 0.0}, noise=0.3, seed=3)
    (exact,) = paired_tests(scores)
    monkeypatch.setattr(stats, "EXACT_MAX_SCENARIOS", 0)
    (sampled,) = paired_tests(scores, n_perm=20_000)
    assert 0.05 < exact.p_value < 0.95
    assert sampled.p_value == pytest.approx(exact.p_value, abs=0.02)


def test_monte_carlo_p_is_floored_by_the_plus_one_correction():
    (test,) = paired_tests(grid({"A": 1.0, "B": 0.0}, scenarios=20), n_perm=999)
    assert 1 / 1000 <= test.p_value <= 3 / 1000 and test.significant


def test_cells_without_common_items_are_reported_untested():
    a = items("A", {"s1": [1.0], "s2": [2.0]})
    b = items("B", {"s3": [1.0], "s4": [2.0]})
    (test,) = paired_tests(pd.concat([a, b]))
    assert (test.n_pairs, test.n_scenarios, test.mean_diff, test.mde) == (0, 0, None, None)
    assert test.p_value == test.p_holm == 1.0 and not test.significant


def test_significance_is_p_holm_at_most_alpha():
    # Ten scenarios all favouring A: p = p_holm = 2/1024 exactly, the boundary itself.
    a = items("A", {f"s{s}": [1.0 + s] for s in range(10)})
    scores = pd.concat([a, a.assign(cell="B", composite=0.0)])
    (at,) = paired_tests(scores, alpha=2 / 1024)
    (below,) = paired_tests(scores, alpha=np.nextafter(2 / 1024, 0))
    assert at.p_holm == 2 / 1024 and at.significant
    assert not below.significant


# comparisons: families


def two_by_two(**offsets: float) -> pd.DataFrame:
    """Cells model|prompt of models big and small on prompts v1 and v2."""
    scores = grid(offsets, scenarios=12, samples=1, noise=0.3, seed=7)
    parts = scores["cell"].str.split("|", expand=True)
    return scores.assign(model=parts[0], prompt_version=parts[1])


SCORES = two_by_two(**{"big|v1": 1.0, "big|v2": 0.6, "small|v1": 0.0, "small|v2": 0.1})


def by_family(tests: list[stats.PairTest]) -> dict[str, list[tuple[str, str]]]:
    families: dict[str, list[tuple[str, str]]] = {}
    for test in tests:
        families.setdefault(test.family, []).append((test.a, test.b))
    return families


def test_every_cell_is_tested_against_the_best_then_within_models_and_prompts():
    tests = comparisons(SCORES)

    assert by_family(tests) == {
        "vs best big|v1": [("big|v2", "big|v1"), ("small|v1", "big|v1"), ("small|v2", "big|v1")],
        "prompts of big": [("big|v1", "big|v2")],
        "prompts of small": [("small|v1", "small|v2")],
        "models on v1": [("big|v1", "small|v1")],
        "models on v2": [("big|v2", "small|v2")],
    }
    main, within = tests[:3], tests[3:]
    # Holm within the main family only (3 tests); a family of one keeps its p-value.
    assert [t.p_holm for t in main] == pytest.approx(holm([t.p_value for t in main]))
    assert all(t.p_holm == t.p_value for t in within)
    wide = SCORES.pivot(index="scenario", columns="cell", values="composite")
    assert main[1].mean_diff == pytest.approx((wide["small|v1"] - wide["big|v1"]).mean())
    assert main[1].mean_diff < 0  # other - control, and the control is the best
    assert main[1].significant and not within[1].significant
    # The same sign-flip test as all pairs: the same p-value with a and b swapped.
    all_pairs = {(t.a, t.b): t for t in paired_tests(SCORES)}
    assert main[1].p_value == all_pairs["big|v1", "small|v1"].p_value
    assert main[1].mean_diff == pytest.approx(-all_pairs["big|v1", "small|v1"].mean_diff)


def test_a_named_control_and_all_pairs_replace_the_best():
    named = by_family(comparisons(SCORES, control="small|v2"))
    assert named["vs control small|v2"] == [
        ("big|v1", "small|v2"),
        ("big|v2", "small|v2"),
        ("small|v1", "small|v2"),
    ]
    every = comparisons(SCORES, pairs="all")
    assert every[:6] == paired_tests(SCORES)
    assert list(by_family(every)) == [
        "all pairs",
        "prompts of big",
        "prompts of small",
        "models on v1",
        "models on v2",
    ]
    with pytest.raises(ValueError, match="not a cell"):
        comparisons(SCORES, control="huge|v1")
    with pytest.raises(ValueError, match="pairs 'best'"):
        comparisons(SCORES, pairs="all", control="small|v2")


def test_a_tie_for_best_goes_to_the_first_name():
    tied = two_by_two(**{"small|v1": 0.0, "big|v1": 0.0})
    tied = tied.assign(composite=tied.groupby("scenario")["composite"].transform("mean"))
    assert stats.best_cell(tied) == "big|v1"
    assert comparisons(tied)[0].family == "vs best big|v1"


def test_each_test_reports_the_mde_of_its_family():
    tests = comparisons(SCORES)
    wide = SCORES.pivot(index="scenario", columns="cell", values="composite")
    for test in tests:
        size = sum(other.family == test.family for other in tests)
        sd = (wide[test.a] - wide[test.b]).std(ddof=1)
        assert test.mde == pytest.approx(power.mde(sd, 12, comparisons=size))
    # Four scenarios: no sign pattern reaches 0.05 (2/16), so nothing is detectable.
    few = SCORES[SCORES["scenario"] < "s04"]
    assert {t.mde for t in comparisons(few)} == {None}


# rank_stability


def components(means: dict[str, dict[str, float]], *, scenarios: int = 4) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"cell": cell, "scenario": f"s{s}", "sample": 0, **values}
            for cell, values in means.items()
            for s in range(scenarios)
        ]
    )


def test_a_cell_dominating_every_component_stays_on_top():
    levels = {"best": 5, "mid": 3, "low": 1}
    frame = components(
        {
            cell: {
                "relevance": level,
                "actionability": level,
                "tone": level,
                "format_ok": level / 5,
                "overlong": 1 - level / 5,
            }
            for cell, level in levels.items()
        }
    )
    result = rank_stability(frame, BASE_WEIGHTS)
    assert result.base_ranking == ["best", "mid", "low"]
    assert result.n_weight_sets == 2 * len(BASE_WEIGHTS) + 200
    assert result.top_cell_kept == 1.0
    assert result.kendall_tau_min == result.kendall_tau_mean == 1.0
    assert result.rank_range == {"best": (1, 1), "mid": (2, 2), "low": (3, 3)}


def test_cells_trading_relevance_against_format_swap_places():
    # Base: relevant 4 + 2 * 0.1 = 4.2 vs formatted 2 + 2 * 1 = 4.0; doubling format flips it.
    shared = {"actionability": 3, "tone": 3, "overlong": 0}
    frame = components(
        {
            "relevant": {"relevance": 4, "format_ok": 0.1, **shared},
            "formatted": {"relevance": 2, "format_ok": 1, **shared},
        }
    )
    result = rank_stability(frame, BASE_WEIGHTS)
    assert result.base_ranking == ["relevant", "formatted"]
    assert 0 < result.top_cell_kept < 1
    assert result.kendall_tau_min == -1.0
    assert result.rank_range == {"relevant": (1, 2), "formatted": (1, 2)}


def test_a_penalty_stays_a_penalty():
    # Identical but for overlong: if a weight's sign flipped, "long" would sometimes win.
    frame = components(
        {
            "short": {"relevance": 3, "overlong": 0},
            "long": {"relevance": 3, "overlong": 1},
        }
    )
    result = rank_stability(frame, {"relevance": 1, "overlong": -1}, n_random=500, seed=1)
    assert result.rank_range["short"] == (1, 1)


# agreement


@pytest.mark.parametrize("weights", ["quadratic", "linear"])
@pytest.mark.parametrize("seed", range(5))
def test_weighted_kappa_matches_sklearn(seed, weights):
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 6, 60)
    b = np.clip(a + rng.integers(-2, 3, 60), 1, 5)
    expected = cohen_kappa_score(a, b, labels=[1, 2, 3, 4, 5], weights=weights)
    assert weighted_kappa(a, b, weights=weights) == pytest.approx(expected)


def test_weighted_kappa_perfect_agreement_is_one():
    assert weighted_kappa([1, 3, 5, 2], [1, 3, 5, 2]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="outside categories"):
        weighted_kappa([1, 6], [1, 2])


def test_weighted_kappa_is_undefined_exactly_where_sklearn_gives_nan():
    # Both judges always answer 4: no chance disagreement, kappa 0/0.
    with pytest.warns(UndefinedMetricWarning):
        expected = cohen_kappa_score([4, 4, 4], [4, 4, 4], labels=[1, 2, 3, 4, 5])
    assert np.isnan(expected) and weighted_kappa([4, 4, 4], [4, 4, 4]) is None
    # One constant judge is not enough: a judge always answering 5 against one always
    # answering 4 disagrees on every item, and kappa is defined (0).
    for a, b in (([4, 4, 4], [5, 5, 5]), ([4, 4, 5], [4, 4, 4])):
        expected = cohen_kappa_score(a, b, labels=[1, 2, 3, 4, 5], weights="quadratic")
        assert weighted_kappa(a, b) == expected == 0.0


def test_krippendorff_alpha_reproduces_the_canonical_example():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": 4 observers,
    # 12 units, missing values; the published interval alpha is 0.849.
    nan = np.nan
    ratings = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
        [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
    ]
    assert krippendorff_alpha_interval(ratings) == pytest.approx(0.849, abs=5e-4)


def test_krippendorff_alpha_on_a_hand_computed_example():
    # Units (1,1), (2,2), (3,4); n = 6 pairable values.
    # D_o = (0 + 0 + 2 * 1^2 / (2 - 1)) / 6 = 1/3.
    # D_e: sum of (v_i - v_j)^2 over the 30 ordered pairs of 1,1,2,2,3,4 is 2 * 6 * 41/6 = 82,
    # so D_e = 82/30 and alpha = 1 - (1/3) / (82/30) = 36/41.
    assert krippendorff_alpha_interval([[1, 2, 3], [1, 2, 4]]) == pytest.approx(36 / 41)


def test_krippendorff_alpha_degenerate_is_undefined_and_perfect_agreement_is_one():
    assert krippendorff_alpha_interval([[3, 3, 3], [3, 3, np.nan]]) is None
    # The lone 5 of the last item is not pairable, so every pairable value is 3.
    assert krippendorff_alpha_interval([[3, 3, 5], [3, 3, np.nan]]) is None
    assert krippendorff_alpha_interval([[1, 4, 5], [1, 4, 5]]) == pytest.approx(1.0)


# judge_variance


def test_judge_variance_per_criterion():
    rows = [
        ("i1", "tone", [3, 3, 3]),  # sd 0
        ("i2", "tone", [2, 4]),  # sd sqrt(2), unstable
        ("i3", "tone", [5]),  # one repeat: ignored
        ("i1", "relevance", [4, 4]),
        ("i2", "relevance", [2, 2]),
    ]
    repeats = pd.DataFrame(
        [
            (item, criterion, r, score)
            for item, criterion, scores in rows
            for r, score in enumerate(scores)
        ],
        columns=["item", "criterion", "repeat", "score"],
    )
    result = judge_variance(repeats).criteria
    assert result["tone"].n_items == 2
    assert result["tone"].mean_within_sd == pytest.approx(np.sqrt(2) / 2)
    assert result["tone"].share_unstable == 0.5
    assert (result["relevance"].mean_within_sd, result["relevance"].share_unstable) == (0.0, 0.0)
