"""Daily user profiles over rolling windows: a pure, vectorized transformation, full or daily.

A profile row "as of" T (a UTC midnight) summarises events with timestamps before T, so a
row never sees its own future. It is computed in two steps:

1. Daily aggregates: per (user, UTC day), the counts every feature is made of (tasks created
   and completed, tasks turning overdue and stopping being so, explicit reactions, tips shown
   and accepted by category, the local hours of completions and acceptances).
2. Profiles: every rolling window (at most WINDOW_DAYS) is a sum of aggregates, and every
   all-history value (open and overdue tasks, streak, tenure) is the state at the run's first
   day carried forward by the aggregates.

So a run needs the raw events of the days it computes (and REACTION_HORIZON before them, for
the tip a reaction answers), the WINDOW_DAYS of aggregates before them, and the state at its
first day: a `ProfileStart`. A full recompute is the same run from an empty start at the
first event, which is why the daily run gives exactly the rows a full one gives.

Two rules keep that state small, and hold for both runs alike:
- a task counts as completed from its first completion at or after its creation (a completion
  stamped earlier is clock skew and is ignored);
- a reaction counts when it comes within REACTION_HORIZON after its tip was shown.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import pandas as pd

from feature_repo.categories import TIP_CATEGORIES
from feature_repo.cohort_features import COHORT_KEY
from feature_repo.profile_features import PROFILE_AS_OF, PROFILE_FEATURES

DAY = pd.Timedelta(days=1)
RATE_PSEUDO_COUNT = 5
TIMESTAMP = "event_timestamp"
# The longest rolling window: a run reads this many days of aggregates before its first day.
WINDOW_DAYS = 28
REACTION_HORIZON = pd.Timedelta(days=1)

HOUR_COLUMNS = tuple(f"hour_{h:02d}" for h in range(24))
AGGREGATE_COLUMNS: tuple[str, ...] = (
    "created",
    "completed",
    "overdue_started",
    "overdue_stopped",
    "reacted",
    "shown",
    "accepted",
    *(f"shown_{c}" for c in TIP_CATEGORIES),
    *(f"accepted_{c}" for c in TIP_CATEGORIES),
    *HOUR_COLUMNS,
)
_K = {name: k for k, name in enumerate(AGGREGATE_COLUMNS)}
# What a time zone's users' tips add up to per day: the cohorts' counts.
COHORT_COUNT_COLUMNS: tuple[str, ...] = (
    "shown",
    "accepted",
    *(f"{kind}_{c}" for c in TIP_CATEGORIES for kind in ("shown", "accepted")),
)
_HOURS = slice(_K[HOUR_COLUMNS[0]], _K[HOUR_COLUMNS[-1]] + 1)
USER_STATE_COLUMNS = ("user_id", "first_seen", "created", "completed", "overdue", "streak")
OPEN_TASK_COLUMNS = ("user_id", "task_id", "created", "due", "timezone")


@dataclass(frozen=True)
class EventFrames:
    """Events as frames; all timestamps are tz-aware UTC.

    tasks: user_id, task_id, created, due, timezone (one row per created task)
    completions: user_id, task_id, timestamp (one row per completion, of its user's task)
    impressions: user_id, tip_id, timestamp, category, timezone
    feedback: user_id, tip_id, timestamp, reaction
    """

    tasks: pd.DataFrame
    completions: pd.DataFrame
    impressions: pd.DataFrame
    feedback: pd.DataFrame

    def first_day(self) -> date | None:
        """The UTC day of the earliest event, if any."""
        stamps = [
            frame[column].min()
            for frame, column in (
                (self.tasks, "created"),
                (self.impressions, "timestamp"),
                (self.feedback, "timestamp"),
            )
            if len(frame)
        ]
        return min(stamps).date() if stamps else None


@dataclass(frozen=True)
class ProfileState:
    """All a profile as of midnight `as_of` needs from before its windows.

    users: USER_STATE_COLUMNS, one row per user seen before `as_of`: when first seen, tasks
      created and completed ever, tasks overdue now, and the activity streak.
    open_tasks: OPEN_TASK_COLUMNS, the tasks created before `as_of` and not completed by then.
    """

    as_of: date
    users: pd.DataFrame
    open_tasks: pd.DataFrame

    @classmethod
    def empty(cls, as_of: date) -> "ProfileState":
        users = pd.DataFrame(
            {
                "user_id": pd.Series(dtype=object),
                "first_seen": pd.Series(dtype="datetime64[us, UTC]"),
                **{c: pd.Series(dtype=np.int64) for c in USER_STATE_COLUMNS[2:]},
            }
        )
        tasks = pd.DataFrame(
            {
                "user_id": pd.Series(dtype=object),
                "task_id": pd.Series(dtype=object),
                "created": pd.Series(dtype="datetime64[us, UTC]"),
                "due": pd.Series(dtype="datetime64[us, UTC]"),
                "timezone": pd.Series(dtype=object),
            }
        )
        return cls(as_of, users, tasks)


@dataclass(frozen=True)
class ProfileStart:
    """Where a run starts: the state at its first as-of day and the aggregates of the
    WINDOW_DAYS before it (user_id, day, AGGREGATE_COLUMNS; days without a row are zeros)."""

    state: ProfileState
    history: pd.DataFrame = field(default_factory=lambda: empty_aggregates())


@dataclass(frozen=True)
class ProfileRun:
    """A run's output: the profile rows, the aggregates of the event days it counted (a day
    without a row had no event), the same days' tip counts of its users by time zone (the
    cohorts' share of this run's users: feature_repo/cohort_transforms.py sums the shares),
    and the state at each as-of day it was asked to keep."""

    profiles: pd.DataFrame
    aggregates: pd.DataFrame
    cohort_aggregates: pd.DataFrame
    event_days: list[date]
    states: dict[date, ProfileState]


def empty_cohort_aggregates() -> pd.DataFrame:
    return pd.DataFrame(
        {
            COHORT_KEY: pd.Series(dtype=object),
            "day": pd.Series(dtype=object),
            **{c: pd.Series(dtype=np.int32) for c in COHORT_COUNT_COLUMNS},
        }
    )


def empty_aggregates() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": pd.Series(dtype=object),
            "day": pd.Series(dtype=object),
            **{c: pd.Series(dtype=np.int32) for c in AGGREGATE_COLUMNS},
        }
    )


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


def _midnight(day: date) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC")


def _between(stamps: pd.Series, start: pd.Timestamp, end: pd.Timestamp) -> np.ndarray:
    return ((stamps >= start) & (stamps < end)).to_numpy(dtype=bool, na_value=False)


class _Counter:
    """Counts of AGGREGATE_COLUMNS per (user, day) on the run's days, added column by column."""

    def __init__(self, users: pd.Index, start: pd.Timestamp, days: int) -> None:
        self.users, self.start, self.days = users, start, days
        self.flat: list[np.ndarray] = []

    def day_index(self, stamps: pd.Series) -> np.ndarray:
        """Day number of each timestamp; -1 when missing or outside the run's days."""
        idx = ((stamps - self.start) // DAY).to_numpy(dtype=np.float64, na_value=np.nan)
        ok = ~np.isnan(idx) & (idx >= 0) & (idx < self.days)
        return np.where(ok, idx, -1).astype(np.int64)

    def add(self, column: str | np.ndarray, users: pd.Series, days: np.ndarray) -> None:
        """Count one per row in `column` (a name, or each row's column number)."""
        user_idx = self.users.get_indexer(users)
        keep = (days >= 0) & (user_idx >= 0)
        k = np.full(len(days), _K[column]) if isinstance(column, str) else column
        width = len(AGGREGATE_COLUMNS)
        self.flat.append((user_idx[keep] * self.days + days[keep]) * width + k[keep])

    def add_by_category(
        self, name: str, tips: pd.DataFrame, days: np.ndarray, key: str = "user_id"
    ) -> None:
        """Count tips in `name` and in `name`_<their category>, by their `key` column."""
        self.add(name, tips[key], days)
        categories = tips["category"].to_numpy()
        for category in TIP_CATEGORIES:
            self.add(f"{name}_{category}", tips[key], np.where(categories == category, days, -1))

    def counts(self) -> np.ndarray:
        size = len(self.users) * self.days * len(AGGREGATE_COLUMNS)
        flat = np.concatenate(self.flat) if self.flat else np.zeros(0, np.int64)
        out = np.bincount(flat, minlength=size).astype(np.int32)
        return out.reshape(len(self.users), self.days, len(AGGREGATE_COLUMNS))


def _first_completions(tasks: pd.DataFrame, completions: pd.DataFrame) -> pd.Series:
    """Each task row's first completion at or after its creation (NaT when none).

    A completion completes its own user's task: the join is on (user_id, task_id), so a user's
    profile depends on that user's events only, and a user shard computes it alone.
    """
    rows = tasks[["user_id", "task_id", "created"]].reset_index(names="_row")
    done = completions[["user_id", "task_id", "timestamp"]].merge(rows, on=["user_id", "task_id"])
    done = done[done["timestamp"] >= done["created"]]
    first = done.groupby("_row")["timestamp"].min()
    return first.reindex(range(len(tasks))).set_axis(tasks.index).astype(tasks["created"].dtype)


def _count_tasks(counter: _Counter, tasks: pd.DataFrame) -> None:
    """Created, completed and overdue changes of `tasks` (the open ones carried in, then the
    new ones) on the run's days.

    A task is overdue at T when it was created and due before T and not completed before T:
    it turns overdue on the day of max(created, due) and stops on its completion's day. One
    carried in already overdue turned so before the run, and its state counts it.
    """
    users = tasks["user_id"]
    done_day = counter.day_index(tasks["completed"])
    counter.add("created", users, counter.day_index(tasks["created"]))
    counter.add("completed", users, done_day)
    became = tasks[["created", "due"]].max(axis=1).where(tasks["due"].notna())
    became_day = counter.day_index(became)
    counter.add("overdue_started", users, became_day)
    before_run = (became < counter.start).to_numpy(dtype=bool, na_value=False)
    in_run = before_run | (became_day >= 0)
    stop_day = np.where(in_run & (done_day >= 0), np.maximum(became_day, done_day), -1)
    counter.add("overdue_stopped", users, stop_day)
    done = done_day >= 0
    hours = _local_hours(tasks["completed"][done], tasks["timezone"][done])
    counter.add(_K[HOUR_COLUMNS[0]] + hours, users[done], done_day[done])


def _count_tips(
    counter: _Counter, impressions: pd.DataFrame, feedback: pd.DataFrame, key: str = "user_id"
) -> None:
    """Tips shown by impression time, reactions by feedback time, joined on (user_id, tip_id)
    within REACTION_HORIZON: a reaction answers its own user's tip, so feedback naming another
    user's tip changes no one's profile. Counted by the impression's `key`: its user, or its
    time zone for the cohorts."""
    days = counter.day_index(impressions["timestamp"])
    counter.add_by_category("shown", impressions, days, key)

    lookup = impressions[["user_id", "tip_id", "timestamp", "category", "timezone"]].rename(
        columns={"timestamp": "shown_at"}
    )
    reacted = feedback.merge(lookup, on=["user_id", "tip_id"], how="inner")
    delay = reacted["timestamp"] - reacted["shown_at"]
    reacted = reacted[(delay >= pd.Timedelta(0)) & (delay <= REACTION_HORIZON)]
    explicit = reacted[reacted["reaction"] != "ignored"]
    counter.add("reacted", explicit[key], counter.day_index(explicit["timestamp"]))
    accepted = reacted[reacted["reaction"] == "accepted"]
    accepted_day = counter.day_index(accepted["timestamp"])
    counter.add_by_category("accepted", accepted, accepted_day, key)
    hours = _local_hours(accepted["timestamp"], accepted["timezone"])
    counter.add(_K[HOUR_COLUMNS[0]] + hours, accepted[key], accepted_day)


def _dense_history(history: pd.DataFrame, users: pd.Index, origin: date) -> np.ndarray:
    """The aggregates of the WINDOW_DAYS days from `origin` as a (user, day, column) array."""
    out = np.zeros((len(users), WINDOW_DAYS, len(AGGREGATE_COLUMNS)), dtype=np.int32)
    if len(history) == 0:
        return out
    user_idx = users.get_indexer(history["user_id"])
    day_idx = np.array([(d - origin).days for d in history["day"]], dtype=np.int64)
    keep = (user_idx >= 0) & (day_idx >= 0) & (day_idx < WINDOW_DAYS)
    values = history[list(AGGREGATE_COLUMNS)].to_numpy(dtype=np.int32)
    out[user_idx[keep], day_idx[keep]] = values[keep]
    return out


def _sparse_aggregates(counts: np.ndarray, users: pd.Index, start: date) -> pd.DataFrame:
    """The (user, day) rows of `counts` with any event, days counted from `start`."""
    u, d = np.nonzero(counts.any(axis=2))
    frame = pd.DataFrame(counts[u, d], columns=list(AGGREGATE_COLUMNS))
    frame.insert(0, "day", [start + timedelta(days=int(k)) for k in d])
    frame.insert(0, "user_id", users.to_numpy()[u])
    return frame


def compute_daily_profiles(events: EventFrames, as_of_days: Sequence[date]) -> pd.DataFrame:
    """Profiles from all of history: `run_profiles` from an empty start at the first event."""
    return run_profiles(events, as_of_days).profiles


def run_profiles(
    events: EventFrames,
    as_of_days: Sequence[date],
    start: ProfileStart | None = None,
    keep_states: Sequence[date] = (),
) -> ProfileRun:
    """One row per (user, as-of day) for every user with an event before that day's midnight.

    `as_of_days[i]` yields rows with event_timestamp = midnight UTC starting that day. Columns:
    user_id, event_timestamp, profile_as_of, then PROFILE_FEATURES in table order.

    Without a `start` the run begins empty at the first event: a full recompute. With one, it
    begins at `start.state.as_of`, and `events` need hold only the events from then on (and
    impressions from REACTION_HORIZON before); anything outside the run's days is ignored.
    The run also returns the aggregates of its days and the state at each of `keep_states`.
    """
    days = sorted(set(as_of_days))
    columns = ["user_id", TIMESTAMP, PROFILE_AS_OF, *(f.name for f in PROFILE_FEATURES)]
    first_event = events.first_day()
    if not days:
        return ProfileRun(
            pd.DataFrame(columns=columns), empty_aggregates(), empty_cohort_aggregates(), [], {}
        )
    start = start or ProfileStart(ProfileState.empty(min(first_event or days[0], days[0])))
    state = start.state
    if days[0] < state.as_of:
        raise ValueError(f"as-of day {days[0]} is before the run's start {state.as_of}")
    t0, end = _midnight(state.as_of), _midnight(days[-1])

    tasks = events.tasks[_between(events.tasks["created"], t0, end)]
    completions = events.completions[_between(events.completions["timestamp"], t0, end)]
    lookup = events.impressions[
        _between(events.impressions["timestamp"], t0 - REACTION_HORIZON, end)
    ]
    impressions = lookup[_between(lookup["timestamp"], t0, end)]
    feedback = events.feedback[_between(events.feedback["timestamp"], t0, end)]

    # Each user's earliest event: what the state knew, then the run's (empty pieces left
    # out, so that an empty one does not decide the dtype).
    before = state.users.set_index("user_id")
    stamps = [
        stamp
        for stamp in (
            before["first_seen"],
            tasks.set_index("user_id")["created"],
            impressions.set_index("user_id")["timestamp"],
            feedback.set_index("user_id")["timestamp"],
        )
        if len(stamp)
    ]
    first_seen = (
        pd.concat(stamps).groupby(level=0).min()
        if stamps
        else pd.Series(dtype="datetime64[us, UTC]", index=pd.Index([], dtype=object))
    )
    users = first_seen.index
    carried = before[list(USER_STATE_COLUMNS[2:])].reindex(users, fill_value=0).astype(np.int64)

    # Tasks: those still open at the start, then the run's new ones.
    all_tasks = pd.concat([state.open_tasks, tasks[list(OPEN_TASK_COLUMNS)]], ignore_index=True)
    all_tasks["completed"] = _first_completions(all_tasks, completions)
    counter = _Counter(users, t0, int((end - t0) // DAY))
    _count_tasks(counter, all_tasks)
    _count_tips(counter, lookup, feedback)
    run_counts = counter.counts()
    zones = _Counter(pd.Index(lookup["timezone"].unique()), t0, counter.days)
    _count_tips(zones, lookup, feedback, key="timezone")

    counts = np.concatenate(
        [
            _dense_history(start.history, users, state.as_of - timedelta(days=WINDOW_DAYS)),
            run_counts,
        ],
        axis=1,
    )
    cum = np.zeros((counts.shape[0], counts.shape[1] + 1, counts.shape[2]), dtype=np.int32)
    np.cumsum(counts, axis=1, out=cum[:, 1:])
    at = WINDOW_DAYS + np.array([(d - state.as_of).days for d in days], dtype=np.int64)
    since_start = cum[:, at] - cum[:, WINDOW_DAYS][:, None]
    last_7 = cum[:, at] - cum[:, at - 7]
    last_28 = cum[:, at] - cum[:, at - WINDOW_DAYS]

    def total(name: str) -> np.ndarray:
        """An all-history count at each as-of day: the start's, plus the run's."""
        return carried[name].to_numpy()[:, None] + since_start[..., _K[name]]

    created, completed = total("created"), total("completed")
    overdue = (
        carried["overdue"].to_numpy()[:, None]
        + since_start[..., _K["overdue_started"]]
        - since_start[..., _K["overdue_stopped"]]
    )
    open_now = created - completed
    active = (
        counts[..., _K["created"]] + counts[..., _K["completed"]] + counts[..., _K["reacted"]]
    ) > 0
    active_cum = np.concatenate(
        [np.zeros((len(users), 1), np.int64), np.cumsum(active, axis=1)], axis=1
    )
    streak = np.zeros((len(users), counter.days + 1), dtype=np.int64)
    streak[:, 0] = carried["streak"].to_numpy(dtype=np.int64)
    for k in range(counter.days):
        streak[:, k + 1] = (streak[:, k] + 1) * active[:, WINDOW_DAYS + k]

    hours_28d = last_28[..., _HOURS]
    done_7d = last_7[..., _K["completed"]]
    overall_rate = _ratio(last_28[..., _K["accepted"]], last_28[..., _K["shown"]])
    stamps = pd.DatetimeIndex([_midnight(d) for d in days])
    values: dict[str, np.ndarray] = {
        # open 7 days ago + created since = open now + completed since
        "completion_rate_7d": _ratio(done_7d, open_now + done_7d),
        "tasks_completed_7d": done_7d,
        "open_tasks_eod": open_now,
        "overdue_tasks_eod": overdue,
        "preferred_hour": np.where(
            hours_28d.sum(axis=2) > 0, _circular_mean_hour(hours_28d), np.nan
        ),
        "tips_shown_7d": last_7[..., _K["shown"]],
        "tip_accept_rate_28d": overall_rate,
        "streak_days": streak[:, at - WINDOW_DAYS],
        "active_days_28d": active_cum[:, at] - active_cum[:, at - WINDOW_DAYS],
        "tenure_days": (
            (stamps.to_numpy()[None, :] - first_seen.to_numpy()[:, None]) // np.timedelta64(1, "D")
        ),
    }
    for category in TIP_CATEGORIES:
        values[f"accept_rate_{category}_28d"] = _smoothed_rate(
            last_28[..., _K[f"accepted_{category}"]],
            last_28[..., _K[f"shown_{category}"]],
            overall_rate,
        )

    exists = first_seen.to_numpy()[:, None] < stamps.to_numpy()[None, :]
    rows, cols = np.nonzero(exists)
    frame = pd.DataFrame(
        {"user_id": users.to_numpy()[rows], TIMESTAMP: stamps[cols], PROFILE_AS_OF: stamps[cols]}
    )
    for feature in PROFILE_FEATURES:
        column = values[feature.name][rows, cols]
        if feature.dtype == "int64":
            frame[feature.name] = pd.array(
                np.where(np.isnan(column.astype(float)), None, column), dtype="Int64"
            )
        else:
            frame[feature.name] = column.astype(np.float64)

    states = {}
    for day in sorted(set(keep_states) & set(days)):
        i = days.index(day)
        midnight = _midnight(day)
        seen_before = exists[:, i]
        users_state = pd.DataFrame(
            {
                "user_id": users.to_numpy()[seen_before],
                "first_seen": first_seen.to_numpy()[seen_before],
                "created": created[seen_before, i],
                "completed": completed[seen_before, i],
                "overdue": overdue[seen_before, i],
                "streak": values["streak_days"][seen_before, i],
            }
        )
        still_open = (all_tasks["created"] < midnight) & ~(all_tasks["completed"] < midnight)
        states[day] = ProfileState(
            day,
            users_state,
            all_tasks.loc[still_open, list(OPEN_TASK_COLUMNS)].reset_index(drop=True),
        )
    return ProfileRun(
        profiles=frame.sort_values([TIMESTAMP, "user_id"], ignore_index=True),
        aggregates=_sparse_aggregates(run_counts, users, state.as_of),
        cohort_aggregates=_sparse_aggregates(zones.counts(), zones.users, state.as_of)
        .rename(columns={"user_id": COHORT_KEY})
        .loc[:, [COHORT_KEY, "day", *COHORT_COUNT_COLUMNS]],
        event_days=[state.as_of + timedelta(days=k) for k in range(counter.days)],
        states=states,
    )
