"""Recording a cluster's metered minutes: the minute samples, their hour and day rollups, the ledger
entry and the balance, all in one transaction, so they always agree.

A cluster is metered by the minute: every minute in which it was available (from the minute it became
available to the minute it stopped being available: teardown began, or it failed) is recorded and
charged as a whole minute, once that minute has ended; a node of an elastic cluster is charged for the
minutes it was up (services/nodes.py). Collection picks up where the last one
stopped (`Cluster.metered_until`), so minutes missed while no worker ran are recorded when one runs
again, and a minute is never recorded twice.
"""

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.catalog import NODE_TYPES
from core.models import Cluster, MetricRollup, MetricSample
from core.providers import Utilisation
from services import credits, nodes

MINUTE = timedelta(minutes=1)
# Rollups kept as samples arrive, coarsest last: (name, the start of the period a minute falls in).
ROLLUPS = (
    ("hour", lambda t: t.replace(minute=0, second=0, microsecond=0)),
    ("day", lambda t: t.replace(hour=0, minute=0, second=0, microsecond=0)),
)
_ROLLUP_SUMS = ("samples", "cpu_use", "memory_use", "storage_use", "credit_units")
_ROLLUP_LATEST = ("cores", "memory_gb", "storage_gb")


def floor_minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def ceil_minute(t: datetime) -> datetime:
    floor = floor_minute(t)
    return floor if floor == t else floor + MINUTE


@dataclass(frozen=True)
class Window:
    """Whole minutes [start, end) to record."""

    start: datetime
    end: datetime

    @property
    def minutes(self) -> int:
        return int((self.end - self.start) / MINUTE)


@dataclass(frozen=True)
class Allocation:
    """What a cluster has: cores and memory over its nodes, and its shared storage."""

    cores: int
    memory_gb: int
    storage_gb: int

    @classmethod
    def of(cls, cluster, nodes: int | None = None) -> "Allocation":
        """Of a cluster row, or of a row of its columns, with `nodes` of its nodes up (all unless told)."""
        node_type = NODE_TYPES[cluster.node_type]
        nodes = cluster.number_of_nodes if nodes is None else nodes
        return cls(nodes * node_type.vcpus, nodes * node_type.memory_gb, cluster.storage_gb)


def window(cluster: Cluster, now: datetime) -> Window | None:
    """The minutes of `cluster` not recorded yet, up to `now`; None when there are none."""
    if cluster.metering_from is None:
        return None
    start = floor_minute(cluster.metering_from)
    if cluster.metered_until is not None:
        start = max(start, cluster.metered_until)
    end = floor_minute(now)
    if cluster.metering_to is not None:
        end = min(end, ceil_minute(cluster.metering_to))
    return Window(start, end) if start < end else None


def finished(cluster: Cluster) -> bool:
    """Metering is over: the cluster is no longer available and every minute it was is recorded."""
    if cluster.metering_from is None:
        return True
    if cluster.metering_to is None:
        return False
    return cluster.metered_until is not None and cluster.metered_until >= ceil_minute(cluster.metering_to)


def record(
    session: Session, cluster_id: uuid.UUID, now: datetime, readings: dict[datetime, Utilisation]
) -> Window | None:
    """Record the cluster's minutes up to `now` with the provider's `readings` (by minute), and charge
    them. A minute without a reading takes the one before it: the newest reading before the window, or
    else the last minute recorded. Returns what was recorded. Two collections of one cluster never both
    record: PostgreSQL holds the cluster's row until this commits, SQLite has one writer at a time, and
    a minute or a ledger period recorded twice would break a unique key and roll the second back."""
    cluster = session.get_one(Cluster, cluster_id, with_for_update={"of": Cluster})
    span = window(cluster, now)
    if span is None:
        return None
    # Storage, tools and services cost every minute; each node, the minutes it was charged (services/nodes.py).
    base, per_node = credits.rate_of(cluster, nodes=0), credits.node_rate(cluster.node_type)
    charged = nodes.charged_per_minute(session, cluster, span.start, span.end)
    earlier = [minute for minute in readings if minute < span.start]
    reading = readings[max(earlier)] if earlier else last_reading(session, cluster_id)
    rows = []
    for i, up in enumerate(charged):
        minute = span.start + i * MINUTE
        allocation = Allocation.of(cluster, up)
        reading = readings.get(minute, reading)
        rows.append(
            {
                "cluster_id": cluster_id,
                "minute": minute,
                "cpu_use": _hundredths(reading.cpu_percent),
                "memory_use": _hundredths(reading.memory_percent),
                "storage_use": _hundredths(reading.storage_percent),
                "cores": allocation.cores,
                "memory_gb": allocation.memory_gb,
                "storage_gb": allocation.storage_gb,
                "credit_units": base + up * per_node,
            }
        )
    session.execute(insert(MetricSample), rows)
    _roll_up(session, cluster.tenant_id, rows)
    credits.charge(session, cluster.tenant_id, cluster_id, span.start, span.end, sum(r["credit_units"] for r in rows))
    cluster.metered_until = span.end
    return span


def last_reading(session: Session, cluster_id: uuid.UUID) -> Utilisation:
    """The cluster's use in the last minute recorded; nothing before the first."""
    last = session.scalar(
        select(MetricSample).where(MetricSample.cluster_id == cluster_id).order_by(MetricSample.minute.desc()).limit(1)
    )
    if last is None:
        return Utilisation(0.0, 0.0, 0.0)
    return Utilisation(last.cpu_use / 100, last.memory_use / 100, last.storage_use / 100)


def _hundredths(percent: float) -> int:
    return round(min(max(percent, 0.0), 100.0) * 100)


def _roll_up(session: Session, tenant_id: uuid.UUID, samples: Iterable[dict]) -> None:
    """Add the samples to their hours and days: one upsert per period, adding sums to what is there."""
    periods: dict[tuple[str, datetime], dict] = {}
    for sample in samples:
        for resolution, period_of in ROLLUPS:
            key = (resolution, period_of(sample["minute"]))
            rollup = periods.get(key)
            if rollup is None:
                rollup = periods[key] = {
                    "cluster_id": sample["cluster_id"],
                    "tenant_id": tenant_id,
                    "resolution": resolution,
                    "start": key[1],
                    **{name: 0 for name in _ROLLUP_SUMS},
                }
            rollup["samples"] += 1
            for name in _ROLLUP_SUMS[1:]:
                rollup[name] += sample[name]
            for name in _ROLLUP_LATEST:
                rollup[name] = sample[name]
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(MetricRollup).values(list(periods.values()))
    table = MetricRollup.__table__
    statement = statement.on_conflict_do_update(
        index_elements=["cluster_id", "resolution", "start"],
        set_={
            **{name: table.c[name] + statement.excluded[name] for name in _ROLLUP_SUMS},
            **{name: statement.excluded[name] for name in _ROLLUP_LATEST},
        },
    )
    session.execute(statement)
