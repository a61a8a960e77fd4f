"""The compare report as data: what benchmark/compare.py computes and benchmark/report.py renders.

CompareReport is also the file leaderboard.json (its JSON dump): its field names are a format
that people and scripts read.
"""

from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field

from benchmark import stats


class ItemExample(BaseModel):
    scenario: str
    sample: int
    composite: float
    text: str = Field(description="the model's answer, verbatim (untrusted)")


class LeaderboardRow(BaseModel):
    rank: int = Field(description="1 = best mean composite")
    cell: str = Field(description="model|prompt_version")
    model: str
    prompt_version: str
    mean: float
    low: float = Field(description="lower bound of the scenario-cluster bootstrap interval")
    high: float
    n_items: int = Field(description="judged items")
    n_scenarios: int
    n_unjudged: int = Field(description="collected items no selected judge has scored")
    criteria: dict[str, float] = Field(description="mean score per criterion")
    format_ok_rate: float
    overlong_rate: float
    mean_latency_ms: float
    total_cost_usd: float | None = Field(description="None when any item's cost is unknown")
    best: ItemExample
    worst: ItemExample


class JudgeSummary(BaseModel):
    judge: str
    kinds: list[str] = Field(description="human, llm or rules, from its batches")
    rubric_hashes: list[str] = Field(description="rubric text hashes its batches were made with")
    n_cells: int
    n_judgments: int = Field(description="scores given, repeats included")
    n_failures: int = Field(description="answers that gave no score; never counted as scores")
    max_repeats: int
    variance: stats.JudgeVariance | None = Field(
        description="spread of its repeated scores; None when no item was judged twice"
    )


class JudgePairAgreement(BaseModel):
    judge_a: str
    judge_b: str
    n_cells: int
    kappa: dict[str, float | None] = Field(
        description="quadratic weighted kappa per criterion; None where undefined (both judges "
        "gave every shared cell one and the same level)"
    )


class JudgesSection(BaseModel):
    judges: list[JudgeSummary]
    pairs: list[JudgePairAgreement] = Field(description="pairs of judges sharing cells")
    krippendorff_alpha: dict[str, float | None] | None = Field(
        description="interval alpha per criterion across all judges, None where undefined (one "
        "value throughout); None with fewer than two judges or no cell judged by two"
    )


class ScenarioSetRef(BaseModel):
    id: str
    hash: str
    n_cells: int


class CompareReport(BaseModel):
    benchmark: str
    created: datetime
    rubric_version: str
    rubric_hash: str
    weights: dict[str, float]
    scenario_sets: list[ScenarioSetRef]
    judges_selected: list[str]
    n_cells: int
    n_judged: int
    n_unjudged: int
    n_boot: int
    seed: int
    alpha: float
    power: float = Field(description="the power each test's mde is computed for")
    ci_level: float
    leaderboard: list[LeaderboardRow] = Field(description="best first")
    pairs: list[stats.PairTest] = Field(
        description="paired tests, grouped by Holm family: the main one (vs best, vs control "
        "or all pairs) first, then prompts of each model and models on each prompt version"
    )
    rank_stability: stats.RankStability
    judges: JudgesSection
    report_dir: Path
    html_path: Path
    png_path: Path
    json_path: Path
    run_id: str

    @property
    def criteria(self) -> list[str]:
        """The rubric's criteria in its order, as every leaderboard row reports them (compare
        never writes a report without a row)."""
        return list(self.leaderboard[0].criteria)
