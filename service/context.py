"""The request context the recommender sends: when, where, and the user's open tasks.

The simulator logs exactly this with every impression, so training reads the context that
serving would have seen.
"""

import json
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

MAX_TASKS = 500
MAX_TITLE_CHARS = 500


def _known_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA timezone {name!r}") from exc
    return name


Timezone = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_known_timezone)]


class Task(BaseModel):
    """An open task, Todoist-like. Priority 1 is p1, the most urgent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=64)
    title: str = Field(max_length=MAX_TITLE_CHARS)
    priority: Literal[1, 2, 3, 4] = 4
    due: AwareDatetime | None = None
    project: str = Field(default="Inbox", max_length=100)


class RequestContext(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timestamp: AwareDatetime
    timezone: Timezone
    tasks: list[Task] = Field(default_factory=list, max_length=MAX_TASKS)

    def feast_request_data(self) -> dict[str, str]:
        """The request_context RequestSource fields. Titles stay out: features don't use them."""
        return {
            "request_timestamp": self.timestamp.isoformat(),
            "timezone": self.timezone,
            "tasks_json": json.dumps(
                [
                    {"priority": t.priority, "due": t.due.isoformat() if t.due else None}
                    for t in self.tasks
                ],
                separators=(",", ":"),
            ),
        }
