"""Read the event log into the frames the feature transformations take."""

import pandas as pd

from feature_repo.profile_transforms import EventFrames
from service.events.log import EventLog


def _utc(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True, format="ISO8601")


def load_event_frames(log: EventLog) -> EventFrames:
    created: list[dict] = []
    completed: dict[str, str] = {}
    impressions: list[dict] = []
    feedback: list[dict] = []
    for record in log.records():
        kind = record["type"]
        if kind == "task_created":
            created.append(record)
        elif kind == "task_completed":
            # A task completed twice (reopened, then done again) counts from its first completion.
            completed.setdefault(record["task_id"], record["timestamp"])
        elif kind == "impression":
            impressions.append(
                {
                    "user_id": record["user_id"],
                    "tip_id": record["tip_id"],
                    "timestamp": record["timestamp"],
                    "category": record["category"],
                    "timezone": record["context"]["timezone"],
                }
            )
        elif kind == "feedback":
            feedback.append(
                {
                    "user_id": record["user_id"],
                    "tip_id": record["tip_id"],
                    "timestamp": record["timestamp"],
                    "reaction": record["reaction"],
                }
            )

    tasks = pd.DataFrame(
        created, columns=["user_id", "task_id", "timestamp", "due", "timezone"]
    ).rename(columns={"timestamp": "created"})
    tasks["created"] = _utc(tasks["created"])
    tasks["due"] = _utc(tasks["due"])
    tasks["completed"] = _utc(tasks["task_id"].map(completed))
    imps = pd.DataFrame(
        impressions, columns=["user_id", "tip_id", "timestamp", "category", "timezone"]
    )
    imps["timestamp"] = _utc(imps["timestamp"])
    fb = pd.DataFrame(feedback, columns=["user_id", "tip_id", "timestamp", "reaction"])
    fb["timestamp"] = _utc(fb["timestamp"])
    return EventFrames(tasks=tasks, impressions=imps, feedback=fb)
