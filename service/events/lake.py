"""The event lake: every event as Parquet on a filesystem URL, local or S3, read by window.

    <url>/type=<event type>/day=<UTC day>/<written ns>-<writer>-<random>.parquet

One Arrow schema per event type, derived from the event's model (nested request contexts as
structs, times as UTC microseconds). Its guarantees:

- Write-once files with unique names, visible only when complete. A local file is written
  under a dot-name that readers ignore, fsynced, then renamed into place (and the directory
  fsynced); on S3 an object appears when its upload completes. A writer killed mid-batch
  leaves no part of a file for a reader to see (of a batch of several files, those already
  renamed are seen whole), and an append that returned is durable.
- The same event may be written more than once (a redelivered message, a re-run simulation):
  readers keep the first copy of each event_id by write time, in the scan, never by a set of
  ids kept in Python.
- Reads name the event types and the UTC days they need: only those partitions are listed
  and read, and only the columns asked for. A file that cannot be read, and a row outside the
  plausible time range (feature_repo/bounds.py), are skipped and counted in `skipped`, so one
  bad file can never stop a flow.
- Every event is stored with its user's `user_hash` (feature_repo/user_hash.py), and each
  file is sorted by it in row groups of ROW_GROUP_ROWS: a read of a range of user hashes (a
  batch shard's users, flows/shards.py) skips every row group whose statistics lie outside
  it, so it reads what its users wrote, not the world's window.

The location is one setting, TIPML_EVENTS_URL: a path (the default, under the data dir) or
s3://bucket/prefix, with the endpoint and credentials from the standard AWS variables (and
AWS_ENDPOINT_URL for an S3-compatible server).
"""

import logging
import os
import socket
import time
import types
import typing
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import AwareDatetime, BaseModel

from feature_repo.bounds import EARLIEST, LATEST
from feature_repo.user_hash import USER_HASH, HashRange, user_hashes
from service.events.log import EventLog
from service.events.models import EVENT_ADAPTER, EVENT_MODELS, Event
from service.settings import Settings
from service.storage import Storage

log = logging.getLogger(__name__)

JSONL_DAY_PREFIX = "day="
LEGACY_JSONL = f"{JSONL_DAY_PREFIX}*/*.jsonl"
TYPE_PREFIX = "type="
DAY_PREFIX = "day="
SUFFIX = ".parquet"
CHECKPOINTS = "_checkpoints"
# Small enough that a shard of a day's file skips most of it, large enough that a footer's
# statistics stay a small part of the file.
ROW_GROUP_ROWS = 8192
_NONE = type(None)


def _arrow_type(annotation: Any) -> pa.DataType:
    """The Arrow type of a model field's annotation: the event models' vocabulary only."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _arrow_type(get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not _NONE]
        if all(_is_time(m) for m in members):
            return pa.timestamp("us", tz="UTC")  # an all-day date is resolved to a time
        [member] = members
        return _arrow_type(member)
    if origin is Literal:
        values = get_args(annotation)
        return pa.int64() if all(isinstance(v, int) for v in values) else pa.string()
    if origin is list:
        return pa.list_(_arrow_type(get_args(annotation)[0]))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pa.struct(_fields(annotation))
    if _is_time(annotation):
        return pa.timestamp("us", tz="UTC")
    simple = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
    return simple[annotation]


def _is_time(annotation: Any) -> bool:
    if get_origin(annotation) is typing.Annotated:
        return _is_time(get_args(annotation)[0])
    # pydantic's AwareDatetime is a marker class, not a datetime subclass
    return annotation is AwareDatetime or (
        isinstance(annotation, type) and issubclass(annotation, date)
    )


def _fields(model: type[BaseModel]) -> list[pa.Field]:
    return [pa.field(name, _arrow_type(f.annotation)) for name, f in model.model_fields.items()]


SCHEMAS: dict[str, pa.Schema] = {
    kind: pa.schema(_fields(model)) for kind, model in EVENT_MODELS.items()
}


def _utc_day(stamp: datetime) -> date:
    return stamp.astimezone(UTC).date()


class EventLake:
    def __init__(self, url: str | Path, writer_id: str | None = None) -> None:
        self.storage = Storage(str(url))
        self.writer_id = writer_id or f"{socket.gethostname()}-{os.getpid()}"
        # What reads through this lake have skipped, by why: "unreadable" files and
        # "out_of_range" rows.
        self.skipped: Counter[str] = Counter()

    @property
    def url(self) -> str:
        return self.storage.url

    # --- writing -------------------------------------------------------------------------

    def append(self, events: Iterable[Event]) -> int:
        """Write validated events: one new file per (type, UTC day) of the batch."""
        groups: dict[tuple[str, date], list[dict]] = defaultdict(list)
        for event in events:
            groups[(event.type, _utc_day(event.timestamp))].append(event.model_dump())
        self.storage.write_once(
            [
                self._file(kind, day, pa.Table.from_pylist(rows, schema=SCHEMAS[kind]))
                for (kind, day), rows in sorted(groups.items())
            ]
        )
        return sum(len(rows) for rows in groups.values())

    def write_file(self, kind: str, day: date, table: pa.Table) -> str:
        """One write-once file of `kind` on `day`; returns its path."""
        directory, name, data = self._file(kind, day, table)
        self.storage.write_once([(directory, name, data)])
        return f"{directory}/{name}"

    def _file(self, kind: str, day: date, table: pa.Table) -> tuple[str, str, bytes]:
        table = _by_user(table)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd", row_group_size=ROW_GROUP_ROWS)
        # Sortable by write time, so that "first copy" is the first written; unique by the
        # random part whatever the clock does.
        name = f"{time.time_ns():020d}-{self.writer_id}-{uuid.uuid4().hex[:12]}{SUFFIX}"
        directory = self.storage.path(f"{TYPE_PREFIX}{kind}", f"{DAY_PREFIX}{day.isoformat()}")
        return directory, name, sink.getvalue().to_pybytes()

    # --- writers' checkpoints --------------------------------------------------------------

    def checkpoint(self, name: str) -> str | None:
        """What writer `name` last recorded of how far it got; None when nothing is.

        Kept beside the events it describes (under `_checkpoints/`, which readers never list),
        so a writer resumed on any host that reaches the lake finds it.
        """
        return self.storage.read_text(self.storage.path(CHECKPOINTS, f"{name}.json"))

    def save_checkpoint(self, name: str, text: str) -> None:
        """Replace writer `name`'s checkpoint whole: a crash leaves the old one or the new."""
        self.storage.write_once([(self.storage.path(CHECKPOINTS), f"{name}.json", text.encode())])

    def clear_checkpoints(self) -> None:
        self.storage.delete_dir(self.storage.path(CHECKPOINTS))

    # --- what is there ---------------------------------------------------------------------

    def types(self) -> list[str]:
        return [t for t in self.storage.list_dirs(self.storage.root, TYPE_PREFIX) if t in SCHEMAS]

    def days(self, kind: str | None = None) -> list[date]:
        kinds = [kind] if kind else self.types()
        found = set()
        for k in kinds:
            directory = self.storage.path(f"{TYPE_PREFIX}{k}")
            found.update(
                date.fromisoformat(d) for d in self.storage.list_dirs(directory, DAY_PREFIX)
            )
        return sorted(found)

    def clear(self) -> None:
        """Delete every event and checkpoint: for replacing a world, never for a live lake."""
        for kind in self.types():
            self.storage.delete_dir(self.storage.path(f"{TYPE_PREFIX}{kind}"))
        self.clear_checkpoints()

    def is_empty(self) -> bool:
        return not any(self.day_files(k, d) for k in self.types() for d in self.days(k))

    def files(self) -> list[str]:
        """Every file of every type and day."""
        return [p for k in self.types() for d in self.days(k) for p in self.day_files(k, d)]

    def file_events(self, path: str) -> list[Event]:
        """One file's events, as written (without the user_hash stored beside each)."""
        table = self.storage.read_table(path)
        fields = [name for name in table.column_names if name != USER_HASH]
        return [EVENT_ADAPTER.validate_python(row) for row in table.select(fields).to_pylist()]

    def day_files(self, kind: str, day: date) -> list[str]:
        directory = self.storage.path(f"{TYPE_PREFIX}{kind}", f"{DAY_PREFIX}{day.isoformat()}")
        return self.storage.list_files(directory)

    # --- reading ---------------------------------------------------------------------------

    def read(
        self,
        kind: str,
        start: date | None = None,
        end: date | None = None,
        columns: Sequence[str] | None = None,
        users: HashRange | None = None,
    ) -> pa.Table:
        """Events of one type on UTC days [start, end] (inclusive, either open), each
        event_id's first copy, with `columns` (all when None; event_id always read).

        A column may name a field inside a struct, `context.timezone`, or inside a list's items
        by its Parquet path, `context.tasks.list.element.due` (a list per row): only that field
        is read from the file, into a column of that name.

        `users`, [first, last] user hashes, keeps only those users' events as each file is
        read, reading only the row groups whose statistics overlap it (a file written before
        the lake stored the hash is read whole and its rows hashed): a reader of a few of many
        users holds only theirs, never the whole window. Every copy of an event has the same
        user, so filtering before the first-copy rule is the same as after it.
        """
        skipped: Counter[str] = Counter()
        schema = SCHEMAS[kind]
        wanted = list(schema.names) if columns is None else list(dict.fromkeys(columns))
        read_columns = list(dict.fromkeys(["event_id", "timestamp", *wanted]))
        tables = []
        for day in self.days(kind):
            if (start and day < start) or (end and day > end):
                continue
            for path in self.day_files(kind, day):
                try:
                    table = self._read_file(path, read_columns, users)
                except (OSError, pa.ArrowException) as exc:
                    skipped["unreadable"] += 1
                    log.warning("%s: unreadable, skipped: %s", path, type(exc).__name__)
                    continue
                tables.append(table)
        if not tables:
            self._count(kind, skipped)
            return pa.schema([_nested_field(schema, c) for c in wanted]).empty_table()
        table = pa.concat_tables(tables, promote_options="default")
        table = _first_copies(table)
        in_range = pc.and_(
            pc.greater_equal(table["timestamp"], pa.scalar(EARLIEST, pa.timestamp("us", "UTC"))),
            pc.less(table["timestamp"], pa.scalar(LATEST, pa.timestamp("us", "UTC"))),
        )
        kept = table.filter(in_range)
        if dropped := len(table) - len(kept):
            skipped["out_of_range"] += dropped
        self._count(kind, skipped)
        return kept.select(wanted)

    def _read_file(self, path: str, columns: list[str], users: HashRange | None) -> pa.Table:
        """`columns` of one file, of the users in `users` (all when None)."""
        with self.storage.fs.open_input_file(path) as source:
            file = pq.ParquetFile(source)
            stored = file.schema_arrow.names
            needed = [*columns, *([] if users is None else ["user_id"])]
            if missing := sorted({c.split(".")[0] for c in needed} - set(stored)):
                raise pa.ArrowInvalid(f"{path} has no column {missing[0]}: another schema")
            if users is None:
                return _flat(file.read(columns=columns), columns)
            if USER_HASH not in stored:
                table = file.read(columns=list(dict.fromkeys([*columns, "user_id"])))
                hashes = pa.array(user_hashes(table["user_id"].to_pylist()))
            else:
                groups = _row_groups(file.metadata, users)
                table = file.read_row_groups(groups, columns=[*columns, USER_HASH])
                hashes = table[USER_HASH]
        first, last = users
        mine = pc.and_(pc.greater_equal(hashes, first), pc.less_equal(hashes, last))
        return _flat(table.filter(mine), columns)

    def _count(self, kind: str, skipped: Counter[str]) -> None:
        if skipped:
            log.warning("%s %s: skipped %s", self.url, kind, dict(skipped))
            self.skipped += skipped

    def compact(self, kind: str, day: date) -> tuple[int, int]:
        """Rewrite one day's files of `kind` as one, each event_id once; (files, rows) read.

        The new file is written before the old ones are deleted: a reader in between sees both
        and keeps each event's first copy, which is the same event, so a day is never seen
        half compacted, and a crash in between leaves a day a rerun compacts again. A file
        that cannot be read is left where it is: compaction never deletes what it did not copy.
        """
        files = self.day_files(kind, day)
        if len(files) < 2:
            return len(files), 0
        read, tables = [], []
        for path in files:
            try:
                tables.append(self.storage.read_table(path))
            except (OSError, pa.ArrowException) as exc:
                log.warning("%s: unreadable, left in place: %s", path, type(exc).__name__)
                continue
            read.append(path)
        if len(read) < 2:
            return len(read), 0
        merged = _first_copies(pa.concat_tables(tables, promote_options="default"))
        self.write_file(kind, day, merged)
        self.storage.delete(read)
        return len(read), len(merged)

    def records(
        self,
        types: Iterable[str] | None = None,
        start: date | None = None,
        end: date | None = None,
    ) -> Iterator[dict]:
        """Events as the dicts their models dump (times as UTC datetimes), type by type."""
        for kind in sorted(set(types) if types is not None else SCHEMAS):
            yield from self.read(kind, start, end).to_pylist()

    def events(
        self, types: Iterable[str] | None = None, start: date | None = None, end: date | None = None
    ) -> Iterator[Event]:
        for record in self.records(types, start, end):
            yield EVENT_ADAPTER.validate_python(record)


def _nested_field(schema: pa.Schema, path: str) -> pa.Field:
    """The field at a dotted `path`, named by the path (see `_column`)."""
    head, *rest = path.split(".")
    return pa.field(path, _nested_type(schema.field(head).type, rest))


def _nested_type(kind: pa.DataType, names: list[str]) -> pa.DataType:
    if not names:
        return kind
    if pa.types.is_list(kind):
        return pa.list_(_nested_type(kind.value_type, names[2:]))
    return _nested_type(kind.field(names[0]).type, names[1:])


def _flat(table: pa.Table, columns: list[str]) -> pa.Table:
    """`columns` of a table read from a file, each dotted one as its own column (`_column`)."""
    return pa.table([_column(table, c) for c in columns], names=columns)


def _column(table: pa.Table, path: str) -> pa.Array:
    """The column at a dotted Parquet `path`: a struct's field (`context.timezone`), or through a
    list, the list of its items' field (`context.tasks.list.element.due`: each row's dues)."""
    head, *rest = path.split(".")
    return _nested(table[head].combine_chunks(), rest)


def _nested(array: pa.Array, names: list[str]) -> pa.Array:
    if not names:
        return array
    if pa.types.is_list(array.type):  # names: "list", "element", then the item's path
        items = _nested(array.values, names[2:])
        return pa.ListArray.from_arrays(array.offsets, items, mask=array.is_null())
    return _nested(pc.struct_field(array, names[0]), names[1:])


def _row_groups(metadata: pq.FileMetaData, users: HashRange) -> list[int]:
    """The row groups whose user_hash statistics overlap `users` (all, without statistics)."""
    index = metadata.schema.names.index(USER_HASH)
    first, last = users
    groups = []
    for i in range(metadata.num_row_groups):
        stats = metadata.row_group(i).column(index).statistics
        if stats is None or not stats.has_min_max or (stats.max >= first and stats.min <= last):
            groups.append(i)
    return groups


def _by_user(table: pa.Table) -> pa.Table:
    """A file's rows with each row's user_hash (computed from user_id, whatever the table
    carried), sorted by it: stable, so that copies of an event keep their order."""
    if USER_HASH in table.column_names:
        table = table.drop_columns(USER_HASH)
    table = table.append_column(
        pa.field(USER_HASH, pa.int64(), nullable=False),
        pa.array(user_hashes(table["user_id"].to_pylist()), pa.int64()),
    )
    return table.take(pc.sort_indices(table[USER_HASH]))


def _first_copies(table: pa.Table) -> pa.Table:
    """Each event_id's first row: the tables were concatenated in write order."""
    if len(table) == 0:
        return table
    order = pa.array(range(len(table)), pa.int64())
    firsts = (
        pa.table({"event_id": table["event_id"], "_row": order})
        .group_by("event_id", use_threads=False)
        .aggregate([("_row", "min")])
    )
    rows = pc.sort_indices(firsts["_row_min"])
    return table.take(pc.take(firsts["_row_min"], rows))


class LegacyEventLog(RuntimeError):
    """The events directory holds an event log of JSON lines, from before the lake."""


def legacy_jsonl(settings: Settings) -> str | None:
    """Why the home cannot be read as a lake, when its events are still JSON lines."""
    if not any(settings.events_dir.glob(LEGACY_JSONL)):
        return None
    return (
        f"{settings.events_dir} holds events as JSON lines (from before the event lake): run "
        "`tipml events import-jsonl` to move them into the lake, or `tipml simulate --reset "
        "...` to start a new world"
    )


def open_lake(settings: Settings, writer_id: str | None = None) -> EventLake:
    """The settings' event lake. A home whose events are still JSON lines is refused, so that
    no reader takes it for empty: `tipml events import-jsonl` moves them into the lake."""
    if message := legacy_jsonl(settings):
        raise LegacyEventLog(message)
    return EventLake(settings.events_location, writer_id)


def import_jsonl(settings: Settings, batch: int = 20_000) -> int:
    """Move a home's JSON-lines event log into its lake; the events read, each once.

    Each stored line is validated as any log reader validates it (a line that is not a valid
    event is skipped and counted), appended in batches, and only then are the JSON-lines day
    directories moved aside to `events-jsonl/` beside the data, so a crash part way leaves the
    old log in place and a rerun appends again, which the lake's readers count once.
    """
    legacy = EventLog(settings.events_dir)
    lake = EventLake(settings.events_location, writer_id="import-jsonl")
    imported = 0
    pending: list[Event] = []
    for record in legacy.records():
        pending.append(EVENT_ADAPTER.validate_python(record))
        if len(pending) >= batch:
            imported += lake.append(pending)
            pending = []
    imported += lake.append(pending)
    if legacy.skipped:
        log.warning("import-jsonl skipped %s", dict(legacy.skipped))
    aside = settings.data_dir / "events-jsonl"
    aside.mkdir(parents=True, exist_ok=True)
    for day in settings.events_dir.glob(f"{JSONL_DAY_PREFIX}*"):
        if day.is_dir() and any(day.glob("*.jsonl")):
            day.rename(aside / day.name)
    return imported
