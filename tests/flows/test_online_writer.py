"""The fast online writer stores exactly what Feast's own writer stores."""

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from feast.infra.provider import get_provider

from feature_repo.feature_views import user_profile
from feature_repo.profile_features import PROFILE_AS_OF, PROFILE_FEATURES
from flows.featurestore.online_writer import _entity_keys, write_online
from service.scoring.feature_store import apply_definitions, open_store
from service.settings import Settings
from tests.conftest import WORLD_END_TS, require_server

REDIS_DB = 14


def profile_rows(users: int) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    when = pd.Timestamp(WORLD_END_TS)
    rows = pd.DataFrame(
        {
            "user_id": [f"w{i}" for i in range(users)],
            "event_timestamp": when,
            PROFILE_AS_OF: when - pd.Timedelta(days=1),
        }
    )
    for f in PROFILE_FEATURES:
        if f.dtype == "int64":
            rows[f.name] = pd.array(rng.integers(0, 30, users), dtype="Int64")
        else:
            rows[f.name] = rng.integers(0, 7, users) / 7
    rows.loc[3, "preferred_hour"] = pd.NA  # nulls must round-trip as missing
    rows.loc[4, "tip_accept_rate_28d"] = np.nan
    return rows


def stored(store, rows) -> list:
    view = store.get_feature_view(user_profile.name)
    return get_provider(store.config).online_read(store.config, view, _entity_keys(rows.user_id))


def settings_for(tmp_path, kind: str, name: str) -> Settings:
    if kind == "redis":
        require_server("Redis", "127.0.0.1", 6379)
        return Settings(
            home=tmp_path / name,
            online_store="redis",
            redis_url=f"127.0.0.1:6379,db={REDIS_DB + (name == 'ours')}",
        )
    return Settings(home=tmp_path / name)


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("redis", marks=pytest.mark.integration)])
def test_reads_back_identical_to_feasts_writer(tmp_path, kind):
    rows = profile_rows(300)
    stores = {}
    for name in ("feast", "ours"):
        store = open_store(settings_for(tmp_path, kind, name))
        apply_definitions(store)
        if kind == "redis":
            get_provider(store.config).online_store._get_client(store.config.online_store).flushdb()
        stores[name] = store
    stores["feast"].write_to_online_store(user_profile.name, rows)
    view = stores["ours"].get_feature_view(user_profile.name)
    progress = []
    written = write_online(
        stores["ours"], view, rows, chunk_size=128, progress=lambda d, t: progress.append(d)
    )

    assert written == 300 and progress == [128, 256, 300]
    theirs, ours = stored(stores["feast"], rows), stored(stores["ours"], rows)
    assert ours == theirs
    assert theirs[3][1]["preferred_hour"].WhichOneof("val") is None


def test_rewriting_replaces_values(tmp_path):
    store = open_store(settings_for(tmp_path, "sqlite", "ours"))
    apply_definitions(store)
    view = store.get_feature_view(user_profile.name)
    rows = profile_rows(20)
    write_online(store, view, rows, chunk_size=50)
    later = rows.assign(event_timestamp=rows.event_timestamp + timedelta(days=1), tips_shown_7d=99)
    write_online(store, view, later, chunk_size=50)
    after = stored(store, rows)
    assert {v[1]["tips_shown_7d"].int64_val for v in after} == {99}
    assert all(v[0] == later.event_timestamp.iloc[0] for v in after)


def test_fast_entity_keys_are_feasts():
    from feast.infra.key_encoding_utils import serialize_entity_key

    from flows.featurestore.online_writer import _serialized_keys

    ids = pd.Series(["u1", "ünïcødé-user", "x" * 300])
    expected = [
        serialize_entity_key(k, entity_key_serialization_version=3) for k in _entity_keys(ids)
    ]
    assert _serialized_keys(ids, 3) == expected
