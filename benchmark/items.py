"""Items: the ledger's cells and judgments as data frames, and each judged cell's scores.

An item is one collected answer. Its criteria are the mean of the selected judges' scores and
its composite is the rubric's (format_ok and overlong come from the cell, checked by code,
never from a judge). Both the judge phase, which mirrors them to each cell's MLflow run, and
the compare phase, which ranks them, read them from `judged_items`, so both show the same
numbers.
"""

from collections.abc import Collection, Sequence

import pandas as pd

from benchmark.rubric import Rubric
from benchmark.store import Cell, Judgment

# What identifies an item: its cell, its (model, prompt) group, its scenario and sample.
_KEY_COLUMNS = ("cell_id", "cell", "model", "prompt_version", "scenario", "sample")
_CELL_COLUMNS = (
    *_KEY_COLUMNS,
    "format_ok",
    "overlong",
    "latency_ms",
    "cost_usd",
    "text",
)


def cell_label(model: str, prompt_version: str) -> str:
    """The (model, prompt) group an item counts towards: `model|prompt_version`."""
    return f"{model}|{prompt_version}"


def cells_frame(cells: Sequence[Cell]) -> pd.DataFrame:
    # Two scenario sets (or two versions of one) may reuse a scenario id for another context;
    # qualifying the id keeps such items from being paired as if they were the same scenario.
    qualify = len({(c.scenario_set, c.scenario_set_hash) for c in cells}) > 1
    rows = [
        (
            c.cell_id,
            cell_label(c.model, c.prompt_version),
            c.model,
            c.prompt_version,
            f"{c.scenario_set}@{c.scenario_set_hash[:8]}/{c.scenario_id}"
            if qualify
            else c.scenario_id,
            c.sample,
            int(c.format_ok),
            int(c.overlong),
            c.latency_ms,
            c.cost_usd,
            c.text,
        )
        for c in cells
    ]
    return pd.DataFrame(rows, columns=list(_CELL_COLUMNS))


def judgments_frame(judgments: Sequence[Judgment]) -> pd.DataFrame:
    return pd.DataFrame([j.model_dump() for j in judgments], columns=list(Judgment.model_fields))


def judged_items(
    cells: Sequence[Cell],
    judgments: Sequence[Judgment],
    rubric: Rubric,
    judges: Collection[str] = (),
) -> pd.DataFrame:
    """One row per judged cell: its key, each criterion, format_ok, overlong, composite and
    n_judgments; cells no selected judge scored are left out.

    A criterion is the mean over the selected judges (all when `judges` is empty) of each
    judge's mean over its repeats, so a judge asked k times does not weigh k times as much.
    Judgments on another rubric version are ignored.
    """
    criteria = list(rubric.criteria)
    chosen = judgments_frame(
        [
            j
            for j in judgments
            if j.rubric_version == rubric.version and (not judges or j.judge in judges)
        ]
    )
    per_judge = chosen.groupby(["cell_id", "judge"])[criteria].mean()
    scores = per_judge.groupby(level="cell_id").mean()
    scores["n_judgments"] = chosen.groupby("cell_id").size()
    items = cells_frame(cells).join(scores, on="cell_id", how="inner")
    items["composite"] = [
        rubric.composite({c: getattr(row, c) for c in criteria}, row.format_ok, row.overlong)
        for row in items.itertuples()
    ]
    columns = [*_KEY_COLUMNS, *criteria, "format_ok", "overlong", "composite", "n_judgments"]
    return items.loc[:, columns].reset_index(drop=True)
