"""The request context the recommender sends (when, where, and the user's open tasks), and
the shape of the ids every request and event carries.

The simulator logs exactly this context with every impression, so training reads the context
that serving would have seen.
"""

import json
from collections.abc import Sequence
from datetime import date, datetime
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from feature_repo.bounds import Due, Timestamp, Timezone, resolve_due

# Ids of users, events, tips and requests: printable ASCII, safe in a log line and a NATS header.
Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$")]
MAX_TASKS = 500
MAX_TITLE_CHARS = 500


class Task(BaseModel):
    """An open task, Todoist-like. Priority 1 is p1, the most urgent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=64)
    title: str = Field(max_length=MAX_TITLE_CHARS)
    priority: Literal[1, 2, 3, 4] = 4
    due: Due | None = Field(
        default=None, description="A time with an offset, or an all-day date (YYYY-MM-DD)."
    )
    project: str = Field(default="Inbox", max_length=100)


class RequestContext(BaseModel):
    """After validation every task's `due` is a time: all-day dates end in `timezone`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timestamp: Timestamp
    timezone: Timezone
    tasks: list[Task] = Field(default_factory=list, max_length=MAX_TASKS)

    @model_validator(mode="after")
    def _all_day_dues_in_timezone(self) -> Self:
        if not any(type(t.due) is date for t in self.tasks):
            return self
        tasks = [
            t.model_copy(update={"due": resolve_due(t.due, self.timezone)}) for t in self.tasks
        ]
        return self.model_copy(update={"tasks": tasks})

    def feast_request_data(self) -> dict[str, str]:
        """The request_context RequestSource fields. Titles stay out: features don't use them."""
        return request_data(
            self.timestamp, self.timezone, [(t.priority, t.due) for t in self.tasks]
        )


def request_data(
    timestamp: datetime, timezone: str, tasks: Sequence[tuple[int, datetime | None]]
) -> dict[str, str]:
    """The request_context RequestSource fields of a context: its time, zone and each task's
    (priority, due). One definition, for a live request and for a logged impression alike."""
    return {
        "request_timestamp": timestamp.isoformat(),
        "timezone": timezone,
        "tasks_json": json.dumps(
            [{"priority": p, "due": due.isoformat() if due else None} for p, due in tasks],
            separators=(",", ":"),
        ),
    }
