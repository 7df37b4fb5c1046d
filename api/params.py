"""Path and query parameters, named as the contract names them."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Path, Query

from api.errors import Problem

RequestId = Annotated[uuid.UUID, Path(alias="requestId")]
ClusterId = Annotated[uuid.UUID, Path(alias="clusterId")]
ServiceId = Annotated[uuid.UUID, Path(alias="serviceId")]
TenantId = Annotated[uuid.UUID, Path(alias="tenantId")]


# The oldest and newest times a range may name: wide enough for any real question, and far from the
# limits of date arithmetic.
EARLIEST, LATEST = datetime(2000, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)


def time_range(start: datetime | None, end: datetime | None, default_span: timedelta) -> tuple[datetime, datetime]:
    """`start` and `end` as given (a time without a zone is UTC), defaulting to the `default_span` up to now."""
    limits = f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}"
    try:
        end = _utc(end) if end is not None else datetime.now(UTC)
        if not EARLIEST <= end <= LATEST:
            raise Problem(422, f"end {limits}")
        start = _utc(start) if start is not None else end - default_span
    except OverflowError:  # a time so far off that it cannot even be converted to UTC
        raise Problem(422, f"start and end {limits}") from None
    if not EARLIEST <= start <= LATEST:
        raise Problem(422, f"start {limits}")
    if start >= end:
        raise Problem(422, f"start ({start.isoformat()}) must be before end ({end.isoformat()})")
    return start, end


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Start = Annotated[datetime | None, Query(description="from this time (default: `end` minus the default span)")]
End = Annotated[datetime | None, Query(description="up to this time (default: now)")]
