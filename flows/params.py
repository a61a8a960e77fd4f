"""Types shared by the flows' parameter models."""

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator

from feature_repo.bounds import plausible


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# A time given on the command line: ISO 8601, naive means UTC, in the plausible range.
UtcDatetime = Annotated[datetime, AfterValidator(_as_utc), AfterValidator(plausible)]
