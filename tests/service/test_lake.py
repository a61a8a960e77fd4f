"""The event lake on a local directory and on an S3 endpoint: what it keeps, what it skips,
and what compaction does (what a writer's crash leaves: test_lake_crash.py)."""

import os
import subprocess
from datetime import UTC, date, datetime, timedelta
from functools import cache

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import service.events.lake as lake_module
from flows.compaction import CompactionParams, compaction
from flows.shards import Shard
from flows.simulation.world import World
from service.events.lake import EventLake, LegacyEventLog, open_lake
from service.events.log import EventLog
from service.events.models import Event, Feedback
from service.settings import ENV_VARS, Settings
from tests.conftest import WORLD_END, WORLD_END_TS
from tipml.cli import app
from tipml.serving import BIN


@cache
def world_events() -> tuple[Event, ...]:
    """Every event type, over 10 days of 12 users."""
    return tuple(World(users=12, days=10, seed=5, end=WORLD_END_TS).events())


def feedback(event_id: str, day: date, reaction: str = "accepted") -> Feedback:
    return Feedback(
        event_id=event_id,
        user_id="u1",
        timestamp=datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=12),
        tip_id="tip-1",
        reaction=reaction,
        prompt_version="v1",
    )


def test_every_event_reads_back_as_it_was_written(tmp_path):
    lake = EventLake(tmp_path / "lake", writer_id="w1")
    events = world_events()
    assert lake.append(events) == len(events)
    back = {e.event_id: e for e in lake.events()}
    assert back == {e.event_id: e for e in events}
    assert set(lake.types()) == {e.type for e in events}
    assert not lake.skipped


def test_each_event_is_read_once_as_first_written(tmp_path):
    day = WORLD_END - timedelta(days=1)
    first, second = EventLake(tmp_path, "w1"), EventLake(tmp_path, "w2")
    first.append([feedback("a", day), feedback("b", day)])
    second.append([feedback("a", day, "dismissed"), feedback("c", day)])
    first.append([feedback("b", day, "ignored")])
    read = {r["event_id"]: r["reaction"] for r in EventLake(tmp_path).records()}
    assert read == {"a": "accepted", "b": "accepted", "c": "accepted"}


def test_a_window_reads_only_its_days_and_columns(tmp_path):
    lake = EventLake(tmp_path, "w1")
    days = [WORLD_END - timedelta(days=i) for i in range(5)]
    lake.append([feedback(f"f{i}", day) for i, day in enumerate(days)])
    # A damaged file outside the window: a window that never opens it never counts it.
    outside = lake.day_files("feedback", days[4])[0]
    with open(outside, "r+b") as f:
        f.truncate(10)
    window = lake.read("feedback", start=days[2], end=days[0], columns=["reaction"])
    assert window.column_names == ["reaction"] and len(window) == 3
    assert not lake.skipped
    assert len(lake.read("feedback")) == 4 and lake.skipped == {"unreadable": 1}


def test_a_read_of_some_users_keeps_each_of_their_events_first_copy(tmp_path):
    day = WORLD_END - timedelta(days=1)
    first, second = EventLake(tmp_path, "w1"), EventLake(tmp_path, "w2")
    users = ["u1", "u2", "u3", "u4"]
    first.append([feedback(f"e-{u}", day).model_copy(update={"user_id": u}) for u in users])
    second.append(
        [feedback(f"e-{u}", day, "ignored").model_copy(update={"user_id": u}) for u in users]
    )
    lake = EventLake(tmp_path)
    for shard in Shard.all(2):
        kept = lake.read("feedback", columns=["user_id", "reaction"], users=shard.hash_range)
        assert sorted(kept["user_id"].to_pylist()) == [u for u in users if shard.holds([u])[0]]
        assert set(kept["reaction"].to_pylist()) <= {"accepted"}
    assert lake.read("feedback", columns=["reaction"])["reaction"].to_pylist() == ["accepted"] * 4


@pytest.fixture(scope="module")
def by_user_lake(tmp_path_factory) -> EventLake:
    """The world's events in small row groups: one day's file per type spans several."""
    lake = EventLake(tmp_path_factory.mktemp("by-user"), "w1")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lake_module, "ROW_GROUP_ROWS", 4)
        lake.append(world_events())
    return lake


@given(count=st.integers(1, 12), data=st.data())
@settings(max_examples=25, deadline=None)
def test_a_read_of_a_user_hash_range_is_those_users_rows_of_the_whole_read(
    by_user_lake, count, data
):
    shard = Shard(index=data.draw(st.integers(0, count - 1)), count=count)
    columns = ["user_id", "tip_id", "context.timezone"]
    whole = by_user_lake.read("impression", columns=columns).to_pandas()
    mine = by_user_lake.read("impression", columns=columns, users=shard.hash_range).to_pandas()
    expected = whole[shard.holds(whole["user_id"])].reset_index(drop=True)
    assert mine.equals(expected)


def test_a_user_hash_range_reads_only_the_row_groups_that_may_hold_it(by_user_lake):
    [path, *_] = by_user_lake.day_files("impression", by_user_lake.days("impression")[-1])
    metadata = pq.ParquetFile(path).metadata
    hashes = pq.read_table(path, columns=["user_hash"])["user_hash"].to_pylist()
    assert hashes == sorted(hashes) and metadata.num_row_groups > 4
    shards = Shard.all(4)
    groups = [lake_module._row_groups(metadata, s.hash_range) for s in shards]
    # Sorted by hash, each group spans one shard or the seam of two: a shard reads about a
    # quarter of the groups, and every group is read by some shard.
    assert all(len(g) < metadata.num_row_groups / 2 for g in groups)
    assert set().union(*groups) == set(range(metadata.num_row_groups))


def test_a_file_written_before_the_lake_kept_user_hashes_is_read_by_hashing(tmp_path):
    lake = EventLake(tmp_path, "w1")
    shown = [e for e in world_events() if e.type == "impression"]
    day = shown[0].timestamp.date()
    table = pa.Table.from_pylist(
        [e.model_dump() for e in shown if e.timestamp.date() == day],
        schema=lake_module.SCHEMAS["impression"],
    )
    directory = tmp_path / "type=impression" / f"day={day.isoformat()}"
    directory.mkdir(parents=True)
    pq.write_table(table, directory / "0-legacy.parquet")
    shard = Shard(index=1, count=3)
    mine = lake.read("impression", columns=["user_id", "tip_id"], users=shard.hash_range)
    assert sorted(mine["tip_id"].to_pylist()) == sorted(
        t
        for u, t in zip(table["user_id"].to_pylist(), table["tip_id"].to_pylist(), strict=True)
        if shard.holds([u])[0]
    )
    assert 0 < len(mine) < len(table) and not lake.skipped


def test_a_field_inside_a_struct_is_read_alone_under_its_path(tmp_path):
    lake = EventLake(tmp_path, "w1")
    shown = [e for e in world_events() if e.type == "impression"]
    lake.append(shown)
    zones = lake.read("impression", columns=["tip_id", "context.timezone"])
    assert zones.column_names == ["tip_id", "context.timezone"]
    assert dict(zip(*zones.to_pydict().values(), strict=True)) == {
        e.tip_id: e.context.timezone for e in shown
    }
    # Through a list, by its Parquet path: each row's list of that field of its items.
    dues = lake.read("impression", columns=["tip_id", "context.tasks.list.element.due"])
    assert dict(zip(*dues.to_pydict().values(), strict=True)) == {
        e.tip_id: [t.due for t in e.context.tasks] for e in shown
    }
    assert any(len(d) > 1 for d in dues["context.tasks.list.element.due"].to_pylist())
    columns = ["context.timezone", "context.tasks.list.element.due"]
    empty = lake.read("impression", start=WORLD_END + timedelta(days=1), columns=columns)
    assert empty.schema == pa.schema(
        [
            pa.field("context.timezone", pa.string()),
            pa.field(columns[1], pa.list_(pa.timestamp("us", tz="UTC"))),
        ]
    )


def test_compaction_leaves_one_file_per_closed_day_and_type_and_the_same_events(tmp_path):
    settings = Settings(home=tmp_path / "home")
    lake = open_lake(settings, writer_id="w1")
    events = world_events()
    for start in range(0, len(events), 97):  # many small batches, as the consumer writes
        lake.append(events[start : start + 97])
    lake.append(events[:300])  # a redelivered stretch
    before = {r["event_id"]: r for r in lake.records()}

    report = compaction(CompactionParams(closed_after_days=0), settings)
    assert sum(t.days for t in report.types) > 0
    after_lake = open_lake(settings)
    assert {r["event_id"]: r for r in after_lake.records()} == before
    closed = report.through
    for kind in after_lake.types():
        for day in after_lake.days(kind):
            files = after_lake.day_files(kind, day)
            if day <= closed:
                assert len(files) == 1
                assert pq.read_metadata(files[0]).num_rows == len(after_lake.read(kind, day, day))
    again = compaction(CompactionParams(closed_after_days=0), settings)
    assert sum(t.days for t in again.types) == 0


def test_a_compaction_stopped_between_write_and_delete_reads_the_same(tmp_path, monkeypatch):
    lake = EventLake(tmp_path, "w1")
    day = WORLD_END - timedelta(days=3)
    for i in range(4):
        lake.append([feedback(f"f{i}", day), feedback("shared", day)])
    before = sorted(r["event_id"] for r in lake.records())

    def crash(paths):
        raise OSError("the compactor died here")

    monkeypatch.setattr(lake.storage, "delete", crash)
    with pytest.raises(OSError, match="died"):
        lake.compact("feedback", day)
    assert len(lake.day_files("feedback", day)) == 5  # the four, and the compacted one
    assert sorted(r["event_id"] for r in EventLake(tmp_path).records()) == before
    monkeypatch.undo()
    assert EventLake(tmp_path).compact("feedback", day) == (5, 5)
    assert sorted(r["event_id"] for r in EventLake(tmp_path).records()) == before


def test_the_lake_on_s3_keeps_reads_and_compacts_the_same(s3_endpoint):
    lake = EventLake("s3://lake/events", writer_id="w1")
    lake.clear()
    events = world_events()
    lake.append(events)
    lake.append(events[:50])
    assert {e.event_id: e for e in lake.events()} == {e.event_id: e for e in events}
    kind, day = "impression", lake.days("impression")[0]
    lake.append([e for e in events if e.type == kind and e.timestamp.date() == day][:3])
    files, rows = lake.compact(kind, day)
    assert files >= 2 and len(lake.day_files(kind, day)) == 1
    assert rows == len(lake.read(kind, day, day))
    lake.clear()
    assert lake.is_empty()


@pytest.mark.integration
def test_a_json_lines_home_is_refused_until_imported(tmp_path):
    settings = Settings(home=tmp_path / "home")
    events = world_events()
    EventLog(settings.events_dir, writer_id="old").append(events)
    with pytest.raises(LegacyEventLog, match="import-jsonl"):
        open_lake(settings)

    env = {ENV_VARS["home"]: str(settings.home)}
    refused = subprocess.run(
        [str(BIN / "tipml"), "features", "run"],
        env=os.environ | env,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1 and "import-jsonl" in refused.stderr
    assert "Traceback" not in refused.stderr

    imported = CliRunner().invoke(app, ["events", "import-jsonl"], env=env)
    assert imported.exit_code == 0, imported.output
    assert f"imported {len(events)} events" in imported.output
    assert {e.event_id: e for e in open_lake(settings).events()} == {e.event_id: e for e in events}
    assert not any(settings.events_dir.glob("day=*"))
