"""The cohort rows: the shards' per-day counts by time zone, summed and windowed by hand."""

from datetime import date, timedelta

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_repo.cohort_features import COHORT_AS_OF, COHORT_KEY, COHORT_WINDOW_DAYS
from feature_repo.cohort_transforms import COLUMNS, FEATURE_COUNTS, cohort_profiles
from feature_repo.profile_transforms import COHORT_COUNT_COLUMNS, TIMESTAMP

AS_OF = date(2026, 11, 20)


def counts(zone: str, day: date, **values: int) -> dict:
    return {COHORT_KEY: zone, "day": day, **dict.fromkeys(COHORT_COUNT_COLUMNS, 0), **values}


def test_a_row_sums_the_window_before_its_day_over_every_shards_share():
    window_start = AS_OF - timedelta(days=COHORT_WINDOW_DAYS)
    aggregates = pd.DataFrame(
        [
            # Two shards' shares of one zone and day add up.
            counts("Europe/Berlin", AS_OF - timedelta(days=1), shown=3, shown_focus=3, accepted=1),
            counts("Europe/Berlin", AS_OF - timedelta(days=1), shown=2, shown_review=2),
            # The window's first day counts; the day before it and the as-of day do not.
            counts("Europe/Berlin", window_start, shown=5, accepted=2, accepted_focus=2),
            counts("Europe/Berlin", window_start - timedelta(days=1), shown=100),
            counts("Europe/Berlin", AS_OF, shown=100),
            # A zone with reactions counted but no tip shown in the window has no row.
            counts("Asia/Tokyo", AS_OF - timedelta(days=3), accepted=1),
        ]
    )
    rows = cohort_profiles(aggregates, [AS_OF])
    assert list(rows.columns) == list(COLUMNS)
    assert rows[COHORT_KEY].tolist() == ["Europe/Berlin"]
    [row] = rows.to_dict("records")
    assert row[TIMESTAMP] == row[COHORT_AS_OF] == pd.Timestamp(AS_OF, tz="UTC")
    assert (row["cohort_shown_28d"], row["cohort_accepted_28d"]) == (10, 3)
    assert (row["cohort_shown_focus_28d"], row["cohort_accepted_focus_28d"]) == (3, 2)
    assert (row["cohort_shown_review_28d"], row["cohort_accepted_review_28d"]) == (2, 0)
    assert row["cohort_shown_planning_28d"] == row["cohort_shown_wellbeing_28d"] == 0


def test_nothing_in_nothing_out():
    assert cohort_profiles(pd.DataFrame(columns=[COHORT_KEY, "day"]), [AS_OF]).empty
    assert cohort_profiles(pd.DataFrame([counts("UTC", AS_OF, shown=1)]), []).empty


SHARES = st.lists(
    st.tuples(
        st.sampled_from(["UTC", "Europe/Berlin", "America/Chicago"]),
        st.integers(0, 40),  # days before the last as-of day
        st.integers(0, 9),
        st.integers(0, 9),
        st.integers(0, 4),  # the shard the share comes from
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(shares=SHARES, days=st.sets(st.integers(0, 10), min_size=1, max_size=4))
def test_rows_are_the_same_however_the_counts_are_split_and_ordered(shares, days):
    as_of = [AS_OF - timedelta(days=d) for d in days]
    rows = [
        counts(zone, AS_OF - timedelta(days=ago), shown=shown, shown_focus=shown, accepted=taken)
        for zone, ago, shown, taken, _ in shares
    ]
    split = pd.DataFrame(rows or [counts("UTC", AS_OF, shown=0)])
    merged = split.groupby([COHORT_KEY, "day"], as_index=False).sum()
    shuffled = split.sample(frac=1, random_state=7)
    expected = cohort_profiles(merged, as_of)
    pd.testing.assert_frame_equal(cohort_profiles(shuffled, as_of), expected)
    # And each row is the plain sum of the window's shares, recounted here.
    for row in expected.to_dict("records"):
        day = row[TIMESTAMP].date()
        inside = [
            r
            for r in rows
            if r[COHORT_KEY] == row[COHORT_KEY]
            and day - timedelta(days=COHORT_WINDOW_DAYS) <= r["day"] < day
        ]
        for feature, count in FEATURE_COUNTS.items():
            assert row[feature] == sum(r[count] for r in inside)
    assert np.all(expected["cohort_shown_28d"] > 0)
