"""What the system accepts from outside: the plausible time range, zone names, all-day dues.

One set of rules for each kind of value, shared by every entry point (HTTP bodies, JetStream
messages, the simulator, the event log's readers): a value outside them is a validation error
naming the field, never an exception deeper down.

- Timestamps carry an offset and fall in [EARLIEST, LATEST). The range is what a productivity
  app can mean, and it keeps every conversion safe: pandas holds nanoseconds only from 1677 to
  2262, and Python's datetime overflows when an offset moves 9999-12-31 past its end.
- Timezones are IANA names that name a zone in tzdata; a directory of zones ("America") is
  not one, and neither is a path.
- A due date without a time (Todoist's all-day tasks, "2026-11-27") is due at the end of that
  day in the timezone it comes with: overdue from the next local midnight, due today all day.
"""

from datetime import UTC, date, datetime, time
from functools import cache
from typing import Annotated, Any
from zoneinfo import ZoneInfo, available_timezones

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
MAX_TIMEZONE_CHARS = 64
# The local time an all-day due date stands for: its last instant.
ALL_DAY_DUE_TIME = time.max


@cache
def known_timezones() -> frozenset[str]:
    return frozenset(available_timezones())


def zone(name: str) -> ZoneInfo:
    """The zone of a name that passed `Timezone`; anything else is a ValueError."""
    if name not in known_timezones():
        raise ValueError("unknown IANA timezone: not a zone name in tzdata")
    return ZoneInfo(name)


def _iana_timezone(name: str) -> str:
    zone(name)
    return name


def _not_a_number(value: Any) -> Any:
    # pydantic reads a number as Unix seconds; a client sending one is sending something else.
    if isinstance(value, int | float):
        raise ValueError("a timestamp is an ISO 8601 string with an offset, not a number")
    return value


def plausible(value: datetime) -> datetime:
    # Compared as aware datetimes: no conversion, so no overflow at the edges of datetime.
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"must be from {EARLIEST:%Y-%m-%d} until {LATEST:%Y-%m-%d} (UTC)")
    return value


def plausible_day(value: date) -> date:
    if not EARLIEST.date() <= value < LATEST.date():
        raise ValueError(f"must be from {EARLIEST:%Y-%m-%d} until {LATEST:%Y-%m-%d}")
    return value


Timezone = Annotated[
    str,
    Field(min_length=1, max_length=MAX_TIMEZONE_CHARS, pattern=r"^[A-Za-z0-9_+/-]+$"),
    AfterValidator(_iana_timezone),
]
Timestamp = Annotated[AwareDatetime, BeforeValidator(_not_a_number), AfterValidator(plausible)]
AllDayDate = Annotated[date, BeforeValidator(_not_a_number), AfterValidator(plausible_day)]
# A due time, or an all-day due date; `resolve_due` makes both a time.
Due = Annotated[Timestamp | AllDayDate, Field(union_mode="left_to_right")]


def _naive_is_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# A time given on the command line or to a flow: ISO 8601, naive means UTC, plausible.
UtcDatetime = Annotated[datetime, AfterValidator(_naive_is_utc), AfterValidator(plausible)]


def resolve_due(due: datetime | date | None, timezone: str) -> datetime | None:
    """A due time as an aware datetime: all-day dates end at local midnight of the next day."""
    if due is None or isinstance(due, datetime):
        return due
    return datetime.combine(due, ALL_DAY_DUE_TIME, tzinfo=zone(timezone))
