"""The accepted values at every entry point (feature_repo/bounds.py), attacked on purpose."""

import json
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from feature_repo.bounds import EARLIEST, LATEST, known_timezones
from feature_repo.context_features import CONTEXT_FEATURES, request_context_features
from service.api.request import RequestContext
from service.events.models import EVENT_ADAPTER, Feedback

UDF = request_context_features
GOOD = {"timestamp": "2026-11-27T09:30:00+01:00", "timezone": "Europe/Berlin", "tasks": []}

FAR_TIMES = [
    "2300-01-01T00:00:00+00:00",  # past pandas' nanosecond range
    "0001-01-01T00:00:00+00:00",
    "9999-12-31T23:59:59-12:00",  # UTC would be past datetime's end
    "0001-01-01T00:00:00+14:00",  # UTC would be before datetime's start
    "1999-12-31T23:59:59+00:00",
    "2100-01-01T00:00:00+00:00",
]


def context(**changes) -> dict:
    return GOOD | changes


@pytest.mark.parametrize("value", FAR_TIMES)
def test_far_timestamps_are_rejected_naming_the_field(value):
    with pytest.raises(ValidationError) as raised:
        RequestContext.model_validate(context(timestamp=value))
    assert [e["loc"] for e in raised.value.errors()] == [("timestamp",)]


@pytest.mark.parametrize("value", FAR_TIMES)
def test_far_due_dates_are_rejected_naming_the_task(value):
    task = {"id": "t", "title": "x", "due": value}
    with pytest.raises(ValidationError) as raised:
        RequestContext.model_validate(context(tasks=[task]))
    assert {e["loc"][:3] for e in raised.value.errors()} == {("tasks", 0, "due")}


@pytest.mark.parametrize("value", [1764236400, 1764236400.5, True])
def test_a_number_is_not_a_timestamp(value):
    with pytest.raises(ValidationError, match="not a number"):
        RequestContext.model_validate(context(timestamp=value))


@pytest.mark.parametrize(
    "name",
    [
        "America",  # directories of zones: IsADirectoryError before
        "Europe",
        "Etc",
        "America/",
        "../../etc/passwd",
        "/usr/share/zoneinfo/UTC",
        "Europe/B\u0435rlin",  # a Cyrillic "e"
        "Europe/Berlin\x00",
        "utc",
        "",
        "A" * 65,
    ],
)
def test_only_iana_zone_names_are_timezones(name):
    with pytest.raises(ValidationError) as raised:
        RequestContext.model_validate(context(timezone=name))
    assert [e["loc"] for e in raised.value.errors()] == [("timezone",)]


def test_every_known_zone_is_accepted_and_loads():
    for name in sorted(known_timezones()):
        assert RequestContext.model_validate(context(timezone=name)).timezone == name
        ZoneInfo(name)


def test_an_all_day_due_date_ends_that_day_in_the_users_timezone():
    # Todoist sends all-day tasks as a date: due today until local midnight, then overdue.
    tasks = [{"id": "t", "title": "x", "due": "2026-11-27"}]
    tokyo = RequestContext.model_validate(
        {"timestamp": "2026-11-27T14:59:00+00:00", "timezone": "Asia/Tokyo", "tasks": tasks}
    )
    due = tokyo.tasks[0].due
    assert due == datetime(2026, 11, 27, 23, 59, 59, 999999, tzinfo=ZoneInfo("Asia/Tokyo"))
    local = {f: v[0] for f, v in UDF(_request(tokyo)).items()}
    assert (local["due_today_count"], local["overdue_task_count"]) == (1, 0)  # 23:59 in Tokyo
    a_minute_later = tokyo.model_copy(update={"timestamp": datetime(2026, 11, 27, 15, tzinfo=UTC)})
    local = {f: v[0] for f, v in UDF(_request(a_minute_later)).items()}
    assert (local["due_today_count"], local["overdue_task_count"]) == (0, 1)  # the 28th there


def test_an_all_day_due_date_on_a_task_event_ends_in_its_timezone():
    event = EVENT_ADAPTER.validate_python(
        {
            "type": "task_created",
            "event_id": "e1",
            "user_id": "u1",
            "timestamp": "2026-11-20T08:00:00+00:00",
            "task_id": "t1",
            "title": "Pay rent",
            "project": "Home",
            "priority": 2,
            "due": "2026-11-27",
            "timezone": "America/New_York",
        }
    )
    assert event.due == datetime(2026, 11, 28, 4, 59, 59, 999999, tzinfo=UTC)


def test_feedback_needs_a_released_prompt_version_and_a_string_time():
    base = {
        "event_id": "f1",
        "user_id": "u1",
        "tip_id": "t1",
        "reaction": "accepted",
        "prompt_version": "v1",
        "timestamp": "2026-11-27T09:30:00+00:00",
    }
    assert Feedback.model_validate(base).prompt_version == "v1"
    for field, value in [("prompt_version", "v9-shiny"), ("timestamp", 1764236400)]:
        with pytest.raises(ValidationError) as raised:
            Feedback.model_validate(base | {field: value})
        assert [e["loc"] for e in raised.value.errors()] == [(field,)]


def _request(ctx: RequestContext) -> dict[str, list]:
    return {name: [value] for name, value in ctx.feast_request_data().items()}


# --- properties: whatever arrives, a validation error or a value the code downstream takes --

zones = st.sampled_from(sorted(known_timezones())) | st.sampled_from(
    ["America", "Etc", "Europe/", "Nowhere/X", "UTC", "Asia/Kolkata", "Pacific/Kiritimati"]
)
aware_times = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12, minutes=-59))]
    ),
)
times = (
    aware_times.map(datetime.isoformat)
    | st.dates().map(date.isoformat)
    | st.sampled_from(FAR_TIMES)
    | st.integers()
    | st.text(max_size=30)
)
tasks = st.fixed_dictionaries(
    {"id": st.text(min_size=1, max_size=8), "title": st.text(max_size=40)},
    optional={"due": times | st.none(), "priority": st.integers(-1, 6)},
)
contexts = st.fixed_dictionaries(
    {"timestamp": times, "timezone": zones | st.text(max_size=20)},
    optional={"tasks": st.lists(tasks, max_size=4)},
)


@settings(max_examples=400, deadline=None)
@given(raw=contexts)
def test_any_context_is_a_validation_error_or_one_the_features_can_compute(raw):
    try:
        ctx = RequestContext.model_validate(raw)
    except ValidationError:
        return
    assert EARLIEST <= ctx.timestamp < LATEST
    assert all(t.due is None or isinstance(t.due, datetime) for t in ctx.tasks)
    out = UDF(_request(ctx))
    assert list(out) == [f.name for f in CONTEXT_FEATURES]
    assert 0 <= out["hour_of_day"][0] <= 23 and out["open_task_count"][0] == len(ctx.tasks)
    # What a request carries survives the event log's round trip as the same context.
    assert RequestContext.model_validate_json(ctx.model_dump_json()) == ctx


@settings(max_examples=300, deadline=None)
@given(
    timestamp=st.text(max_size=40) | times,
    zone=st.text(max_size=40) | zones,
    tasks_json=st.text(max_size=60)
    | st.lists(st.dictionaries(st.sampled_from(["due", "priority"]), times), max_size=3).map(
        json.dumps
    ),
)
def test_the_context_view_never_raises_whatever_a_stored_row_holds(timestamp, zone, tasks_json):
    out = UDF({"request_timestamp": [timestamp], "timezone": [zone], "tasks_json": [tasks_json]})
    assert {name: len(values) for name, values in out.items()} == {
        f.name: 1 for f in CONTEXT_FEATURES
    }
