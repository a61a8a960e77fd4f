"""Write profile rows into the online store in Feast's own encoding, fast.

Feast's writers convert every cell to a protobuf through generic type dispatch, its SQLite
store then runs one INSERT per cell, and its Redis store hashes every field name per row.
Profile columns repeat few distinct values, so here each distinct value is converted once, by
Feast's own converter; SQLite gets one executemany per chunk and Redis one pipeline of HSETs
laid out as Feast's own `skip_dedup` writer lays them out. Other online stores get the same
pre-built rows through Feast's `online_write_batch`. tests/flows/test_online_writer.py proves that
Feast reads back exactly what its own writer would have stored.
"""

import sqlite3
import struct
from collections.abc import Callable
from contextlib import closing

import pandas as pd
import redis
from feast import FeatureStore, FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import (
    _mmh3,
    compute_table_id,
    compute_versioned_name,
    extract_text_and_num,
)
from feast.infra.online_stores.redis import RedisOnlineStore, RedisType
from feast.infra.online_stores.sqlite import SqliteOnlineStore
from feast.infra.provider import get_provider
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from feature_repo.profile_transforms import TIMESTAMP

JOIN_KEY = "user_id"


def _encode(values: pd.Series, field_type) -> tuple[list[ValueProto], list]:
    """Protos for a column, converting each distinct value once; nulls become empty protos."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    converted = python_values_to_proto_values(
        [v.item() if hasattr(v, "item") else v for v in uniques], field_type.to_value_type()
    )
    protos = [*converted, ValueProto()]  # code -1 picks the null proto
    return protos, codes


def _entity_keys(user_ids: pd.Series) -> list[EntityKeyProto]:
    return [
        EntityKeyProto(join_keys=[JOIN_KEY], entity_values=[ValueProto(string_val=str(u))])
        for u in user_ids
    ]


def _serialized_keys(user_ids: pd.Series, version: int) -> list[bytes]:
    """Feast's serialized entity keys, built from the first key's constant prefix.

    A single string join key serializes as <prefix><type><length><utf-8 id>. The prefix is
    taken from Feast's own serialization of the first key; if that key does not end the way
    this expects, every key goes through Feast's serializer instead.
    """
    ids = [str(u).encode() for u in user_ids]
    if not ids:
        return []
    [first] = _entity_keys(user_ids.iloc[:1])
    reference = serialize_entity_key(first, entity_key_serialization_version=version)
    tail = struct.pack("<II", ValueType.STRING.value, len(ids[0])) + ids[0]
    if not reference.endswith(tail):
        return [
            serialize_entity_key(k, entity_key_serialization_version=version)
            for k in _entity_keys(user_ids)
        ]
    prefix = reference[: -len(tail)]
    string_type = struct.pack("<I", ValueType.STRING.value)
    return [prefix + string_type + struct.pack("<I", len(i)) + i for i in ids]


def _write_sqlite(
    store: FeatureStore, view: FeatureView, rows: pd.DataFrame, keys: list[bytes]
) -> None:
    """Upsert rows whose `keys` are ascending: records then arrive in primary-key order."""
    config = store.config
    if config.online_store.vector_enabled or getattr(
        config.online_store, "enable_openai_compatible_store", False
    ):
        raise ValueError("fast SQLite writes support the plain (non-vector) table layout only")
    # Feast's sqlite adapter stores event times as whole epoch seconds.
    epoch = pd.Timestamp(0, tz="UTC")
    stamps = ((rows[TIMESTAMP] - epoch) // pd.Timedelta(seconds=1)).tolist()
    columns = []
    for field in sorted(view.features, key=lambda f: f.name):
        protos, codes = _encode(rows[field.name], field.dtype)
        cells = [(p.SerializeToString(), extract_text_and_num(p, False)[0]) for p in protos]
        columns.append((field.name, [cells[code] for code in codes]))
    records = [
        (key, name, *cells[i], stamp, None)
        for i, (key, stamp) in enumerate(zip(keys, stamps, strict=True))
        for name, cells in columns
    ]
    table = compute_table_id(
        config.project, view, config.registry.enable_online_feature_view_versioning
    )
    sql = (
        f'INSERT INTO "{table}" (entity_key, feature_name, value, value_text, event_ts, '
        "created_ts) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE "
        "SET value = excluded.value, value_text = excluded.value_text, "
        "event_ts = excluded.event_ts, created_ts = excluded.created_ts"
    )
    with closing(sqlite3.connect(SqliteOnlineStore._get_db_path(config))) as conn, conn:
        conn.executemany(sql, records)


def _write_redis(
    store: FeatureStore, view: FeatureView, rows: pd.DataFrame, keys: list[bytes]
) -> None:
    """One pipelined HSET per user, laid out as Feast's skip_dedup Redis writer lays it out."""
    config = store.config
    host, kwargs = RedisOnlineStore._parse_connection_string(config.online_store.connection_string)
    name = compute_versioned_name(view, config.registry.enable_online_feature_view_versioning)
    project = config.project.encode()
    stamps = {}
    for stamp in rows[TIMESTAMP].unique():
        proto = Timestamp()
        proto.FromDatetime(stamp.to_pydatetime())
        stamps[stamp] = proto.SerializeToString()
    columns = []
    for field in view.features:
        protos, codes = _encode(rows[field.name], field.dtype)
        serialized = [p.SerializeToString() for p in protos]
        columns.append((_mmh3(f"{name}:{field.name}"), [serialized[c] for c in codes]))
    ts_field = f"_ts:{name}"
    ttl = config.online_store.key_ttl_seconds
    client = redis.Redis(host=host[0]["host"], port=int(host[0]["port"]), **kwargs)
    with closing(client), client.pipeline(transaction=False) as pipe:
        for i, (key, stamp) in enumerate(zip(keys, rows[TIMESTAMP], strict=True)):
            mapping = {field: values[i] for field, values in columns}
            mapping[ts_field] = stamps[stamp]
            pipe.hset(key + project, mapping=mapping)
            if ttl:
                pipe.expire(key + project, ttl)
        pipe.execute()


def _write_via_feast(store: FeatureStore, view: FeatureView, rows: pd.DataFrame) -> None:
    columns = {f.name: _encode(rows[f.name], f.dtype) for f in view.features}
    stamps = [t.to_pydatetime() for t in rows[TIMESTAMP].dt.tz_convert("UTC")]
    data = [
        (
            key,
            {name: protos[codes[i]] for name, (protos, codes) in columns.items()},
            stamps[i],
            None,
        )
        for i, key in enumerate(_entity_keys(rows[JOIN_KEY]))
    ]
    get_provider(store.config).online_write_batch(store.config, view, data, None)


def write_online(
    store: FeatureStore,
    view: FeatureView,
    rows: pd.DataFrame,
    chunk_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Write `rows` (one per user: user_id, event_timestamp, the view's features) in chunks."""
    online = store.config.online_store
    if online.type == "sqlite":
        write = _write_sqlite
    elif online.type == "redis" and online.redis_type == RedisType.redis and online.skip_dedup:
        write = _write_redis
    else:
        write = None
    keys = _serialized_keys(rows[JOIN_KEY], store.config.entity_key_serialization_version)
    # Sorted by key, SQLite's B-trees are filled in order: fewer page splits and misses.
    order = sorted(range(len(keys)), key=keys.__getitem__)
    rows, keys = rows.iloc[order], [keys[i] for i in order]
    for offset in range(0, len(rows), chunk_size):
        chunk = slice(offset, offset + chunk_size)
        if write:
            write(store, view, rows.iloc[chunk], keys[chunk])
        else:
            _write_via_feast(store, view, rows.iloc[chunk])
        if progress:
            progress(min(offset + chunk_size, len(rows)), len(rows))
    return len(rows)
