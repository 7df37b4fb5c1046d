"""A cluster's metrics and its summary of use and cost, for its creator and IT managers."""

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from api import schemas
from api.access import cluster_for
from api.deps import CurrentUser, SessionDep
from api.errors import Problem
from api.params import ClusterId
from hpcinfra import reports

router = APIRouter(prefix="/clusters", tags=["metrics"])

# The oldest and newest times a range may name: wide enough for any real question, and far from the
# limits of date arithmetic.
EARLIEST, LATEST = datetime(2000, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)


def time_range(start: datetime | None, end: datetime | None, default_span: timedelta) -> tuple[datetime, datetime]:
    """`start` and `end` as given (a time without a zone is UTC), defaulting to the `default_span` up to now."""
    end = _utc(end) if end is not None else datetime.now(UTC)
    start = _utc(start) if start is not None else end - default_span
    for name, value in (("start", start), ("end", end)):
        if not EARLIEST <= value <= LATEST:
            raise Problem(422, f"{name} must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
    if start >= end:
        raise Problem(422, f"start ({start.isoformat()}) must be before end ({end.isoformat()})")
    return start, end


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Start = Annotated[datetime | None, Query(description="from this time (default: `end` minus the default span)")]
End = Annotated[datetime | None, Query(description="up to this time (default: now)")]


@router.get("/{clusterId}/metrics", response_model=schemas.Metrics, response_model_by_alias=True)
def get_metrics(
    cluster_id: ClusterId,
    session: SessionDep,
    user: CurrentUser,
    start: Start = None,
    end: End = None,
    interval: Literal["minute", "hour", "day"] = "hour",
) -> schemas.Metrics:
    """CPU, memory and storage use and credits, one point per interval with recorded minutes (default:
    the last 24 hours, by the hour). Each point covers its whole interval."""
    cluster = cluster_for(session, user, cluster_id)
    start, end = time_range(start, end, timedelta(hours=24))
    points = reports.points_in(start, end, interval)
    if points > reports.MAX_POINTS:
        raise Problem(
            422,
            f"{start.isoformat()} to {end.isoformat()} by the {interval} is {points} points; at most "
            f"{reports.MAX_POINTS} are returned: choose a coarser interval or a shorter range",
        )
    return schemas.Metrics.of(
        schemas.TimeRange(start=start, end=end, interval=interval),
        reports.series(session, cluster.id, start, end, interval),
    )


@router.get("/{clusterId}/metrics/summary", response_model=schemas.MetricsSummary)
def get_summary(cluster_id: ClusterId, session: SessionDep, user: CurrentUser) -> schemas.MetricsSummary:
    """The latest minute's use, everything the cluster has cost, and what it costs from now on."""
    return schemas.MetricsSummary.of(reports.summary(session, cluster_for(session, user, cluster_id)))
