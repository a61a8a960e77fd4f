"""The append-only event log: day partitions, torn writes, duplicates."""

from datetime import UTC, date, datetime

import pytest
from pydantic import ValidationError

from service.events.log import EventLog
from service.events.models import EVENT_ADAPTER, Feedback


def feedback(event_id: str, day: int, reaction: str = "accepted") -> Feedback:
    return Feedback(
        event_id=event_id,
        user_id="u1",
        timestamp=datetime(2026, 11, day, 12, tzinfo=UTC),
        tip_id="tip-1",
        reaction=reaction,
        prompt_version="v1",
    )


def test_events_land_in_their_utc_day_and_read_back_in_day_order(tmp_path):
    log = EventLog(tmp_path, writer_id="w1")
    assert log.append([feedback("b", 3), feedback("a", 2)]) == 2
    assert log.days() == [date(2026, 11, 2), date(2026, 11, 3)]
    assert [r["event_id"] for r in log.records()] == ["a", "b"]
    assert EVENT_ADAPTER.validate_python(next(log.records())) == feedback("a", 2)


def test_each_event_id_is_read_once_whoever_wrote_it(tmp_path):
    EventLog(tmp_path, writer_id="w1").append([feedback("a", 2), feedback("b", 2)])
    EventLog(tmp_path, writer_id="w2").append([feedback("a", 2), feedback("c", 2)])
    assert sorted(r["event_id"] for r in EventLog(tmp_path).records()) == ["a", "b", "c"]


def test_a_torn_last_line_is_skipped_and_the_next_append_stays_readable(tmp_path):
    log = EventLog(tmp_path, writer_id="w1")
    log.append([feedback("a", 2)])
    segment = next(tmp_path.glob("day=*/w1.jsonl"))
    with open(segment, "ab") as f:
        f.write(b'{"event_id": "torn", "ty')
    log.append([feedback("b", 2)])
    assert [r["event_id"] for r in log.records()] == ["a", "b"]


def test_filters_by_type_and_day(tmp_path):
    log = EventLog(tmp_path)
    log.append([feedback("a", 2), feedback("b", 3), feedback("c", 4)])
    assert [r["event_id"] for r in log.records(start=date(2026, 11, 3))] == ["b", "c"]
    assert [r["event_id"] for r in log.records(end=date(2026, 11, 2))] == ["a"]
    assert list(log.records(types=frozenset({"impression"}))) == []


def test_empty_log(tmp_path):
    log = EventLog(tmp_path / "nothing")
    assert log.is_empty() and log.days() == [] and list(log.records()) == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"reaction": "loved"}, "reaction"),
        ({"event_id": ""}, "event_id"),
        ({"timestamp": "2026-11-02T12:00:00"}, "timestamp"),
        ({"prompt_version": "V 1"}, "prompt_version"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_malformed_events_are_rejected_naming_the_field(change, field):
    data = feedback("a", 2).model_dump(mode="json") | change
    with pytest.raises(ValidationError) as info:
        EVENT_ADAPTER.validate_python(data)
    assert field in str(info.value)
