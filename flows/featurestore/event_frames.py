"""Read the event lake into the frames the feature transformations take."""

from datetime import date

from feature_repo.profile_transforms import EventFrames
from service.events.lake import EventLake


def load_event_frames(
    lake: EventLake, start: date | None = None, end: date | None = None
) -> EventFrames:
    """Events on UTC days [start, end] (either open) as frames, reading only what they use."""
    tasks = (
        lake.read(
            "task_created", start, end, ["user_id", "task_id", "timestamp", "due", "timezone"]
        )
        .to_pandas()
        .rename(columns={"timestamp": "created"})
    )
    completions = lake.read("task_completed", start, end, ["task_id", "timestamp"]).to_pandas()
    # Only the context's timezone: the rest of the logged request is most of the bytes.
    impressions = lake.read(
        "impression", start, end, ["user_id", "tip_id", "timestamp", "category", "context.timezone"]
    ).rename_columns(["user_id", "tip_id", "timestamp", "category", "timezone"])
    feedback = lake.read("feedback", start, end, ["user_id", "tip_id", "timestamp", "reaction"])
    return EventFrames(
        tasks=tasks,
        completions=completions,
        impressions=impressions.to_pandas(),
        feedback=feedback.to_pandas(),
    )
