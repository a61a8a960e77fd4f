"""Types shared by the flows' parameter models."""

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# A time given on the command line: ISO 8601, naive means UTC.
UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
