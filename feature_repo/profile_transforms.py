"""Daily user profiles over rolling windows: a pure, vectorized transformation.

A profile row "as of" T (a UTC midnight) summarises events with timestamps before T, so a
row never sees its own future. Events are counted on a (user x UTC day) grid and every
rolling window is a difference of cumulative sums along the day axis.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from feature_repo.categories import TIP_CATEGORIES
from feature_repo.profile_features import PROFILE_AS_OF, PROFILE_FEATURES

DAY = pd.Timedelta(days=1)
RATE_PSEUDO_COUNT = 5
TIMESTAMP = "event_timestamp"


@dataclass(frozen=True)
class EventFrames:
    """The event log as frames; all timestamps are tz-aware UTC.

    tasks: user_id, task_id, created, due, completed, timezone (one row per created task)
    impressions: user_id, tip_id, timestamp, category, timezone
    feedback: user_id, tip_id, timestamp, reaction
    """

    tasks: pd.DataFrame
    impressions: pd.DataFrame
    feedback: pd.DataFrame


@dataclass(frozen=True)
class _Grid:
    users: pd.Index
    origin: pd.Timestamp
    days: int

    @classmethod
    def spanning(cls, users: pd.Index, start: pd.Timestamp, end: pd.Timestamp) -> "_Grid":
        """Days from `start` up to, not including, `end`."""
        return cls(users, start, int((end - start) // DAY))

    def day_index(self, stamps: pd.Series) -> np.ndarray:
        """Day number of each timestamp; -1 when missing or outside the grid."""
        idx = ((stamps - self.origin) // DAY).to_numpy(dtype=np.float64, na_value=np.nan)
        ok = ~np.isnan(idx) & (idx >= 0) & (idx < self.days)
        return np.where(ok, idx, -1).astype(np.int64)

    def counts(self, users: pd.Series, days: np.ndarray, hours: np.ndarray | None = None):
        """Event counts per (user, day[, hour]), ignoring days outside the grid."""
        user_idx = self.users.get_indexer(users)
        keep = (days >= 0) & (user_idx >= 0)
        width = 24 if hours is not None else 1
        flat = (user_idx[keep] * self.days + days[keep]) * width
        if hours is not None:
            flat = flat + hours[keep]
        out = np.bincount(flat, minlength=len(self.users) * self.days * width)
        shape = (
            (len(self.users), self.days, 24) if hours is not None else (len(self.users), self.days)
        )
        return out.reshape(shape).astype(np.int64)


def _before(counts: np.ndarray) -> np.ndarray:
    """B[:, j] = events on days < j (so column j is "as of the midnight starting day j")."""
    zeros = np.zeros((counts.shape[0], 1, *counts.shape[2:]), dtype=counts.dtype)
    return np.concatenate([zeros, np.cumsum(counts, axis=1)], axis=1)


def _window(cum: np.ndarray, as_of: np.ndarray, days: int) -> np.ndarray:
    return cum[:, as_of] - cum[:, np.maximum(as_of - days, 0)]


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, np.minimum(numerator / denominator, 1.0), np.nan)


def _smoothed_rate(accepted: np.ndarray, shown: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Accepted / shown, pulled toward `prior` by RATE_PSEUDO_COUNT imagined impressions.

    A category a user saw three times says little; the user's overall rate says more.
    Unknown (NaN) where the prior is unknown, i.e. the user saw no tips at all.
    """
    return (accepted + RATE_PSEUDO_COUNT * prior) / (shown + RATE_PSEUDO_COUNT)


def _circular_mean_hour(counts: np.ndarray) -> np.ndarray:
    """Hour (0-23) of the mean direction of counts over 24 hourly bins (last axis)."""
    angles = 2 * np.pi * np.arange(24) / 24
    direction = np.arctan2(counts @ np.sin(angles), counts @ np.cos(angles))
    return np.round(direction * 24 / (2 * np.pi)) % 24


def _local_hours(stamps: pd.Series, zones: pd.Series) -> np.ndarray:
    hours = np.zeros(len(stamps), dtype=np.int64)
    for zone, positions in stamps.groupby(zones.to_numpy(), sort=False).indices.items():
        hours[positions] = stamps.iloc[positions].dt.tz_convert(zone).dt.hour.to_numpy()
    return hours


def compute_daily_profiles(events: EventFrames, as_of_days: Sequence[date]) -> pd.DataFrame:
    """One row per (user, as-of day) for every user with an event before that day's midnight.

    `as_of_days[i]` yields rows with event_timestamp = midnight UTC starting that day. Columns:
    user_id, event_timestamp, profile_as_of, then PROFILE_FEATURES in table order.
    """
    columns = ["user_id", TIMESTAMP, PROFILE_AS_OF, *(f.name for f in PROFILE_FEATURES)]
    tasks, impressions, feedback = events.tasks, events.impressions, events.feedback
    users = pd.Index(
        pd.concat([tasks["user_id"], impressions["user_id"], feedback["user_id"]]).unique()
    )
    if len(users) == 0 or len(as_of_days) == 0:
        return pd.DataFrame(columns=columns)

    first_seen = (
        pd.concat(
            [
                tasks[["user_id", "created"]].set_axis(["user_id", "ts"], axis=1),
                impressions[["user_id", "timestamp"]].set_axis(["user_id", "ts"], axis=1),
                feedback[["user_id", "timestamp"]].set_axis(["user_id", "ts"], axis=1),
            ]
        )
        .groupby("user_id")["ts"]
        .min()
    )
    as_of_stamps = pd.DatetimeIndex([pd.Timestamp(d, tz="UTC") for d in as_of_days])
    # Task counts and streaks accumulate over all history; everything else looks back at most
    # 28 days, so it gets a grid that starts 28 days before the first requested as-of day.
    last = as_of_stamps.max()
    full = _Grid.spanning(users, min(first_seen.min().floor("D"), as_of_stamps.min()), last)
    recent = _Grid.spanning(users, as_of_stamps.min() - 28 * DAY, last)
    j = ((as_of_stamps - full.origin) // DAY).to_numpy(dtype=np.int64)
    jr = ((as_of_stamps - recent.origin) // DAY).to_numpy(dtype=np.int64)

    # Tasks: created, completed, and the cut-offs that make a task overdue.
    created_day = full.day_index(tasks["created"])
    done_day = full.day_index(tasks["completed"])
    due_day = full.day_index(tasks["due"])
    has_due = due_day >= 0
    created = _before(full.counts(tasks["user_id"], created_day))
    completed = _before(full.counts(tasks["user_id"], done_day))
    # A task is overdue at T when created < T, due < T and not completed < T.
    became_overdue = np.where(has_due, np.maximum(created_day, due_day), -1)
    stopped = np.where(has_due & (done_day >= 0), np.maximum(became_overdue, done_day), -1)
    overdue = _before(full.counts(tasks["user_id"], became_overdue)) - _before(
        full.counts(tasks["user_id"], stopped)
    )
    open_eod = created - completed

    # Tips: shown by impression time, reactions by feedback time.
    reacted = feedback.merge(
        impressions[["tip_id", "category", "timezone"]], on="tip_id", how="inner"
    )
    accepted = reacted[reacted["reaction"] == "accepted"]
    explicit = reacted[reacted["reaction"] != "ignored"]
    shown_day = recent.day_index(impressions["timestamp"])
    accepted_day = recent.day_index(accepted["timestamp"])
    shown = _before(recent.counts(impressions["user_id"], shown_day))
    accepts = _before(recent.counts(accepted["user_id"], accepted_day))

    # Activity: any task change or explicit reaction on a UTC day.
    active = (
        full.counts(tasks["user_id"], created_day)
        + full.counts(tasks["user_id"], done_day)
        + full.counts(explicit["user_id"], full.day_index(explicit["timestamp"]))
    ) > 0
    streak = np.zeros((len(users), full.days + 1), dtype=np.int64)
    for k in range(full.days):
        streak[:, k + 1] = (streak[:, k] + 1) * active[:, k]

    # Preferred hour: the circular mean of local hours of completions and acceptances in 28
    # days (a mean, not a mode: a few dozen events spread over 24 bins make a noisy mode).
    done_recent = recent.day_index(tasks["completed"])
    done = tasks[done_recent >= 0]
    hour_counts = recent.counts(
        done["user_id"],
        done_recent[done_recent >= 0],
        _local_hours(done["completed"], done["timezone"]),
    ) + recent.counts(
        accepted["user_id"],
        accepted_day,
        _local_hours(accepted["timestamp"], accepted["timezone"]),
    )
    hours_28d = _window(_before(hour_counts), jr, 28)
    preferred = np.where(hours_28d.sum(axis=2) > 0, _circular_mean_hour(hours_28d), np.nan)

    tasks_done_7d = _window(completed, j, 7)
    overall_rate = _ratio(_window(accepts, jr, 28), _window(shown, jr, 28))
    values: dict[str, np.ndarray] = {
        "completion_rate_7d": _ratio(
            tasks_done_7d, open_eod[:, np.maximum(j - 7, 0)] + _window(created, j, 7)
        ),
        "tasks_completed_7d": tasks_done_7d,
        "open_tasks_eod": open_eod[:, j],
        "overdue_tasks_eod": overdue[:, j],
        "preferred_hour": preferred,
        "tips_shown_7d": _window(shown, jr, 7),
        "tip_accept_rate_28d": overall_rate,
        "streak_days": streak[:, j],
        "active_days_28d": _window(_before(active.astype(np.int64)), j, 28),
        "tenure_days": (
            (as_of_stamps.to_numpy()[None, :] - first_seen.reindex(users).to_numpy()[:, None])
            // np.timedelta64(1, "D")
        ),
    }
    for category in TIP_CATEGORIES:
        in_cat_shown = impressions["category"].to_numpy() == category
        in_cat_accepted = accepted["category"].to_numpy() == category
        cat_shown = _before(
            recent.counts(impressions["user_id"], np.where(in_cat_shown, shown_day, -1))
        )
        cat_accepts = _before(
            recent.counts(accepted["user_id"], np.where(in_cat_accepted, accepted_day, -1))
        )
        values[f"accept_rate_{category}_28d"] = _smoothed_rate(
            _window(cat_accepts, jr, 28), _window(cat_shown, jr, 28), overall_rate
        )

    exists = first_seen.reindex(users).to_numpy()[:, None] < as_of_stamps.to_numpy()[None, :]
    rows, cols = np.nonzero(exists)
    frame = pd.DataFrame(
        {
            "user_id": users.to_numpy()[rows],
            TIMESTAMP: as_of_stamps[cols],
            PROFILE_AS_OF: as_of_stamps[cols],
        }
    )
    for feature in PROFILE_FEATURES:
        column = values[feature.name][rows, cols]
        if feature.dtype == "int64":
            frame[feature.name] = pd.array(
                np.where(np.isnan(column.astype(float)), None, column), dtype="Int64"
            )
        else:
            frame[feature.name] = column.astype(np.float64)
    return frame.sort_values([TIMESTAMP, "user_id"], ignore_index=True)
