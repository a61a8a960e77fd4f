"""Daily cohort rows from the shards' per-day counts: a pure, vectorized transformation.

Each user shard's profile run counts its users' tips per (time zone, UTC day)
(`ProfileRun.cohort_aggregates`, by the same rules as the users' own counts). A zone's users
may sit in every shard, so a cohort's count is a sum over shards: this adds the shares up and
sums each as-of day's COHORT_WINDOW_DAYS before it. A row as of T sees only days before T.
"""

from collections.abc import Sequence
from datetime import date, timedelta

import numpy as np
import pandas as pd

from feature_repo.categories import TIP_CATEGORIES
from feature_repo.cohort_features import (
    COHORT_AS_OF,
    COHORT_FEATURES,
    COHORT_KEY,
    COHORT_WINDOW_DAYS,
)
from feature_repo.profile_transforms import COHORT_COUNT_COLUMNS, TIMESTAMP

# Each feature's day count: cohort_shown_28d <- shown, cohort_accepted_focus_28d <- accepted_focus.
FEATURE_COUNTS = {
    "cohort_shown_28d": "shown",
    "cohort_accepted_28d": "accepted",
    **{
        f"cohort_{kind}_{c}_28d": f"{kind}_{c}"
        for c in TIP_CATEGORIES
        for kind in ("shown", "accepted")
    },
}
COLUMNS = (COHORT_KEY, TIMESTAMP, COHORT_AS_OF, *(f.name for f in COHORT_FEATURES))


def window_start(first_as_of: date) -> date:
    """The first day whose counts the rows as of `first_as_of` and later need."""
    return first_as_of - timedelta(days=COHORT_WINDOW_DAYS)


def cohort_profiles(aggregates: pd.DataFrame, as_of_days: Sequence[date]) -> pd.DataFrame:
    """One row per (cohort, as-of day) with a tip shown in the window before that day.

    `aggregates` holds cohort, day, COHORT_COUNT_COLUMNS, any number of rows per (cohort,
    day), and must cover the COHORT_WINDOW_DAYS before each as-of day (`window_start`).
    """
    days = sorted(set(as_of_days))
    if not days or aggregates.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    origin = window_start(days[0])
    span = (days[-1] - origin).days
    summed = aggregates.groupby([COHORT_KEY, "day"], sort=False)[list(COHORT_COUNT_COLUMNS)].sum()
    cohorts = summed.index.get_level_values(0).unique()
    day_idx = np.array([(d - origin).days for d in summed.index.get_level_values(1)])
    keep = (day_idx >= 0) & (day_idx < span)
    dense = np.zeros((len(cohorts), span, len(COHORT_COUNT_COLUMNS)), dtype=np.int64)
    np.add.at(
        dense,
        (cohorts.get_indexer(summed.index.get_level_values(0))[keep], day_idx[keep]),
        summed.to_numpy(dtype=np.int64)[keep],
    )
    cum = np.concatenate([np.zeros_like(dense[:, :1]), np.cumsum(dense, axis=1)], axis=1)
    at = np.array([(d - origin).days for d in days])
    window = cum[:, at] - cum[:, at - COHORT_WINDOW_DAYS]  # cohorts x days x columns
    shown = window[..., COHORT_COUNT_COLUMNS.index("shown")]
    rows, cols = np.nonzero(shown > 0)
    stamps = pd.DatetimeIndex([pd.Timestamp(d, tz="UTC") for d in days])
    frame = pd.DataFrame(
        {COHORT_KEY: cohorts.to_numpy()[rows], TIMESTAMP: stamps[cols], COHORT_AS_OF: stamps[cols]}
    )
    for name, count in FEATURE_COUNTS.items():
        frame[name] = window[rows, cols, COHORT_COUNT_COLUMNS.index(count)]
    return frame.sort_values([TIMESTAMP, COHORT_KEY], ignore_index=True)
