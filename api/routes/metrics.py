"""A cluster's metrics and its summary of use and cost, for its creator and IT managers."""

from datetime import timedelta
from typing import Literal

from fastapi import APIRouter

from api import schemas
from api.access import cluster_for
from api.deps import CurrentUser, SessionDep
from api.errors import Problem
from api.params import ClusterId, End, Start, time_range
from services import reports

router = APIRouter(prefix="/clusters", tags=["metrics"])


@router.get(
    "/{clusterId}/metrics",
    response_model=schemas.Metrics,
    response_model_by_alias=True,
    operation_id="getClusterMetrics",
    summary="Get a cluster's metrics",
)
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


@router.get(
    "/{clusterId}/metrics/summary",
    response_model=schemas.MetricsSummary,
    operation_id="getClusterMetricsSummary",
    summary="Get a cluster's current use and costs",
)
def get_summary(cluster_id: ClusterId, session: SessionDep, user: CurrentUser) -> schemas.MetricsSummary:
    """The latest minute's use, everything the cluster has cost, and what it costs from now on."""
    return schemas.MetricsSummary.of(reports.summary(session, cluster_for(session, user, cluster_id)))
