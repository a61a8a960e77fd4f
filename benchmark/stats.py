"""Statistics for comparing benchmark cells: intervals, paired tests, rank stability, agreement.

Paired tests come in Holm families (each cell against a control, or all pairs; prompt versions
within a model; models on a prompt version), every test with the difference it could detect
(benchmark/power.py). Significant means p_holm <= alpha throughout.

A cell here is one (model, prompt_version) group, the `cell` column of benchmark/items.py's
frames (`model|prompt_version`), not one collected answer (the ledger's Cell, an item here),
evaluated on a fixed set of scenarios, possibly several samples per scenario. Items of one
scenario are correlated, so the scenario is the resampling and permutation unit throughout.
Every function is pure: data frames in, frozen models out.
"""

import itertools
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from scipy.stats import kendalltau

from benchmark import power

# Up to 2**16 sign patterns are enumerated exactly; beyond that the test samples patterns.
EXACT_MAX_SCENARIOS = 16
ALL_PAIRS = "all pairs"  # the family of paired_tests
# Which cells comparisons() tests in its main family: each against one control, or every pair.
Pairs = Literal["best", "all"]


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True)


class CellEstimate(_Result):
    cell: str
    mean: float
    low: float
    high: float
    n_items: int
    n_scenarios: int


class PairTest(_Result):
    family: str  # the Holm family the test was corrected in
    a: str
    b: str
    n_pairs: int
    n_scenarios: int
    mean_diff: float | None  # a - b; None when the cells share no item
    p_value: float
    p_holm: float
    significant: bool  # p_holm <= alpha
    # Difference detectable with power.POWER at alpha / family size, from the observed SD of
    # per-scenario mean differences (benchmark/power.py); None when the cells share fewer than
    # two scenarios or too few for the sign-flip test to reach that level.
    mde: float | None


class RankStability(_Result):
    base_ranking: list[str]  # best first
    n_weight_sets: int  # perturbed sets compared with the base
    kendall_tau_min: float
    kendall_tau_mean: float
    top_cell_kept: float
    rank_range: dict[str, tuple[int, int]]  # cell -> (best, worst) rank, 1 = best


class CriterionVariance(_Result):
    criterion: str
    n_items: int  # items with at least two repeats
    mean_within_sd: float
    share_unstable: float  # items whose repeats were not all equal


class JudgeVariance(_Result):
    criteria: dict[str, CriterionVariance]


def _require(frame: pd.DataFrame, columns: Iterable[str]) -> None:
    missing = sorted(set(columns) - set(frame.columns))
    if missing:
        raise ValueError(f"missing columns: {missing}")


def bootstrap_ci(
    scores: pd.DataFrame, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> dict[str, CellEstimate]:
    """Per-cell mean composite with a scenario-cluster percentile bootstrap interval.

    Each replicate draws the scenarios with replacement once and applies that draw to every
    cell, so the intervals of different cells share their resampling noise and are comparable.
    A scenario drawn twice counts twice. With a single scenario every replicate equals the
    point estimate, so the interval degenerates to it: one cluster carries no information
    about between-scenario variation. Replicates in which a cell has no item (it lacks some
    scenarios) are left out of that cell's interval.
    """
    _require(scores, ("cell", "scenario", "composite"))
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    cells = sorted(scores["cell"].unique())
    scenarios = sorted(scores["scenario"].unique())
    grouped = scores.groupby(["cell", "scenario"])["composite"].agg(["sum", "count"])
    full = pd.MultiIndex.from_product([cells, scenarios], names=["cell", "scenario"])
    grouped = grouped.reindex(full, fill_value=0)
    sums = grouped["sum"].to_numpy(float).reshape(len(cells), len(scenarios))
    counts = grouped["count"].to_numpy(float).reshape(len(cells), len(scenarios))

    rng = np.random.default_rng(seed)
    n = len(scenarios)
    # How often each scenario is drawn per replicate: the same as n indices with replacement.
    draws = rng.multinomial(n, np.full(n, 1 / n), size=n_boot).astype(float)
    boot_sums, boot_counts = draws @ sums.T, draws @ counts.T
    boot_means = np.divide(
        boot_sums, boot_counts, out=np.full_like(boot_sums, np.nan), where=boot_counts > 0
    )
    tail = (1 - level) / 2 * 100
    lows, highs = np.nanpercentile(boot_means, [tail, 100 - tail], axis=0)
    return {
        cell: CellEstimate(
            cell=cell,
            mean=float(sums[i].sum() / counts[i].sum()),
            low=float(lows[i]),
            high=float(highs[i]),
            n_items=int(counts[i].sum()),
            n_scenarios=int(np.count_nonzero(counts[i])),
        )
        for i, cell in enumerate(cells)
    }


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni step-down adjusted p-values, in the input order."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (len(p) - np.arange(len(p)))
    adjusted = np.empty_like(p)
    # The running maximum keeps the adjustment monotone in the raw p-values.
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted.tolist()


@cache
def _all_sign_patterns(k: int) -> np.ndarray:
    return ((np.arange(2**k)[:, None] >> np.arange(k)) & 1) * 2.0 - 1.0


def _sign_flip_p(cluster_sums: np.ndarray, n_perm: int, rng: np.random.Generator) -> float:
    """Two-sided p-value of the summed difference under per-scenario sign flips.

    The number of pairs is fixed across flips, so comparing sums is comparing mean differences.
    """
    k = cluster_sums.size
    exact = k <= EXACT_MAX_SCENARIOS
    signs = _all_sign_patterns(k) if exact else rng.choice((-1.0, 1.0), size=(n_perm, k))
    flipped = np.abs(signs @ cluster_sums)
    # Summation order differs between the matmul and the plain sum; the tolerance keeps the
    # observed pattern and its mirror image counted as at least as extreme.
    tolerance = 1e-9 * np.abs(cluster_sums).sum()
    extreme = np.count_nonzero(flipped >= abs(cluster_sums.sum()) - tolerance)
    return extreme / len(signs) if exact else (extreme + 1) / (n_perm + 1)


def _paired_table(scores: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Composites as (scenario, sample) x cell, and the scenario of each row."""
    _require(scores, ("cell", "scenario", "sample", "composite"))
    # pivot refuses a duplicated (cell, scenario, sample), which would make pairing ambiguous.
    table = scores.pivot(index=["scenario", "sample"], columns="cell", values="composite")
    return table, table.index.get_level_values("scenario").to_numpy()


def _family(
    name: str,
    pairs: Iterable[tuple[str, str]],
    table: pd.DataFrame,
    scenario_of_row: np.ndarray,
    *,
    n_perm: int,
    rng: np.random.Generator,
    alpha: float,
) -> list[PairTest]:
    """Sign-flip tests of a - b for each pair, Holm-corrected together as one family.

    Items are paired on (scenario, sample). Signs flip per scenario, not per item, because the
    items of a scenario are not independent. Pairs sharing no item are reported with
    p_value = p_holm = 1.0 and are not counted in the family: nothing was tested.
    """
    rows, sds = [], []
    for a, b in pairs:
        both = (table[a].notna() & table[b].notna()).to_numpy()
        diff = (table[a] - table[b]).to_numpy()[both]
        _, cluster = np.unique(scenario_of_row[both], return_inverse=True)
        cluster_sums = np.bincount(cluster, weights=diff)
        tested = diff.size > 0
        rows.append(
            {
                "family": name,
                "a": a,
                "b": b,
                "n_pairs": diff.size,
                "n_scenarios": cluster_sums.size,
                "mean_diff": float(diff.mean()) if tested else None,
                "p_value": _sign_flip_p(cluster_sums, n_perm, rng) if tested else 1.0,
                "p_holm": 1.0,
            }
        )
        scenario_means = cluster_sums / np.bincount(cluster)
        sds.append(float(np.std(scenario_means, ddof=1)) if cluster_sums.size >= 2 else None)

    tested = [row for row in rows if row["n_pairs"] > 0]
    for row, adjusted in zip(tested, holm([row["p_value"] for row in tested]), strict=True):
        row["p_holm"] = adjusted
    return [
        PairTest(
            **row,
            significant=power.is_significant(row["p_holm"], alpha),
            mde=None
            if sd is None
            else power.mde(sd, row["n_scenarios"], alpha=alpha, comparisons=len(tested)),
        )
        for row, sd in zip(rows, sds, strict=True)
    ]


def paired_tests(
    scores: pd.DataFrame, *, n_perm: int = 10_000, seed: int = 0, alpha: float = power.ALPHA
) -> list[PairTest]:
    """Paired sign-flip permutation test for every pair of cells, one Holm family "all pairs".

    Pairs are (a, b) with a before b by name; _family says how items pair and what an untested
    pair reports.
    """
    table, scenario_of_row = _paired_table(scores)
    pairs = itertools.combinations(sorted(table.columns), 2)
    rng = np.random.default_rng(seed)
    return _family(ALL_PAIRS, pairs, table, scenario_of_row, n_perm=n_perm, rng=rng, alpha=alpha)


def best_cell(scores: pd.DataFrame) -> str:
    """The cell with the highest mean composite; a tie goes to the first name, as on the
    leaderboard."""
    _require(scores, ("cell", "composite"))
    means = scores.groupby("cell")["composite"].mean()
    return min(means.index, key=lambda cell: (-means[cell], cell))


def comparisons(
    scores: pd.DataFrame,
    *,
    pairs: Pairs = "best",
    control: str | None = None,
    n_perm: int = 10_000,
    seed: int = 0,
    alpha: float = power.ALPHA,
) -> list[PairTest]:
    """Paired tests in families, each Holm-corrected on its own: the questions a compare asks.

    First the main family: with pairs="best", every other cell against `control` (default the
    best cell), a = the other cell and b = the control, so mean_diff is other - control and the
    family has k - 1 tests; with pairs="all", paired_tests' all-pairs family (a control makes
    no sense there and is refused). Then, whatever the main family, the prompt versions of each
    model and the models on each prompt version, all pairs within each, one family per model
    and per prompt version; groups of one cell have none. Scores need model and prompt_version
    columns for those. Every family's sign patterns are drawn from a generator seeded anew, so
    adding a family does not change another's p-values.
    """
    _require(scores, ("cell", "model", "prompt_version"))
    groups = scores[["cell", "model", "prompt_version"]].drop_duplicates()
    if groups["cell"].duplicated().any():
        raise ValueError("a cell has more than one (model, prompt_version)")
    table, scenario_of_row = _paired_table(scores)
    options = {"n_perm": n_perm, "alpha": alpha}

    def family(name: str, members: Iterable[tuple[str, str]]) -> list[PairTest]:
        rng = np.random.default_rng(seed)
        return _family(name, members, table, scenario_of_row, rng=rng, **options)

    cells = sorted(table.columns)
    if pairs == "all":
        if control is not None:
            raise ValueError("a control is compared with every cell: it needs pairs 'best'")
        tests = family(ALL_PAIRS, itertools.combinations(cells, 2))
    elif pairs == "best":
        if control is not None and control not in cells:
            raise ValueError(f"control {control!r} is not a cell; cells: {', '.join(cells)}")
        chosen = control or best_cell(scores)
        name = f"vs control {chosen}" if control else f"vs best {chosen}"
        tests = family(name, [(cell, chosen) for cell in cells if cell != chosen])
    else:
        raise ValueError(f"pairs must be 'best' or 'all', got {pairs!r}")

    for column, label in (("model", "prompts of {}"), ("prompt_version", "models on {}")):
        for key, group in groups.groupby(column, sort=True):
            tests += family(label.format(key), itertools.combinations(sorted(group["cell"]), 2))
    return tests


def rank_stability(
    components: pd.DataFrame,
    base_weights: Mapping[str, float],
    *,
    n_random: int = 200,
    seed: int = 0,
) -> RankStability:
    """How much the ranking of cells by mean composite depends on the rubric weights.

    The composite is the weighted sum of the component columns named in base_weights. Weight
    sets: each weight halved and doubled one at a time, then n_random sets with every weight
    multiplied by exp(U(-ln 2, ln 2)). Factors are positive, so a penalty stays a penalty.
    Tau and top_cell_kept compare each perturbed set with the base; rank_range spans all sets.
    Ties in mean composite are ranked by cell name. With one cell, tau is 1.0 by definition.
    """
    names = list(base_weights)
    _require(components, ["cell", *names])
    cells = sorted(components["cell"].unique())
    # The composite is linear in the components, so ranking by it needs only component means.
    means = components.groupby("cell")[names].mean().loc[cells].to_numpy(float)

    k = len(names)
    rng = np.random.default_rng(seed)
    one_at_a_time = [np.where(np.eye(k, dtype=bool), factor, 1.0) for factor in (0.5, 2.0)]
    random = np.exp(rng.uniform(-np.log(2), np.log(2), size=(n_random, k)))
    factors = np.vstack([np.ones((1, k)), *one_at_a_time, random])
    weight_sets = factors * np.array([base_weights[name] for name in names], dtype=float)

    order = np.argsort(-(weight_sets @ means.T), axis=1, kind="stable")  # best first
    ranks = np.argsort(order, axis=1) + 1
    taus = (
        [kendalltau(ranks[0], r).statistic for r in ranks[1:]]
        if len(cells) > 1
        else [1.0] * (len(ranks) - 1)
    )
    return RankStability(
        base_ranking=[cells[i] for i in order[0]],
        n_weight_sets=len(ranks) - 1,
        kendall_tau_min=float(np.min(taus)),
        kendall_tau_mean=float(np.mean(taus)),
        top_cell_kept=float(np.mean(order[1:, 0] == order[0, 0])),
        rank_range={
            cell: (int(ranks[:, i].min()), int(ranks[:, i].max())) for i, cell in enumerate(cells)
        },
    )


def weighted_kappa(
    a: Sequence[float],
    b: Sequence[float],
    *,
    categories: Sequence[float] = (1, 2, 3, 4, 5),
    weights: Literal["quadratic", "linear"] = "quadratic",
) -> float | None:
    """Cohen's weighted kappa of two raters on the same items.

    Disagreement weights use the categories' positions in `categories`, as scikit-learn does.
    None when chance disagreement is zero, kappa 0/0 (scikit-learn: nan): when both raters put
    every item in one and the same category. Agreement beyond chance is undefined then, not
    perfect: two raters who always answer 5 would agree on any items, good or bad.
    """
    if weights not in ("quadratic", "linear"):
        raise ValueError(f"weights must be 'quadratic' or 'linear', got {weights!r}")
    if len(a) != len(b) or len(a) == 0:
        raise ValueError("a and b must be non-empty and of equal length")
    position = {category: i for i, category in enumerate(categories)}
    unknown = (set(a) | set(b)) - position.keys()
    if unknown:
        raise ValueError(f"ratings outside categories: {sorted(unknown)}")

    k = len(categories)
    observed = np.zeros((k, k))
    np.add.at(observed, ([position[x] for x in a], [position[x] for x in b]), 1)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / len(a)
    # No normalisation by (k - 1): it cancels in the ratio.
    distance = np.abs(np.subtract.outer(np.arange(k), np.arange(k))).astype(float)
    penalty = distance**2 if weights == "quadratic" else distance
    chance = (penalty * expected).sum()
    if chance == 0:
        return None
    return float(1 - (penalty * observed).sum() / chance)


def krippendorff_alpha_interval(
    ratings: np.ndarray | Sequence[Sequence[float]],
) -> float | None:
    """Krippendorff's alpha with the interval metric; ratings are raters x items, nan = missing.

    Items rated fewer than twice carry no pairable value and are dropped. None when every
    pairable value is identical: expected disagreement is zero and alpha is 0/0, undefined
    rather than perfect, as for weighted_kappa.
    """
    values = np.asarray(ratings, dtype=float)
    if values.ndim != 2:
        raise ValueError("ratings must be a 2-D array, raters x items")
    values = values[:, np.count_nonzero(~np.isnan(values), axis=0) >= 2]
    pooled = values[~np.isnan(values)]
    if pooled.size == 0:
        raise ValueError("no item was rated at least twice")
    if np.ptp(pooled) == 0:
        return None

    # Over all ordered pairs of m values, sum (v_i - v_j)^2 = 2 m^2 var(v): the squared
    # differences of the coincidence matrix without building it.
    m = np.count_nonzero(~np.isnan(values), axis=0)
    within = (2 * m**2 * np.nanvar(values, axis=0) / (m - 1)).sum()  # n * D_o
    n = pooled.size
    total = 2 * n**2 * pooled.var()  # n (n - 1) * D_e
    return float(1 - (n - 1) * within / total)


def judge_variance(repeats: pd.DataFrame) -> JudgeVariance:
    """Per criterion, how much repeated judgements of the same item disagree.

    Only items with at least two non-missing repeats count; a criterion without any such item
    is absent from the result.
    """
    _require(repeats, ("item", "criterion", "repeat", "score"))
    per_item = repeats.groupby(["criterion", "item"])["score"].agg(["std", "count", "nunique"])
    per_item = per_item[per_item["count"] >= 2]
    return JudgeVariance(
        criteria={
            str(criterion): CriterionVariance(
                criterion=str(criterion),
                n_items=len(group),
                mean_within_sd=float(group["std"].mean()),
                share_unstable=float((group["nunique"] > 1).mean()),
            )
            for criterion, group in per_item.groupby(level="criterion")
        }
    )
