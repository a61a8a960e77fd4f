"""Read the event lake into the frames the feature transformations take."""

from datetime import date

from feature_repo.profile_transforms import EventFrames
from flows.shards import WHOLE, Shard
from service.events.lake import EventLake


def load_event_frames(
    lake: EventLake, start: date | None = None, end: date | None = None, shard: Shard = WHOLE
) -> EventFrames:
    """`shard`'s events on UTC days [start, end] (either open) as frames, reading only the
    columns they use, and of each file only the row groups of the shard's users."""
    users = shard.lake_users
    tasks = (
        lake.read(
            "task_created",
            start,
            end,
            ["user_id", "task_id", "timestamp", "due", "timezone"],
            users=users,
        )
        .to_pandas()
        .rename(columns={"timestamp": "created"})
    )
    completions = lake.read(
        "task_completed", start, end, ["user_id", "task_id", "timestamp"], users=users
    ).to_pandas()
    # Only the context's timezone: the rest of the logged request is most of the bytes.
    impressions = lake.read(
        "impression",
        start,
        end,
        ["user_id", "tip_id", "timestamp", "category", "context.timezone"],
        users=users,
    ).rename_columns(["user_id", "tip_id", "timestamp", "category", "timezone"])
    feedback = lake.read(
        "feedback", start, end, ["user_id", "tip_id", "timestamp", "reaction"], users=users
    )
    return EventFrames(
        tasks=tasks,
        completions=completions,
        impressions=impressions.to_pandas(),
        feedback=feedback.to_pandas(),
    )
