"""The append-only event log: JSON lines, one directory per UTC day, one file per writer.

Writers never share a file, so appends need no locks. A crash can leave a torn last line;
readers skip it. The same event may be appended more than once (a redelivered message, a
re-run simulation): readers keep the first copy of each `event_id`.

Readers trust no line: each is validated against the log's schema as it is read, and a line
that is not a valid event (torn, written by an older version under laxer rules, edited by
hand) is skipped and counted in `skipped`, so one bad line can never stop a flow that reads
the log. Appends take events that are already validated.
"""

import json
import logging
import os
import socket
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, date
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from service.events.models import EVENT_ADAPTER

log = logging.getLogger(__name__)

DAY_PREFIX = "day="


def _day_dir(root: Path, day: date) -> Path:
    return root / f"{DAY_PREFIX}{day.isoformat()}"


def _last_byte(path: str) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


class EventLog:
    def __init__(
        self,
        root: Path,
        writer_id: str | None = None,
        schema: TypeAdapter[Any] = EVENT_ADAPTER,
    ) -> None:
        self.root = root
        self.writer_id = writer_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.schema = schema
        # Lines the last `records()` skipped, by why: "unreadable" or "invalid".
        self.skipped: Counter[str] = Counter()

    def append(self, events: Iterable[BaseModel]) -> int:
        """Append validated events; each day's lines go out in one write, then fsync."""
        by_day: dict[date, list[str]] = defaultdict(list)
        for event in events:
            by_day[event.timestamp.astimezone(UTC).date()].append(event.model_dump_json())
        for day, lines in sorted(by_day.items()):
            directory = _day_dir(self.root, day)
            directory.mkdir(parents=True, exist_ok=True)
            with open(directory / f"{self.writer_id}.jsonl", "ab") as f:
                # After a torn write, start on a fresh line so the next event stays readable.
                torn = f.tell() > 0 and _last_byte(f.name) != b"\n"
                f.write((("\n" if torn else "") + "\n".join(lines) + "\n").encode())
                f.flush()
                os.fsync(f.fileno())
        return sum(len(lines) for lines in by_day.values())

    def days(self) -> list[date]:
        if not self.root.is_dir():
            return []
        return sorted(
            date.fromisoformat(p.name.removeprefix(DAY_PREFIX))
            for p in self.root.iterdir()
            if p.is_dir() and p.name.startswith(DAY_PREFIX)
        )

    def is_empty(self) -> bool:
        return not any(self.root.glob(f"{DAY_PREFIX}*/*.jsonl"))

    def records(
        self,
        types: frozenset[str] | None = None,
        start: date | None = None,
        end: date | None = None,
    ) -> Iterator[dict]:
        """Stored events as dicts, oldest day first, each valid `event_id` once.

        `start` and `end` bound the UTC day partitions (inclusive). A line that does not
        validate against the schema is skipped and counted in `skipped`.
        """
        self.skipped = Counter()
        seen: set[str] = set()
        for day in self.days():
            if (start and day < start) or (end and day > end):
                continue
            for path in sorted(_day_dir(self.root, day).glob("*.jsonl")):
                with open(path, "rb") as f:
                    for line in f:
                        record = self._valid_record(line, types)
                        if record is None or record["event_id"] in seen:
                            continue
                        seen.add(record["event_id"])
                        yield record
        if self.skipped:
            log.warning("%s: skipped %s", self.root, dict(self.skipped))

    def _valid_record(self, line: bytes, types: frozenset[str] | None) -> dict | None:
        try:
            record = json.loads(line)
        except ValueError:  # a torn write from a crashed writer, or not text at all
            self.skipped["unreadable"] += 1
            return None
        if not isinstance(record, dict):
            self.skipped["invalid"] += 1
            return None
        if types is not None and record.get("type") not in types:
            return None
        try:
            self.schema.validate_python(record)
        except Exception:  # whatever a stored line holds costs that line, never the read
            self.skipped["invalid"] += 1
            return None
        return record
