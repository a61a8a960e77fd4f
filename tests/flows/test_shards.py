"""User shards: a stable assignment, where they run, and a shard's read of the lake."""

import hashlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feature_repo.user_hash import user_hash
from flows.shards import Shard, shard_of, shards_of


def test_a_users_shard_is_pinned_across_processes_and_releases():
    # Pinned values: a change here moves users between shards on every deployment.
    assert [shard_of(u, 8) for u in ("u000000", "u000001", "u000002", "nobody")] == [7, 6, 3, 3]
    digest = hashlib.sha256("ü-ß".encode()).digest()
    assert user_hash("ü-ß") == int.from_bytes(digest[:8], "big") >> 1
    assert shard_of("ü-ß", 1000) == user_hash("ü-ß") * 1000 // 2**63 == 102


@given(count=st.integers(1, 4096), hashes=st.lists(st.integers(0, 2**63 - 1), max_size=20))
def test_shards_are_contiguous_hash_ranges_that_cover_every_hash_once(count, hashes):
    ranges = [shard.hash_range for shard in Shard.all(count)]
    assert ranges[0][0] == 0 and ranges[-1][1] == 2**63 - 1
    assert all(last + 1 == first for (_, last), (first, _) in itertools.pairwise(ranges))
    for h in hashes:
        first, last = ranges[h * count >> 63]
        assert first <= h <= last


@given(ids=st.lists(st.text(min_size=1, max_size=20), max_size=50), count=st.integers(1, 64))
def test_every_user_is_in_exactly_one_shard(ids, count):
    held = [Shard(index=i, count=count).holds(ids) for i in range(count)]
    assert all(sum(h[k] for h in held) == 1 for k in range(len(ids)))
    assert list(shards_of(ids, count)) == [shard_of(u, count) for u in ids]


@given(count=st.integers(1, 64), fraction=st.floats(0.001, 1.0))
def test_a_user_sample_is_the_hashes_below_its_fraction_whatever_the_shard_count(count, fraction):
    parts = [r for r in (s.sampled(fraction) for s in Shard.all(count)) if r is not None]
    cutoff = int(fraction * 2.0**63) - 1
    assert parts[0][0] == 0 and parts[-1][1] == cutoff
    assert all(last + 1 == first for (_, last), (first, _) in itertools.pairwise(parts))


def test_a_user_sample_too_small_to_hold_a_user_fails_as_not_enough_data(tmp_path):
    from datetime import UTC, datetime

    from flows.modeling.training_set import NotEnoughData
    from flows.training_shards import BuildParams, training_set_shards
    from service.settings import Settings

    params = BuildParams(shards=4, user_sample=1e-20)
    with pytest.raises(NotEnoughData, match="holds no user"):
        training_set_shards.fn(Settings(home=tmp_path), params, datetime(2026, 11, 20, tzinfo=UTC))


def test_a_shard_names_an_index_below_its_count():
    assert [s.name for s in Shard.all(3)] == ["0-of-3", "1-of-3", "2-of-3"]
    with pytest.raises(ValueError, match="not below the count"):
        Shard(index=3, count=3)


def test_where_shards_run_is_configuration_only():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from flows.shards import task_runner
    from service.settings import Settings

    assert isinstance(task_runner(Settings()), ThreadPoolTaskRunner)
    local = task_runner(Settings(dask_address="local"))
    assert isinstance(local, DaskTaskRunner) and local.address is None
    remote = task_runner(Settings(dask_address="tcp://10.0.0.5:8786"))
    assert remote.address == "tcp://10.0.0.5:8786"
    with pytest.raises(ValueError, match="dask_address"):
        Settings(dask_address="http://10.0.0.5:8786")


def test_a_shards_events_are_its_users_rows_of_the_whole_read(tmp_path):
    from flows.featurestore.event_frames import load_event_frames
    from flows.simulation.world import World
    from service.events.lake import EventLake
    from tests.conftest import WORLD_END_TS

    lake = EventLake(tmp_path, "w1")
    lake.append(World(users=30, days=6, seed=3, end=WORLD_END_TS).events())
    whole = load_event_frames(lake)
    parts = [load_event_frames(lake, shard=shard) for shard in Shard.all(3)]
    for name in ("tasks", "completions", "impressions", "feedback"):
        frame = getattr(whole, name)
        for shard, part in zip(Shard.all(3), parts, strict=True):
            mine = frame[shard.holds(frame["user_id"])].reset_index(drop=True)
            assert getattr(part, name).equals(mine), (name, shard.name)
        assert sum(len(getattr(p, name)) for p in parts) == len(frame) > 0


@given(st.integers(1, 4096).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n))))
def test_a_shard_is_read_back_from_its_name(index_count):
    index, count = index_count
    shard = Shard(index=index, count=count)
    assert Shard.from_name(shard.name) == shard


# Near misses too: leading zeros, other scripts' digits, counts over the limit.
NEAR_NAMES = st.from_regex(r"[0-9\u0660-\u0669]{1,5}-of-[0-9]{1,5}", fullmatch=True)


@given(st.one_of(st.text(max_size=20), NEAR_NAMES))
def test_any_other_name_is_no_shard(name):
    shard = Shard.from_name(name)
    assert shard is None or shard.name == name
