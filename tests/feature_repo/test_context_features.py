"""The context on-demand view's function, called as Feast calls it when serving."""

import json

import pytest
from feast.transformation.udf_rehydrate import resolve_udf

from feature_repo.context_features import CONTEXT_FEATURES, request_context_features
from feature_repo.feature_views import request_context_view
from service.api.request import RequestContext, Task

UDF = request_context_view.feature_transformation.udf


def rebuilt_udf():
    """The function as Feast rebuilds it from registry source text when serving."""
    transformation = request_context_view.feature_transformation
    return resolve_udf(udf_string=transformation.udf_string, body=None, preferred_name=UDF.__name__)


def run(context: RequestContext, fn=UDF) -> dict[str, int]:
    data = context.feast_request_data()
    out = fn({name: [value] for name, value in data.items()})
    return {name: values[0] for name, values in out.items()}


CONTEXT = RequestContext(
    timestamp="2026-11-10T22:30:00+00:00",  # 07:30 on Wednesday 11 Nov in Tokyo
    timezone="Asia/Tokyo",
    tasks=[
        Task(id="1", title="late", priority=3, due="2026-11-10T21:00:00+00:00"),
        Task(id="2", title="today", priority=2, due="2026-11-11T05:00:00+00:00"),
        Task(id="3", title="tomorrow", priority=4, due="2026-11-11T16:00:00+00:00"),
        Task(id="4", title="no date", priority=4),
    ],
)


def test_outputs_are_the_table():
    assert list(run(CONTEXT)) == [f.name for f in CONTEXT_FEATURES]


def test_local_time_and_task_counts():
    assert run(CONTEXT) == {
        "hour_of_day": 7,
        "day_of_week": 2,
        "open_task_count": 4,
        "overdue_task_count": 1,
        # 06:00 local on the 11th is due "today"; 01:00 on the 12th local is not
        "due_today_count": 2,
        "top_priority": 2,
    }


def test_source_text_rebuild_gives_the_same_answers():
    # Feast serves from source text: any module-level helper would raise NameError here.
    assert run(CONTEXT, rebuilt_udf()) == run(CONTEXT)


def test_fallbacks_are_the_tables():
    out = rebuilt_udf()(
        {"request_timestamp": ["not a time"], "timezone": ["Nowhere/X"], "tasks_json": ["{"]}
    )
    assert {name: values[0] for name, values in out.items()} == {
        f.name: f.fallback for f in CONTEXT_FEATURES
    }


def test_batches_are_row_wise():
    other = CONTEXT.model_copy(update={"timezone": "UTC", "tasks": []})
    rows = [CONTEXT.feast_request_data(), other.feast_request_data()]
    out = UDF({name: [r[name] for r in rows] for name in rows[0]})
    assert out["hour_of_day"] == [7, 22]
    assert out["open_task_count"] == [4, 0]
    assert out["top_priority"] == [2, 5]


def test_request_data_leaves_titles_out():
    tasks = json.loads(CONTEXT.feast_request_data()["tasks_json"])
    assert tasks[0] == {"priority": 3, "due": "2026-11-10T21:00:00+00:00"}
    assert all("title" not in t for t in tasks)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("timezone", "Mars/Olympus", "unknown IANA timezone"),
        ("timestamp", "2026-11-10T22:30:00", "timezone"),
        ("tasks", [{"id": "1", "title": "x", "priority": 7}], "priority"),
    ],
)
def test_bad_context_is_rejected_naming_the_field(field, value, message):
    data = CONTEXT.model_dump(mode="json") | {field: value}
    with pytest.raises(ValueError, match=message) as info:
        RequestContext.model_validate(data)
    assert field in str(info.value)


def test_the_view_runs_the_tables_function_under_its_feast_name():
    assert UDF is request_context_features
    assert request_context_view.name == "request_context_features"
