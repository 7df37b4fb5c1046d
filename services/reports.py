"""Reading the metered data back: a cluster's metrics over time, its summary, and a tenant's analytics.

Every query reads the coarsest table that answers it. A cluster's metrics by the minute, hour or day
read the minute samples or that rollup; tenant-wide figures count whole hours, cut into whole days
(day rollups) and hours at the edges (hour rollups), so 30 days of a cluster cost about 30 rows, not
43,200, and a range that reaches the present ends with today's day rollup.
"""

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, false, func, or_, select
from sqlalchemy.orm import Session

from core.enums import ClusterStatus
from core.models import Cluster, ClusterRequest, MetricRollup, MetricSample, User
from services import credits, metering
from services.metering import MINUTE

HOUR, DAY = timedelta(hours=1), timedelta(days=1)
INTERVALS = {"minute": MINUTE, "hour": HOUR, "day": DAY}
# Most points one metrics query returns (a week of minutes); a longer range needs a coarser interval.
MAX_POINTS = 7 * 24 * 60
# Forecasts and "monthly" figures count a month as 30 days.
MONTH = timedelta(days=30)


def floor_to(t: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=t.tzinfo)
    return epoch + (t - epoch) // step * step


def ceil_to(t: datetime, step: timedelta) -> datetime:
    floor = floor_to(t, step)
    return floor if floor == t else floor + step


def hours_of(start: datetime, end: datetime, now: datetime) -> tuple[datetime, datetime]:
    """The whole hours a tenant-wide figure over [start, end) counts: every hour the range touches. Nothing
    is recorded after `now`, so a range reaching it may end with today's day rollup, which holds exactly
    the minutes recorded today."""
    last = ceil_to(end, DAY) if end >= now else ceil_to(end, HOUR)
    return floor_to(start, HOUR), last


def pieces(start: datetime, end: datetime) -> list[tuple[str, datetime, datetime]]:
    """[start, end), on whole hours, as the fewest rollup periods: (resolution, from, to): days where the
    range holds whole days, hours at its edges."""
    first_day, last_day = ceil_to(start, DAY), floor_to(end, DAY)
    if first_day >= last_day:
        return [("hour", start, end)] if start < end else []
    edges = [("hour", start, first_day), ("day", first_day, last_day), ("hour", last_day, end)]
    return [(resolution, a, b) for resolution, a, b in edges if a < b]


@dataclass
class Totals:
    """Sums over some minutes: use in hundredths of a percent, cost in credit units."""

    samples: int = 0
    cpu_use: int = 0
    memory_use: int = 0
    storage_use: int = 0
    credit_units: int = 0

    def add(self, other: "Totals") -> None:
        for name in ("samples", "cpu_use", "memory_use", "storage_use", "credit_units"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def average(self, name: str) -> float:
        return round(getattr(self, name) / self.samples / 100, 2) if self.samples else 0.0


def totals(
    session: Session, tenant_id: uuid.UUID, start: datetime, end: datetime, *, by_cluster: bool
) -> dict[uuid.UUID | None, Totals]:
    """Sums over the whole hours [start, end) of the tenant's clusters: per cluster, or (`by_cluster`
    false) for the tenant as a whole, under the key None."""
    result: dict[uuid.UUID | None, Totals] = defaultdict(Totals)
    t = MetricRollup
    sums = (
        func.sum(t.samples),
        func.sum(t.cpu_use),
        func.sum(t.memory_use),
        func.sum(t.storage_use),
        func.sum(t.credit_units),
    )
    for resolution, a, b in pieces(start, end):
        where = (t.tenant_id == tenant_id, t.resolution == resolution, t.start >= a, t.start < b)
        if by_cluster:
            rows = session.execute(select(t.cluster_id, *sums).where(*where).group_by(t.cluster_id)).all()
        else:
            rows = [(None, *session.execute(select(*sums).where(*where)).one())]
        for key, *values in rows:
            if values[0] is not None:  # a tenant-wide sum over no rows
                result[key].add(Totals(*(int(v) for v in values)))
    return dict(result)


def _sum(parts: Iterable[Totals]) -> Totals:
    total = Totals()
    for part in parts:
        total.add(part)
    return total


# --- a cluster's metrics -------------------------------------------------------------------------


@dataclass
class Use:
    utilization_percent: float
    allocated: int


@dataclass
class Point:
    timestamp: datetime
    cpu: Use
    memory: Use
    storage: Use
    credits_consumed: float
    credits_rate: float  # credits per hour, averaged over the point's minutes


def series(session: Session, cluster_id: uuid.UUID, start: datetime, end: datetime, interval: str) -> list[Point]:
    """One point per `interval` that starts in [start, end) rounded down to the interval, for each
    period with recorded minutes: each point covers its whole period."""
    step = INTERVALS[interval]
    first = floor_to(start, step)
    if interval == "minute":
        rows = session.scalars(
            select(MetricSample)
            .where(MetricSample.cluster_id == cluster_id, MetricSample.minute >= first, MetricSample.minute < end)
            .order_by(MetricSample.minute)
        )
        return [_point(r.minute, 1, r.cpu_use, r.memory_use, r.storage_use, r.credit_units, r) for r in rows]
    rows = session.scalars(
        select(MetricRollup)
        .where(
            MetricRollup.cluster_id == cluster_id,
            MetricRollup.resolution == interval,
            MetricRollup.start >= first,
            MetricRollup.start < end,
        )
        .order_by(MetricRollup.start)
    )
    return [_point(r.start, r.samples, r.cpu_use, r.memory_use, r.storage_use, r.credit_units, r) for r in rows]


def _point(timestamp, samples, cpu_use, memory_use, storage_use, units, sized) -> Point:
    return Point(
        timestamp=timestamp,
        cpu=Use(round(cpu_use / samples / 100, 2), sized.cores),
        memory=Use(round(memory_use / samples / 100, 2), sized.memory_gb),
        storage=Use(round(storage_use / samples / 100, 2), sized.storage_gb),
        credits_consumed=credits.as_credits(units),
        credits_rate=credits.as_rate(units // samples),
    )


def points_in(start: datetime, end: datetime, interval: str) -> int:
    step = INTERVALS[interval]
    return int((ceil_to(end, step) - floor_to(start, step)) / step)


# --- a cluster's summary -------------------------------------------------------------------------


@dataclass
class Summary:
    cpu: Use
    memory: Use
    storage: Use
    total_consumed: float
    current_rate: float  # credits per hour
    estimated_daily: float
    estimated_monthly: float
    balance: float
    policy: str
    over_budget: bool  # metered while the tenant's balance is spent


def summary(session: Session, cluster: Cluster) -> Summary:
    """The latest recorded minute, everything the cluster has cost, and what it costs from now on."""
    last = metering.last_reading(session, cluster.id)
    total = session.scalar(
        select(func.sum(MetricRollup.credit_units)).where(
            MetricRollup.cluster_id == cluster.id, MetricRollup.resolution == "day"
        )
    )
    metered = cluster.status == ClusterStatus.AVAILABLE
    # What it costs and has now: an elastic cluster's follows its nodes up.
    rate = credits.rate_of(cluster, cluster.nodes_charged) if metered else 0
    balance, policy = credits.account(session, cluster.tenant_id)
    size = metering.Allocation.of(cluster, cluster.nodes_charged if metered else None)
    return Summary(
        cpu=Use(last.cpu_percent, size.cores),
        memory=Use(last.memory_percent, size.memory_gb),
        storage=Use(last.storage_percent, size.storage_gb),
        total_consumed=credits.as_credits(int(total or 0)),
        current_rate=credits.as_rate(rate),
        estimated_daily=credits.as_credits(rate * 24 * 60),
        estimated_monthly=credits.as_credits(rate * int(MONTH / MINUTE)),
        balance=credits.as_credits(balance),
        policy=policy,
        over_budget=metered and balance <= 0,
    )


# --- a tenant's analytics ------------------------------------------------------------------------


@dataclass
class ClusterShare:
    cluster_id: uuid.UUID
    name: str
    credits_consumed: float
    utilization_percent: float
    over_budget: bool


@dataclass
class UserShare:
    user_id: uuid.UUID
    name: str
    credits_consumed: float


@dataclass
class Analytics:
    total_clusters: int
    active_clusters: int
    total_users: int
    active_users: int
    total_cores: int
    total_memory_gb: int
    total_storage_gb: int
    average_cpu: float
    average_memory: float
    average_storage: float
    balance: float
    policy: str
    exhausted: bool
    consumed_daily: float
    consumed_weekly: float
    consumed_monthly: float
    forecast_next_week: float
    forecast_next_month: float
    by_cluster: list[ClusterShare] = field(default_factory=list)
    by_user: list[UserShare] = field(default_factory=list)


def available_during(start: datetime, end: datetime, now: datetime) -> ColumnElement[bool]:
    """A cluster was available at some moment of [start, end), as a condition on its row: it became available
    before `end`, and stopped after `start` or has not stopped, which makes it available up to `now`. (Read
    as a column, it costs the analytics less than reading the times of every cluster.)"""
    still_available = Cluster.metering_to.is_(None) if now >= start else false()
    return and_(Cluster.metering_from < end, or_(Cluster.metering_to > start, still_available))


def analytics(session: Session, tenant_id: uuid.UUID, start: datetime, end: datetime, now: datetime) -> Analytics:
    """The tenant's clusters, use and credits over the whole hours [start, end) touches. Every cluster
    available in those hours, or with minutes recorded in them, is active and listed with what it consumed
    there: nothing, when it became available too recently for a minute to be recorded. Consumption
    "daily", "weekly" and "monthly" is over the day, 7 days and 30 days up to `end`; the forecast is the
    tenant's rate now (its metered clusters, with their services) held for the next 7 and 30 days."""
    asked_end = end
    start, end = hours_of(start, end, now)
    clusters = session.execute(
        select(
            Cluster.id,
            Cluster.name,
            Cluster.status,
            Cluster.created_by_id,
            Cluster.created_at,
            Cluster.node_type,
            Cluster.number_of_nodes,
            Cluster.storage_gb,
            available_during(start, end, now).label("available_in_range"),
        ).where(Cluster.tenant_id == tenant_id)
    ).all()
    users = dict(session.execute(select(User.id, User.name).where(User.tenant_id == tenant_id)).all())
    in_range = totals(session, tenant_id, start, end, by_cluster=True)
    standing = credits.standing(session, tenant_id)

    def consumed(span: timedelta) -> float:
        """Over the `span` up to the `end` asked for, as whole hours; the range itself when it is that span."""
        hours = hours_of(asked_end - span, asked_end, now)
        spent = in_range if hours == (start, end) else totals(session, tenant_id, *hours, by_cluster=False)
        return credits.as_credits(_sum(spent.values()).credit_units)

    available = [c for c in clusters if c.status == ClusterStatus.AVAILABLE]
    sizes = [metering.Allocation.of(c) for c in available]
    overall = _sum(in_range.values())
    names = {c.id: c for c in clusters}
    # A cluster's row holds only its latest availability: minutes recorded in the range count it too.
    active = dict(in_range)
    for c in clusters:
        if c.available_in_range and c.id not in active:
            active[c.id] = Totals()
    by_user: dict[uuid.UUID, int] = defaultdict(int)
    for cluster_id, spent in active.items():
        by_user[names[cluster_id].created_by_id] += spent.credit_units
    requesters = session.scalars(
        select(ClusterRequest.requested_by_id).where(
            ClusterRequest.tenant_id == tenant_id,
            ClusterRequest.requested_at >= start,
            ClusterRequest.requested_at < end,
        )
    ).all()
    return Analytics(
        total_clusters=sum(1 for c in clusters if c.status != ClusterStatus.DELETED and c.created_at < end),
        active_clusters=len(active),
        total_users=len(users),
        active_users=len(set(by_user) | set(requesters)),
        total_cores=sum(s.cores for s in sizes),
        total_memory_gb=sum(s.memory_gb for s in sizes),
        total_storage_gb=sum(s.storage_gb for s in sizes),
        average_cpu=overall.average("cpu_use"),
        average_memory=overall.average("memory_use"),
        average_storage=overall.average("storage_use"),
        balance=credits.as_credits(standing.balance),
        policy=standing.policy,
        exhausted=standing.exhausted,
        consumed_daily=consumed(DAY),
        consumed_weekly=consumed(7 * DAY),
        consumed_monthly=consumed(MONTH),
        forecast_next_week=credits.as_credits(standing.rate * int(7 * DAY / MINUTE)),
        forecast_next_month=credits.as_credits(standing.rate * int(MONTH / MINUTE)),
        by_cluster=sorted(
            (
                ClusterShare(
                    cluster_id,
                    names[cluster_id].name,
                    credits.as_credits(spent.credit_units),
                    spent.average("cpu_use"),
                    over_budget=standing.exhausted and names[cluster_id].status == ClusterStatus.AVAILABLE,
                )
                for cluster_id, spent in active.items()
            ),
            key=lambda share: (-share.credits_consumed, share.name),
        ),
        by_user=sorted(
            (
                UserShare(user_id, users.get(user_id, "?"), credits.as_credits(units))
                for user_id, units in by_user.items()
            ),
            key=lambda share: (-share.credits_consumed, share.name),
        ),
    )
