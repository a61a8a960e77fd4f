"""Phase C, compare: the judged cells ranked, tested and checked for judge agreement.

The items are benchmark/items.py's `judged_items` (criteria averaged over the selected judges,
the rubric's composite); cells never judged, and judge answers that gave no score, are counted
and reported, never scored as zero. The statistics are benchmark/stats.py's: a leaderboard of
(model, prompt version) groups with scenario-clustered bootstrap intervals, paired tests in
Holm families (each cell against the best or a named control, or all pairs; then prompt
versions within each model and models on each prompt version), each with the difference it
could detect (benchmark/power.py), rank stability under other rubric weights, and judge
variance and agreement.

The result, a CompareReport (benchmark/report_models.py), is written under
bench_dir/reports/<benchmark>-<UTC time>/ as report.html, leaderboard.png
(benchmark/report.py) and leaderboard.json, and logged with the rubric text to one MLflow run
`compare-<UTC time>` in the benchmark's experiment.
"""

import itertools
import logging
import re
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from benchmark import power, stats
from benchmark.items import cell_label, cells_frame, judged_items, judgments_frame
from benchmark.report import leaderboard_png, render_html
from benchmark.report_models import (
    CompareReport,
    ItemExample,
    JudgePairAgreement,
    JudgesSection,
    JudgeSummary,
    LeaderboardRow,
    ScenarioSetRef,
)
from benchmark.rubric import DEFAULT_RUBRIC, Rubric, load_rubric
from benchmark.store import BenchStore, JudgeBatch, JudgeFailure, Judgment
from service.settings import Settings
from service.tracking import BENCHMARK_EXPERIMENT, experiment_id, registry_client

log = logging.getLogger(__name__)

CI_LEVEL = 0.95
HOW_TO_JUDGE = (
    "judge them first: `tipml bench judge export` (then `tipml bench judge apply FILE`) "
    "or `tipml bench judge auto --judge MODEL`"
)


class CompareParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    benchmark: str = BENCHMARK_EXPERIMENT
    rubric: str = DEFAULT_RUBRIC
    judges: tuple[str, ...] = Field(
        default=(), description="judges whose scores count; empty = every judge of the benchmark"
    )
    n_boot: int = Field(default=2000, ge=100, le=100_000)
    seed: int = 0
    alpha: float = Field(default=power.ALPHA, gt=0, lt=power.POWER)
    pairs: stats.Pairs = Field(
        default="best",
        description="best: every cell against the control; all: every pair of cells",
    )
    control: str | None = Field(
        default=None,
        description="the cell (model|prompt_version) others are compared with; None = the best",
    )

    @field_validator("control")
    @classmethod
    def _control_needs_best(cls, control: str | None, info: ValidationInfo) -> str | None:
        if control is not None and info.data.get("pairs") == "all":
            raise ValueError("a control is compared with every cell: use pairs 'best'")
        return control


def _example(row: pd.Series) -> ItemExample:
    return ItemExample(
        scenario=row["scenario"],
        sample=int(row["sample"]),
        composite=float(row["composite"]),
        text=row["text"],
    )


def _leaderboard_rows(
    items: pd.DataFrame, cells: pd.DataFrame, params: CompareParams, rubric: Rubric
) -> list[LeaderboardRow]:
    estimates = stats.bootstrap_ci(items, n_boot=params.n_boot, level=CI_LEVEL, seed=params.seed)
    detailed = items.merge(cells[["cell_id", "latency_ms", "cost_usd", "text"]], on="cell_id")
    collected = cells.groupby("cell").size()
    rows = []
    for (model, prompt_version), group in detailed.groupby(["model", "prompt_version"]):
        label = cell_label(model, prompt_version)
        estimate = estimates[label]
        costs = group["cost_usd"]
        ordered = group.sort_values(["composite", "scenario", "sample"], ascending=False)
        rows.append(
            {
                "cell": label,
                "model": model,
                "prompt_version": prompt_version,
                "mean": estimate.mean,
                "low": estimate.low,
                "high": estimate.high,
                "n_items": estimate.n_items,
                "n_scenarios": estimate.n_scenarios,
                "n_unjudged": int(collected[label]) - len(group),
                "criteria": {c: float(group[c].mean()) for c in rubric.criteria},
                "format_ok_rate": float(group["format_ok"].mean()),
                "overlong_rate": float(group["overlong"].mean()),
                "mean_latency_ms": float(group["latency_ms"].mean()),
                # A partial sum would pass for the total; unknown stays unknown.
                "total_cost_usd": None if costs.isna().any() else float(costs.sum()),
                "best": _example(ordered.iloc[0]),
                "worst": _example(ordered.iloc[-1]),
            }
        )
    rows.sort(key=lambda row: (-row["mean"], row["cell"]))
    return [LeaderboardRow(rank=rank, **row) for rank, row in enumerate(rows, start=1)]


def _round_half_up(values: pd.Series) -> list[int]:
    # Halves go up rather than to even, so 2.5 and 3.5 move the same way.
    return np.floor(values.to_numpy(float) + 0.5).astype(int).tolist()


def _judges_section(
    selected: Sequence[str],
    judgments: pd.DataFrame,
    failures: Sequence[JudgeFailure],
    batches: Sequence[JudgeBatch],
    rubric: Rubric,
) -> JudgesSection:
    summaries = []
    for judge in selected:
        own = judgments[judgments["judge"] == judge]
        repeats = own.groupby("cell_id").size()
        variance = None
        if len(repeats) and repeats.max() >= 2:
            long = own.melt(
                id_vars=["cell_id", "repeat"],
                value_vars=list(rubric.criteria),
                var_name="criterion",
                value_name="score",
            )
            variance = stats.judge_variance(long.rename(columns={"cell_id": "item"}))
        own_batches = [
            b for b in batches if b.judge == judge and b.rubric_version == rubric.version
        ]
        summaries.append(
            JudgeSummary(
                judge=judge,
                kinds=sorted({b.judge_kind for b in own_batches}),
                rubric_hashes=sorted({b.rubric_hash for b in own_batches}),
                n_cells=len(repeats),
                n_judgments=len(own),
                n_failures=sum(f.judge == judge for f in failures),
                max_repeats=int(repeats.max()) if len(repeats) else 0,
                variance=variance,
            )
        )

    # Agreement is on each judge's per-cell mean over its repeats.
    means = judgments.groupby(["judge", "cell_id"])[list(rubric.criteria)].mean()
    scoring = sorted(judgments["judge"].unique())
    pairs = []
    for a, b in itertools.combinations(scoring, 2):
        shared = means.loc[a].index.intersection(means.loc[b].index)
        if shared.empty:
            continue
        left, right = means.loc[a].loc[shared], means.loc[b].loc[shared]
        pairs.append(
            JudgePairAgreement(
                judge_a=a,
                judge_b=b,
                n_cells=len(shared),
                kappa={
                    c: stats.weighted_kappa(
                        _round_half_up(left[c]), _round_half_up(right[c]), weights="quadratic"
                    )
                    for c in rubric.criteria
                },
            )
        )
    alpha = None
    if pairs:  # some cell was judged by two judges, which alpha needs
        alpha = {
            c: stats.krippendorff_alpha_interval(means[c].unstack("cell_id").to_numpy(float))
            for c in rubric.criteria
        }
    return JudgesSection(judges=summaries, pairs=pairs, krippendorff_alpha=alpha)


def _select_judges(
    requested: Sequence[str], judgments: Sequence[Judgment], failures: Sequence[JudgeFailure]
) -> list[str]:
    known = {j.judge for j in judgments} | {f.judge for f in failures}
    if unknown := sorted(set(requested) - known):
        raise ValueError(
            f"judge(s) {', '.join(unknown)} did not judge this benchmark; "
            f"judges: {', '.join(sorted(known)) or 'none'}"
        )
    return list(requested) if requested else sorted(known)


def _metric_name(*parts: str) -> str:
    # MLflow allows alphanumerics, _ - . space and /; each part is one path segment.
    return "/".join(re.sub(r"[^A-Za-z0-9_.\- ]", "_", part) for part in parts)


def _metrics(leaderboard: Sequence[LeaderboardRow]) -> dict[str, float]:
    metrics = {}
    for row in leaderboard:
        for name, value in (
            ("composite_mean", row.mean),
            ("composite_low", row.low),
            ("composite_high", row.high),
        ):
            metrics[_metric_name(name, row.model, row.prompt_version)] = value
    if len(metrics) != 3 * len(leaderboard):
        raise ValueError("two (model, prompt) cells sanitize to the same MLflow metric name")
    return metrics


def compare(params: CompareParams, settings: Settings) -> CompareReport:
    """Compare the benchmark's judged cells; write the report and log it to MLflow."""
    rubric = load_rubric(params.rubric)
    store = BenchStore.of(settings)
    try:
        cells = store.cells(params.benchmark)
        judgments = store.judgments(rubric.version)
        failures = store.failures(rubric.version)
        batches = store.batches()
    finally:
        store.close()
    if not cells:
        raise ValueError(
            f"benchmark {params.benchmark!r} has no cells in {store.path}; "
            "collect them first: `tipml bench collect`"
        )
    ids = {c.cell_id for c in cells}
    judgments = [j for j in judgments if j.cell_id in ids]
    failures = [f for f in failures if f.cell_id in ids]
    selected = _select_judges(params.judges, judgments, failures)
    judgments = [j for j in judgments if j.judge in selected]
    failures = [f for f in failures if f.judge in selected]
    items = judged_items(cells, judgments, rubric, selected)
    if items.empty:
        raise ValueError(
            f"benchmark {params.benchmark!r} has {len(cells)} cells but none judged on "
            f"{rubric.version}; {HOW_TO_JUDGE}"
        )

    leaderboard = _leaderboard_rows(items, cells_frame(cells), params, rubric)
    metrics = _metrics(leaderboard)
    pairs = stats.comparisons(
        items, pairs=params.pairs, control=params.control, seed=params.seed, alpha=params.alpha
    )
    stability = stats.rank_stability(items, rubric.weights, seed=params.seed)
    judges = _judges_section(selected, judgments_frame(judgments), failures, batches, rubric)
    if stale := {h for j in judges.judges for h in j.rubric_hashes} - {rubric.text_hash}:
        log.warning("judge batches made with another %s text: %s", rubric.version, stale)
    set_counts = pd.Series([(c.scenario_set, c.scenario_set_hash) for c in cells]).value_counts()
    scenario_sets = [
        ScenarioSetRef(id=set_id, hash=set_hash, n_cells=int(n))
        for (set_id, set_hash), n in sorted(set_counts.items())
    ]

    created = datetime.now(UTC).replace(microsecond=0)
    stamp = f"{created:%Y%m%dT%H%M%SZ}"
    # A random suffix: two compares in the same second (a flow, then the CLI) get their own.
    report_dir = (
        settings.bench_dir / "reports" / f"{params.benchmark}-{stamp}-{uuid.uuid4().hex[:6]}"
    )
    report_dir.mkdir(parents=True, exist_ok=False)
    client = registry_client(settings)
    run = client.create_run(
        experiment_id(client, settings, params.benchmark),
        run_name=f"compare-{stamp}",
        tags={
            "phase": "compare",
            "rubric_version": rubric.version,
            "rubric_hash": rubric.text_hash,
            "scenario_set": ",".join(s.id for s in scenario_sets),
            "judges": ",".join(selected),
        },
    )
    try:
        report = CompareReport(
            benchmark=params.benchmark,
            created=created,
            rubric_version=rubric.version,
            rubric_hash=rubric.text_hash,
            weights=rubric.weights,
            scenario_sets=scenario_sets,
            judges_selected=selected,
            n_cells=len(cells),
            n_judged=len(items),
            n_unjudged=len(cells) - len(items),
            n_boot=params.n_boot,
            seed=params.seed,
            alpha=params.alpha,
            power=power.POWER,
            ci_level=CI_LEVEL,
            leaderboard=leaderboard,
            pairs=pairs,
            rank_stability=stability,
            judges=judges,
            report_dir=report_dir,
            html_path=report_dir / "report.html",
            png_path=report_dir / "leaderboard.png",
            json_path=report_dir / "leaderboard.json",
            run_id=run.info.run_id,
        )
        report.html_path.write_text(render_html(report))
        leaderboard_png(report, report.png_path)
        report.json_path.write_text(report.model_dump_json(indent=2) + "\n")
        now = int(time.time() * 1000)
        client.log_batch(
            report.run_id,
            metrics=[Metric(name, value, now, 0) for name, value in metrics.items()],
            params=[
                Param(name, str(value))
                for name, value in params.model_dump(
                    include={"n_boot", "seed", "alpha", "pairs", "control"}, exclude_none=True
                ).items()
            ],
        )
        for path in (report.html_path, report.png_path, report.json_path):
            client.log_artifact(report.run_id, str(path))
        client.log_text(report.run_id, rubric.text, f"rubric-{rubric.version}.yaml")
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(report.run_id)
    return report
