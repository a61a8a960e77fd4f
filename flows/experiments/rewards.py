"""The one definition of a decision's reward, and the one read of logged decisions with their
rewards: experiment reports, OPE and bandit updates use both.

A Decision's reward is the first reaction to its tip inside the attribution window:
"accepted" -> 1, "dismissed" or "ignored" -> 0, and no reaction at all -> 0 once the window
has closed. Feedback that arrives after the window is not attributed: otherwise a reward
already settled (0 at the window's close) would flip later, and every report, sequential test
and bandit update computed in between would have used a value the log later contradicts.

A decision whose outcome is "error" showed no tip, so it has no reward; it still counts as a
decision (assignment, sample ratio) and as an LLM error (guardrails).
"""

from collections.abc import Collection
from datetime import date, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from service.events.lake import EventLake
from service.events.models import ATTRIBUTION_WINDOW, Decision

DECISION_COLUMNS: tuple[str, ...] = tuple(Decision.model_fields)
REWARD_COLUMNS: tuple[str, ...] = (
    "reaction",  # the attributed reaction, None when there was none (yet)
    "feedback_at",
    "shown",  # a tip was shown: outcome is not "error"
    "settled",  # the reward is known: shown, and feedback came or the window closed
    "settled_at",  # when it became known: the feedback's time or the window's close
    "reward",  # 1/0 when settled, <NA> otherwise
    "dismissed",  # 1/0 when settled, <NA> otherwise
)
_FEEDBACK_COLUMNS = ("tip_id", "timestamp", "reaction")


class ExperimentNotLogged(ValueError):
    """No decision of this experiment is in the log before as_of."""

    def __init__(self, experiment: str, known: list[str]) -> None:
        self.experiment = experiment
        self.known = known
        listed = ", ".join(known) if known else "none"
        super().__init__(
            f"no decisions for experiment {experiment!r}; experiments logged: {listed}"
        )


def _utc(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True, format="ISO8601")


def _require_aware(as_of: datetime) -> pd.Timestamp:
    if as_of.tzinfo is None:
        raise ValueError(f"as_of must carry a timezone, got {as_of.isoformat()}")
    return pd.Timestamp(as_of).tz_convert("UTC")


def attribute_rewards(
    decisions: pd.DataFrame,
    feedback: pd.DataFrame,
    as_of: datetime,
    window: timedelta = ATTRIBUTION_WINDOW,
) -> pd.DataFrame:
    """One row per decision made before `as_of`: its fields plus REWARD_COLUMNS.

    `decisions` has the Decision fields, `feedback` at least tip_id, timestamp and reaction
    (timestamps as ISO strings or datetimes). Feedback counts when it arrived before `as_of`
    and before the window closed; with several, the earliest wins (the user's first answer).
    """
    cutoff = _require_aware(as_of)
    frame = decisions.loc[:, list(DECISION_COLUMNS)].astype(
        {"propensity": float, "latency_ms": float}
    )
    frame["timestamp"] = _utc(frame["timestamp"])
    frame = frame[frame["timestamp"] < cutoff].reset_index(drop=True)
    closes = frame["timestamp"] + window

    answers = feedback.loc[:, list(_FEEDBACK_COLUMNS)].copy()
    answers["timestamp"] = _utc(answers["timestamp"])
    answers = answers[answers["timestamp"] < cutoff]
    matched = (
        frame[["tip_id"]]
        .assign(row=frame.index, closes=closes)
        .merge(answers, on="tip_id", how="inner")
    )
    matched = matched[matched["timestamp"] < matched["closes"]]
    first = (
        matched.sort_values(["timestamp"], kind="stable").drop_duplicates("row").set_index("row")
    )

    frame["reaction"] = first["reaction"].reindex(frame.index).astype(object)
    frame["reaction"] = frame["reaction"].where(frame["reaction"].notna(), None)
    frame["feedback_at"] = first["timestamp"].reindex(frame.index)
    frame["shown"] = frame["outcome"] != "error"
    answered = frame["reaction"].notna()
    frame["settled"] = frame["shown"] & (answered | (closes <= cutoff))
    frame["settled_at"] = frame["feedback_at"].where(answered, closes).where(frame["settled"])
    frame["reward"] = (frame["reaction"] == "accepted").astype("Int64").where(frame["settled"])
    frame["dismissed"] = (frame["reaction"] == "dismissed").astype("Int64").where(frame["settled"])
    return frame


def decision_rewards(
    lake: EventLake,
    as_of: datetime,
    start: date | None = None,
    experiments: Collection[str] | None = None,
) -> pd.DataFrame:
    """Every decision logged before `as_of` with its reward, read from the event lake.

    `start` skips the day partitions before it, feedback included; `experiments` keeps the
    decisions of these experiments only.
    """
    cutoff = _require_aware(as_of)
    # Day partitions are UTC days of the event time: nothing after as_of's day can count.
    decisions = lake.read("decision", start, cutoff.date(), DECISION_COLUMNS)
    if experiments is not None:
        wanted = pa.array(list(experiments), pa.string())
        decisions = decisions.filter(pc.is_in(decisions["experiment"], wanted))
    feedback = lake.read("feedback", start, cutoff.date(), _FEEDBACK_COLUMNS)
    return attribute_rewards(decisions.to_pandas(), feedback.to_pandas(), as_of)


def experiment_rows(frame: pd.DataFrame, experiment: str) -> pd.DataFrame:
    """The decisions of one experiment, or ExperimentNotLogged naming those that exist."""
    rows = frame[frame["experiment"] == experiment]
    if rows.empty:
        raise ExperimentNotLogged(experiment, sorted(frame["experiment"].unique()))
    return rows
