"""Daily profile transformation on a hand-built history with known answers."""

from datetime import date

import numpy as np
import pandas as pd
import pytest

from feature_repo.profile_features import PROFILE_AS_OF, PROFILE_FEATURES
from feature_repo.profile_transforms import EventFrames, compute_daily_profiles

D10, D11 = date(2026, 11, 10), date(2026, 11, 11)


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def frames(extra_impressions: list[dict] | None = None) -> EventFrames:
    tasks = pd.DataFrame(
        [
            # user a, UTC
            (
                "a",
                "t1",
                ts("2026-11-01 09:00"),
                ts("2026-11-05 17:00"),
                ts("2026-11-08 10:00"),
                "UTC",
            ),
            ("a", "t2", ts("2026-11-09 08:00"), ts("2026-11-09 12:00"), pd.NaT, "UTC"),
            ("a", "t3", ts("2026-11-09 20:00"), pd.NaT, ts("2026-11-10 10:00"), "UTC"),
            # created exactly at the 11-10 midnight: not "before" it
            ("a", "t4", ts("2026-11-10 00:00"), pd.NaT, pd.NaT, "UTC"),
            # user b, Tokyo (UTC+9): completes at 10:00 local, 01:00 UTC
            ("b", "t5", ts("2026-11-09 23:00"), pd.NaT, ts("2026-11-10 01:00"), "Asia/Tokyo"),
            # user c first appears after the 11-10 midnight
            ("c", "t6", ts("2026-11-10 05:00"), pd.NaT, pd.NaT, "UTC"),
        ],
        columns=["user_id", "task_id", "created", "due", "completed", "timezone"],
    )
    impressions = pd.DataFrame(
        [
            ("a", "i1", ts("2026-11-09 21:00"), "focus", "UTC"),
            ("a", "i2", ts("2026-11-09 22:00"), "planning", "UTC"),
            ("a", "i3", ts("2026-11-10 23:30"), "focus", "UTC"),
            *(extra_impressions or []),
        ],
        columns=["user_id", "tip_id", "timestamp", "category", "timezone"],
    )
    feedback = pd.DataFrame(
        [
            ("a", "i1", ts("2026-11-09 21:05"), "accepted"),
            ("a", "i2", ts("2026-11-09 22:01"), "dismissed"),
            ("a", "i3", ts("2026-11-11 00:30"), "ignored"),
        ],
        columns=["user_id", "tip_id", "timestamp", "reaction"],
    )
    return EventFrames(tasks=tasks, impressions=impressions, feedback=feedback)


@pytest.fixture(scope="module")
def profiles() -> pd.DataFrame:
    return compute_daily_profiles(frames(), [D10, D11])


def row(profiles: pd.DataFrame, user: str, day: date) -> pd.Series:
    match = profiles[(profiles.user_id == user) & (profiles.event_timestamp == ts(str(day)))]
    assert len(match) == 1, f"expected one row for {user} as of {day}"
    return match.iloc[0]


def test_columns_follow_the_table(profiles):
    assert list(profiles.columns) == [
        "user_id",
        "event_timestamp",
        PROFILE_AS_OF,
        *(f.name for f in PROFILE_FEATURES),
    ]
    assert (profiles.event_timestamp == profiles[PROFILE_AS_OF]).all()


def test_rows_exist_only_after_a_users_first_event(profiles):
    assert set(profiles[profiles.event_timestamp == ts("2026-11-10")].user_id) == {"a", "b"}
    assert set(profiles[profiles.event_timestamp == ts("2026-11-11")].user_id) == {"a", "b", "c"}


def test_task_counts_and_rates(profiles):
    a10, a11 = row(profiles, "a", D10), row(profiles, "a", D11)
    assert (a10.open_tasks_eod, a10.overdue_tasks_eod, a10.tasks_completed_7d) == (2, 1, 1)
    assert a10.completion_rate_7d == pytest.approx(1 / 3)
    assert (a11.open_tasks_eod, a11.overdue_tasks_eod, a11.tasks_completed_7d) == (2, 1, 2)
    assert a11.completion_rate_7d == pytest.approx(2 / 4)


def test_tip_counts_and_rates(profiles):
    a10, a11 = row(profiles, "a", D10), row(profiles, "a", D11)
    assert a10.tips_shown_7d == 2
    assert a10.tip_accept_rate_28d == pytest.approx(0.5)
    # Category rates are pulled toward the overall rate by five pseudo-impressions.
    assert a10.accept_rate_focus_28d == pytest.approx((1 + 5 * 0.5) / (1 + 5))
    assert a10.accept_rate_planning_28d == pytest.approx((0 + 5 * 0.5) / (1 + 5))
    assert a10.accept_rate_wellbeing_28d == pytest.approx(0.5)  # never shown: the prior
    assert a11.tips_shown_7d == 3
    assert a11.tip_accept_rate_28d == pytest.approx(1 / 3)
    assert a11.accept_rate_focus_28d == pytest.approx((1 + 5 / 3) / (2 + 5))
    assert np.isnan(row(profiles, "b", D11).accept_rate_focus_28d)  # no tips: unknown


def test_activity_streak_and_tenure(profiles):
    a10, a11 = row(profiles, "a", D10), row(profiles, "a", D11)
    assert (a10.streak_days, a10.active_days_28d, a10.tenure_days) == (2, 3, 8)
    assert (a11.streak_days, a11.active_days_28d, a11.tenure_days) == (3, 4, 9)
    assert row(profiles, "c", D11).tenure_days == 0


def test_preferred_hour_is_a_local_circular_mean_and_unknown_without_activity(profiles):
    # a: done at 10h, accepted at 21h (circular mean 15.5 -> 16); then one more at 10h: 11.
    assert row(profiles, "a", D10).preferred_hour == 16
    assert row(profiles, "a", D11).preferred_hour == 11
    assert pd.isna(row(profiles, "b", D10).preferred_hour)
    assert row(profiles, "b", D11).preferred_hour == 10  # 01:00 UTC is 10:00 in Tokyo
    assert row(profiles, "b", D10).completion_rate_7d == 0.0


def test_future_events_never_change_a_row():
    later = [("a", "i9", ts("2026-11-10 00:00"), "review", "UTC")]
    before = compute_daily_profiles(frames(), [D10])
    after = compute_daily_profiles(frames(later), [D10])
    pd.testing.assert_frame_equal(before, after)


def test_no_events_or_days_give_an_empty_table():
    empty = EventFrames(
        tasks=frames().tasks.iloc[:0],
        impressions=frames().impressions.iloc[:0],
        feedback=frames().feedback.iloc[:0],
    )
    assert compute_daily_profiles(empty, [D10]).empty
    assert compute_daily_profiles(frames(), []).empty
