"""Request-time context features: the CONTEXT_FEATURES table and the function that computes
them, `request_context_features`.

The same function computes them for training (from the context logged with each impression,
via get_historical_features) and for serving (from the live request, via
get_online_features): it is the function of the on-demand feature view
(feature_repo/feature_views.py), which Feast runs on both paths, so there is no second
implementation to drift. It imports no Feast, so what computes context without a store (the
benchmark's scenarios, a degraded read) starts quickly.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class ContextFeature(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    dtype: Literal["int64"]
    freshness: Literal["per-request"]
    source: str
    fallback: int
    description: str


CONTEXT_FEATURES: tuple[ContextFeature, ...] = (
    ContextFeature(
        name="hour_of_day",
        dtype="int64",
        freshness="per-request",
        source="request_timestamp, timezone",
        fallback=12,
        description="Hour (0-23) in the user's timezone; fallback when the time is unreadable.",
    ),
    ContextFeature(
        name="day_of_week",
        dtype="int64",
        freshness="per-request",
        source="request_timestamp, timezone",
        fallback=0,
        description="Monday=0 .. Sunday=6 in the user's timezone.",
    ),
    ContextFeature(
        name="open_task_count",
        dtype="int64",
        freshness="per-request",
        source="tasks_json",
        fallback=0,
        description="Open tasks in the request's task list.",
    ),
    ContextFeature(
        name="overdue_task_count",
        dtype="int64",
        freshness="per-request",
        source="tasks_json, request_timestamp",
        fallback=0,
        description="Open tasks whose due time is before the request time.",
    ),
    ContextFeature(
        name="due_today_count",
        dtype="int64",
        freshness="per-request",
        source="tasks_json, request_timestamp, timezone",
        fallback=0,
        description="Open tasks due on the request's local calendar day.",
    ),
    ContextFeature(
        name="top_priority",
        dtype="int64",
        freshness="per-request",
        source="tasks_json",
        fallback=5,
        description="Most urgent priority among open tasks (1 = p1 .. 4 = p4); 5 when none.",
    ),
)


def request_context_features(inputs: dict[str, Any]) -> dict[str, Any]:
    # Feast rebuilds this function from its source text when serving: everything it uses must
    # be imported or defined inside it. Fallbacks repeat CONTEXT_FEATURES; a test pins them.
    # It never raises, whatever a row holds: requests are validated before they get here, but
    # the training read runs it over every logged context, and one unreadable row must cost
    # that row its values, not the whole read. Each unreadable part falls back on its own.
    import contextlib
    import json
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    unreadable = (TypeError, ValueError, KeyError, AttributeError, OverflowError, OSError)
    out: dict[str, list[int]] = {
        "hour_of_day": [],
        "day_of_week": [],
        "open_task_count": [],
        "overdue_task_count": [],
        "due_today_count": [],
        "top_priority": [],
    }
    for ts_text, tz_name, tasks_text in zip(
        inputs["request_timestamp"], inputs["timezone"], inputs["tasks_json"], strict=True
    ):
        try:
            zone = ZoneInfo(tz_name or "UTC")
        except unreadable:  # unknown names, and directories ("America") raise OSErrors
            zone = UTC
        try:
            now = datetime.fromisoformat(ts_text).astimezone(zone)
        except unreadable:
            now = None
        try:
            tasks = json.loads(tasks_text) if tasks_text else []
        except unreadable:
            tasks = []
        if not isinstance(tasks, list):
            tasks = []
        tasks = [t for t in tasks if isinstance(t, dict)]

        overdue = due_today = 0
        priorities = []
        for task in tasks:
            with contextlib.suppress(*unreadable):
                priorities.append(int(task["priority"]))
            if now is None or not task.get("due"):
                continue
            try:
                due = datetime.fromisoformat(task["due"]).astimezone(zone)
                is_overdue, is_today = due < now, due.date() == now.date()
            except unreadable:  # a naive or far-off due time cannot be placed: no due date
                continue
            overdue += is_overdue
            due_today += is_today

        out["hour_of_day"].append(now.hour if now is not None else 12)
        out["day_of_week"].append(now.weekday() if now is not None else 0)
        out["open_task_count"].append(len(tasks))
        out["overdue_task_count"].append(overdue)
        out["due_today_count"].append(due_today)
        out["top_priority"].append(min(priorities, default=5))
    return out
