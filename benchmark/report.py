"""Rendering of a compare report (benchmark/report_models.py): a static HTML page and a chart.

Pure functions of the report. The page is self-contained (inline style, no script, no external
asset) and every piece of text goes through html.escape: tips are model output, and model,
judge and scenario names come from files anyone can edit.
"""

import html
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from benchmark.report_models import CompareReport, LeaderboardRow
from benchmark.stats import JudgeVariance, PairTest

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 80rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td { white-space: pre-wrap; max-width: 40rem; }
"""


def _number(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _p(value: float) -> str:
    return f"{value:.3g}"


def _agreement(value: float | None) -> str:
    # None is 0/0: both sides gave one value throughout, which says nothing about agreement.
    return "undefined" if value is None else _number(value)


def mde_text(test: PairTest) -> str:
    """A test's MDE, or why it has none: n/a without two shared scenarios, unreachable when
    the sign-flip test cannot get to alpha / family size with them."""
    if test.mde is not None:
        return _number(test.mde)
    return "n/a" if test.n_scenarios < 2 else "unreachable"


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A table whose every header and cell is escaped."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(value))}</td>" for value in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(title: str, *parts: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{''.join(parts)}</section>"


def _paragraph(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def _provenance(report: CompareReport) -> str:
    facts = [
        ("benchmark", report.benchmark),
        ("created (UTC)", report.created.isoformat()),
        ("rubric", f"{report.rubric_version} sha256 {report.rubric_hash}"),
        ("weights", ", ".join(f"{k} {v:g}" for k, v in report.weights.items())),
        ("judges", ", ".join(report.judges_selected)),
        (
            "items",
            f"{report.n_cells} collected, {report.n_judged} judged, "
            f"{report.n_unjudged} not judged (left out)",
        ),
        ("bootstrap", f"{report.n_boot} replicates, seed {report.seed}"),
        ("MLflow run", report.run_id),
    ]
    scenario_sets = _table(
        ["scenario set", "sha256", "cells"],
        [(s.id, s.hash, s.n_cells) for s in report.scenario_sets],
    )
    return _section("Provenance", _table(["", "value"], facts), scenario_sets)


def _leaderboard(report: CompareReport) -> str:
    level = f"{report.ci_level:.0%} CI"
    criteria = report.criteria
    headers = [
        "rank",
        "model",
        "prompt",
        "mean composite",
        level,
        "items",
        "scenarios",
        "unjudged",
        *criteria,
        "format_ok rate",
        "overlong rate",
        "mean latency ms",
        "total cost USD",
    ]
    rows = [
        (
            row.rank,
            row.model,
            row.prompt_version,
            _number(row.mean),
            f"[{_number(row.low)}, {_number(row.high)}]",
            row.n_items,
            row.n_scenarios,
            row.n_unjudged,
            *(_number(row.criteria[c]) for c in criteria),
            _number(row.format_ok_rate),
            _number(row.overlong_rate),
            _number(row.mean_latency_ms, 0),
            _number(row.total_cost_usd, 4),
        )
        for row in report.leaderboard
    ]
    note = _paragraph(
        f"Mean composite per (model, prompt); the {level} is a percentile bootstrap that "
        "resamples scenarios. Unjudged items and judge answers without scores are left out, "
        "not counted as zero."
    )
    return _section("Leaderboard", note, _table(headers, rows))


def _pairs(report: CompareReport) -> str:
    note = _paragraph(
        "Paired sign-flip permutation tests on items of the same scenario and sample, signs "
        "flipped per scenario. Each family is Holm-corrected on its own: the first compares "
        "every cell with the best one (or a named control; mean diff is cell - control) or "
        "all pairs, then the prompt versions of each model and the models on each prompt "
        f"version. Significant means p_holm <= {report.alpha:g}. MDE is the difference the "
        f"paired t test detects with {report.power:.0%} power at alpha / family size "
        "(Holm's strictest step), given the observed SD of per-scenario differences; the "
        "sign-flip test is weaker when few scenarios bring it near its smallest p-value, "
        "2 / 2^scenarios, and unreachable means that smallest p-value is above alpha / "
        "family size (a later Holm step, at a laxer level, may still be significant)."
    )
    rows = [
        (
            t.family,
            t.a,
            t.b,
            t.n_pairs,
            t.n_scenarios,
            _number(t.mean_diff),
            _p(t.p_value),
            _p(t.p_holm),
            "yes" if t.significant else "no",
            mde_text(t),
        )
        for t in report.pairs
    ]
    headers = [
        "family",
        "a",
        "b",
        "pairs",
        "scenarios",
        "mean diff (a - b)",
        "p",
        "p_holm",
        "significant",
        f"MDE ({report.power:.0%} power)",
    ]
    return _section("Paired tests", note, _table(headers, rows))


def _stability(report: CompareReport) -> str:
    s = report.rank_stability
    note = _paragraph(
        f"Ranking under {s.n_weight_sets} other weight sets (each weight halved and doubled, "
        f"then random factors in [1/2, 2]): Kendall tau min {_number(s.kendall_tau_min)}, "
        f"mean {_number(s.kendall_tau_mean)}; the top cell stays first in "
        f"{s.top_cell_kept:.0%} of them."
    )
    rows = [(rank, cell, *s.rank_range[cell]) for rank, cell in enumerate(s.base_ranking, start=1)]
    table = _table(["base rank", "cell", "best rank", "worst rank"], rows)
    return _section("Rank stability under other rubric weights", note, table)


def _variance(variance: JudgeVariance | None) -> str:
    if variance is None:
        return "no item judged twice"
    return "; ".join(
        f"{name}: within-item sd {_number(v.mean_within_sd)}, "
        f"{v.share_unstable:.0%} of {v.n_items} items unstable"
        for name, v in variance.criteria.items()
    )


def _judges(report: CompareReport) -> str:
    section, criteria = report.judges, report.criteria
    judges = _table(
        ["judge", "kind", "cells", "judgments", "no score (failures)", "max repeats", "variance"],
        [
            (
                j.judge,
                ", ".join(j.kinds),
                j.n_cells,
                j.n_judgments,
                j.n_failures,
                j.max_repeats,
                _variance(j.variance),
            )
            for j in section.judges
        ],
    )
    parts = [judges]
    if section.pairs:
        parts.append(
            _paragraph(
                "Agreement on shared cells: quadratic weighted kappa on each judge's per-cell "
                "mean over repeats, rounded to the nearest level; undefined when both judges "
                "gave every shared cell one and the same level (0/0, not perfect agreement)."
            )
        )
        parts.append(
            _table(
                ["judge a", "judge b", "cells", *criteria],
                [
                    (p.judge_a, p.judge_b, p.n_cells, *(_agreement(p.kappa[c]) for c in criteria))
                    for p in section.pairs
                ],
            )
        )
    else:
        parts.append(_paragraph("No two judges scored the same cells: no agreement measured."))
    if section.krippendorff_alpha is not None:
        alpha = section.krippendorff_alpha
        parts.append(
            _paragraph(
                "Krippendorff's alpha (interval) across all judges: "
                + ", ".join(f"{c} {_agreement(alpha[c])}" for c in criteria)
            )
        )
    return _section("Judges", *parts)


def _examples(rows: Sequence[LeaderboardRow]) -> str:
    table = _table(
        ["cell", "which", "scenario", "sample", "composite", "tip"],
        [
            (row.cell, which, ex.scenario, ex.sample, _number(ex.composite), ex.text)
            for row in rows
            for which, ex in (("best", row.best), ("worst", row.worst))
        ],
    )
    return _section("Best and worst tip per cell", table)


def render_html(report: CompareReport) -> str:
    title = html.escape(f"{report.benchmark}: compare on {report.rubric_version}")
    body = "".join(
        [
            _provenance(report),
            _leaderboard(report),
            _pairs(report),
            _stability(report),
            _judges(report),
            _examples(report.leaderboard),
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{title}</h1>{body}</body></html>\n"
    )


def leaderboard_png(report: CompareReport, path: Path) -> None:
    """Horizontal bars of mean composite with interval whiskers, best on top."""
    rows = report.leaderboard
    means = np.array([row.mean for row in rows])
    # A percentile interval need not contain the point estimate; whiskers cannot be negative.
    errors = np.clip([means - [r.low for r in rows], [r.high for r in rows] - means], 0, None)
    fig = Figure(figsize=(8, 1.2 + 0.4 * len(rows)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    positions = np.arange(len(rows))
    ax.barh(positions, means, xerr=errors, color="#4c72b0", capsize=3)
    ax.set_yticks(positions, [row.cell for row in rows])
    ax.invert_yaxis()  # the leaderboard is best first; bar 0 on top
    ax.set_xlabel(f"mean composite ({report.rubric_version}), {report.ci_level:.0%} CI")
    ax.set_title(report.benchmark)
    ax.grid(axis="x", alpha=0.3)
    fig.savefig(path, dpi=120)
