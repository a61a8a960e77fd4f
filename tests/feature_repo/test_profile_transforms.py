"""Daily profile transformation on a hand-built history with known answers."""

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from feature_repo.categories import TIP_CATEGORIES
from feature_repo.profile_features import PROFILE_AS_OF, PROFILE_FEATURES
from feature_repo.profile_transforms import (
    TIMESTAMP,
    WINDOW_DAYS,
    EventFrames,
    ProfileStart,
    compute_daily_profiles,
    run_profiles,
)

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
    completions = (
        tasks[["user_id", "task_id", "completed"]]
        .dropna()
        .rename(columns={"completed": "timestamp"})
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
    return EventFrames(
        tasks=tasks.drop(columns="completed"),
        completions=completions,
        impressions=impressions,
        feedback=feedback,
    )


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
        completions=frames().completions.iloc[:0],
        impressions=frames().impressions.iloc[:0],
        feedback=frames().feedback.iloc[:0],
    )
    assert compute_daily_profiles(empty, [D10]).empty
    assert compute_daily_profiles(frames(), []).empty


# --- the daily run equals the full recompute -------------------------------------------------

ORIGIN = pd.Timestamp("2026-11-01", tz="UTC")
HOURS = 24 * 10
ZONES = ["UTC", "Asia/Tokyo", "America/Los_Angeles"]
USERS = st.sampled_from(["a", "b", "c"])


def _at(hour: int) -> pd.Timestamp:
    return ORIGIN + pd.Timedelta(hours=hour)


@st.composite
def histories(draw) -> EventFrames:
    """Ten days of any events, including the awkward ones: completions stamped before their
    task, tasks completed twice, or by another user, or due before they were created;
    reactions to unknown tips, to another user's, before their tip or days after it."""
    tasks, completions = [], []
    for i in range(draw(st.integers(0, 14))):
        created = draw(st.integers(0, HOURS))
        due = draw(st.none() | st.integers(created - 100, HOURS + 100))
        tasks.append(
            (
                draw(USERS),
                f"t{i}",
                _at(created),
                _at(due) if due is not None else pd.NaT,
                draw(st.sampled_from(ZONES)),
            )
        )
        for _ in range(draw(st.integers(0, 2))):
            # Mostly its user's; another user's completion of that id completes nothing.
            who = draw(st.sampled_from([tasks[-1][0], tasks[-1][0], draw(USERS)]))
            completions.append((who, f"t{i}", _at(created + draw(st.integers(-30, 120)))))
    impressions, feedback = [], []
    for i in range(draw(st.integers(0, 30))):
        shown = draw(st.integers(0, HOURS))
        impressions.append(
            (
                draw(USERS),
                f"i{i}",
                _at(shown),
                draw(st.sampled_from(TIP_CATEGORIES)),
                draw(st.sampled_from(ZONES)),
            )
        )
        for _ in range(draw(st.integers(0, 2))):
            reaction = draw(st.sampled_from(["accepted", "dismissed", "ignored"]))
            tip = draw(st.sampled_from([f"i{i}", "unknown"]))
            who = draw(st.sampled_from([impressions[-1][0], impressions[-1][0], draw(USERS)]))
            feedback.append((who, tip, _at(shown + draw(st.integers(-2, 40))), reaction))

    return _typed(tasks, completions, impressions, feedback)


def _frame(rows: list[tuple], columns: list[str]) -> pd.DataFrame:
    typed = pd.DataFrame(rows, columns=columns)
    for column in {"created", "due", "timestamp"} & set(columns):
        typed[column] = pd.to_datetime(typed[column], utc=True)
    return typed


def _typed(tasks, completions, impressions, feedback) -> EventFrames:
    return EventFrames(
        tasks=_frame(tasks, ["user_id", "task_id", "created", "due", "timezone"]),
        completions=_frame(completions, ["user_id", "task_id", "timestamp"]),
        impressions=_frame(impressions, ["user_id", "tip_id", "timestamp", "category", "timezone"]),
        feedback=_frame(feedback, ["user_id", "tip_id", "timestamp", "reaction"]),
    )


# Across the split: a tip shown before midnight and accepted after it, and a task overdue
# before it and completed after it.
ACROSS_THE_SPLIT = _typed(
    [("a", "t0", _at(30), _at(40), "UTC")],
    [("a", "t0", _at(100))],
    [("a", "i0", _at(71), "focus", "Asia/Tokyo")],
    [("a", "i0", _at(73), "accepted")],
)


def _from_day(events: EventFrames, day: date) -> EventFrames:
    """What a lake read from `day` on gives: the events of day partitions >= day."""
    since = pd.Timestamp(day, tz="UTC")
    return EventFrames(
        tasks=events.tasks[events.tasks["created"] >= since],
        completions=events.completions[events.completions["timestamp"] >= since],
        impressions=events.impressions[events.impressions["timestamp"] >= since],
        feedback=events.feedback[events.feedback["timestamp"] >= since],
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=histories(), split=st.integers(1, 10))
@example(events=ACROSS_THE_SPLIT, split=2)
def test_a_daily_run_from_a_kept_state_equals_the_full_recompute(events, split):
    days = [(ORIGIN + pd.Timedelta(days=k)).date() for k in range(1, 12)]
    full = compute_daily_profiles(events, days)
    first = days[split]
    before = run_profiles(events, days[: split + 1], keep_states=[first])
    history = before.aggregates[
        (before.aggregates["day"] >= first - timedelta(days=WINDOW_DAYS))
        & (before.aggregates["day"] < first)
    ]
    daily = run_profiles(
        _from_day(events, first - timedelta(days=1)),
        days[split:],
        ProfileStart(before.states[first], history),
    )
    expected = full[full[TIMESTAMP] >= pd.Timestamp(first, tz="UTC")].reset_index(drop=True)
    pd.testing.assert_frame_equal(daily.profiles, expected)
