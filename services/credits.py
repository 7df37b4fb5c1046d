"""The credit arithmetic: rates, the ledger, balances and runway.

Every rate in the catalog is in credits per hour, and usage is metered by the whole minute. To keep
the accounts exact, amounts are held as whole *credit units*: one unit is a millionth of a credit-per-hour
rate held for one minute, so a minute at any catalog rate costs a whole number of units and a sum of
minutes never drifts (a credit is 60,000,000 units). Amounts leave this module as credits.
"""

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import case, event, func, inspect, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.catalog import NODE_TYPES, SERVICES, STORAGE_CREDITS_PER_GB_HOUR, TOOLS
from core.enums import ClusterStatus, ServiceStatus, ToolStatus
from core.models import Cluster, ClusterRequest, ClusterService, ClusterTool, CreditEntry, Tenant, utcnow
from services import audit

UNITS_PER_CREDIT = 60_000_000
# Units a minute at a rate of one credit per hour costs.
UNITS_PER_CREDIT_HOUR_MINUTE = 1_000_000
MINUTES_PER_DAY = 24 * 60
BUDGET_POLICIES = ("flag", "stop")
MAX_GRANT = 1_000_000_000
# The most a balance may hold: far beyond any real need, and within a 64-bit count of units.
MAX_BALANCE = 100_000_000_000
# A service costs while it is wanted: from the moment it is asked for until it fails or is stopped.
COSTLY_SERVICE_STATUSES = (ServiceStatus.PENDING, ServiceStatus.PROVISIONING, ServiceStatus.RUNNING)
# Clusters that run, or are about to: what the budget guard counts against the balance.
STARTED_STATUSES = (ClusterStatus.PENDING, ClusterStatus.PROVISIONING, ClusterStatus.AVAILABLE)


def per_minute(credits_per_hour: float) -> int:
    """The units one minute at this rate costs."""
    return round(Decimal(str(credits_per_hour)) * UNITS_PER_CREDIT_HOUR_MINUTE)


def as_credits(units: int) -> float:
    return round(units / UNITS_PER_CREDIT, 6)


def as_rate(units_per_minute: int) -> float:
    """A per-minute cost in units, as credits per hour."""
    return round(units_per_minute / UNITS_PER_CREDIT_HOUR_MINUTE, 6)


def as_units(credits: Decimal | float | int) -> int:
    return round(Decimal(str(credits)) * UNITS_PER_CREDIT)


def cluster_rate(
    node_type: str, number_of_nodes: int, storage_gb: int, services: Iterable[str] = (), tools: Iterable[str] = ()
) -> int:
    """What a minute of a cluster of this size with these services and tools costs, in units."""
    return (
        number_of_nodes * node_rate(node_type)
        + storage_gb * per_minute(STORAGE_CREDITS_PER_GB_HOUR)
        + item_rate(services, tools)
    )


def node_rate(node_type: str) -> int:
    """What a minute of one node of this type costs, in units."""
    return per_minute(NODE_TYPES[node_type].credits_per_hour)


def item_rate(services: Iterable[str] = (), tools: Iterable[str] = ()) -> int:
    """What a minute of these services and tools costs, in units, on any cluster."""
    return sum(per_minute(SERVICES[name].credits_per_hour) for name in services) + sum(
        per_minute(TOOLS[name].credits_per_hour) for name in tools
    )


def rate_of(cluster: Cluster, nodes: int | None = None) -> int:
    """A cluster's cost per minute, in units, with the services it has now and `nodes` of its nodes
    charged: all of them unless told (what it may cost at most, which the budget guard counts)."""
    return cluster_rate(
        cluster.node_type,
        cluster.number_of_nodes if nodes is None else nodes,
        cluster.storage_gb,
        [s.name for s in cluster.services if s.status in COSTLY_SERVICE_STATUSES],
        [t.name for t in cluster.tools if t.status != ToolStatus.FAILED],
    )


class AskedCluster(Protocol):
    """What a request and a new cluster's ask (services.clusters.ClusterAsk) both say of a cluster."""

    node_type: str
    number_of_nodes: int
    storage_gb: int
    tools: list[dict[str, Any]]
    services: list[dict[str, Any]]


def rate_of_request(request: "ClusterRequest | AskedCluster", nodes: int | None = None) -> int:
    """What a minute of the cluster a request (or a ClusterAsk: the same fields) asks for would cost, in
    units, with `nodes` of its nodes up (all of them unless told)."""
    return cluster_rate(
        request.node_type,
        request.number_of_nodes if nodes is None else nodes,
        request.storage_gb,
        [s["name"] for s in request.services],
        [t["name"] for t in request.tools],
    )


def runway_days(balance: int, rate: int) -> float | None:
    """How many days `balance` lasts at `rate` (units per minute); None when nothing draws on it."""
    if rate <= 0:
        return None
    return round(max(balance, 0) / rate / MINUTES_PER_DAY, 2)


@dataclass(frozen=True)
class Standing:
    """A tenant's balance and what draws on it now, both in units."""

    balance: int
    rate: int
    policy: str

    @property
    def exhausted(self) -> bool:
        return self.balance <= 0


def shortfall(
    session: Session, tenant_id: uuid.UUID, rate: int, min_runway_hours: float, what: str = "this cluster"
) -> str | None:
    """Why `what` (a new cluster, a retried one, a service added), costing `rate` (units per minute), may not
    start: the tenant's balance would not last `min_runway_hours` at the rate of its clusters that run or are about to, with the new one; None
    when it would, or the check is off. Locks the tenant's row until the caller's transaction ends, so
    two approvals at once cannot both count on the same balance."""
    if min_runway_hours <= 0:
        return None
    lock_tenant(session, tenant_id)
    others = standing(session, tenant_id, committed=True)
    total = others.rate + rate
    hours = max(others.balance, 0) / total / 60 if total > 0 else float("inf")
    if hours >= min_runway_hours:
        return None
    return (
        f"the tenant's balance of {as_credits(others.balance):g} credits would last {hours:.1f} hours at "
        f"{as_rate(total):g} credits/hour ({what}'s {as_rate(rate):g} and its other clusters' "
        f"{as_rate(others.rate):g}); {what} may start only with {min_runway_hours:g} hours of runway. "
        "An admin can grant credits (POST /tenants/{tenantId}/credits)"
    )


def lock_tenant(session: Session, tenant_id: uuid.UUID) -> None:
    """Hold the tenant's row until the transaction ends, so that what is read of it next is the latest and
    nobody moves it before the commit. The lock is a write that changes nothing: on PostgreSQL it takes the
    row's FOR NO KEY UPDATE lock (not FOR UPDATE: rows inserted with a foreign key to the tenant hold a KEY
    SHARE lock on it, which FOR UPDATE would wait for, so two such transactions would deadlock); on SQLite,
    where FOR UPDATE is ignored, it takes the database's write lock (a read first would let two
    transactions read the same balance)."""
    session.execute(
        update(Tenant)
        .where(Tenant.id == tenant_id)
        .values(credit_balance=Tenant.credit_balance)
        .execution_options(synchronize_session=False)
    )


def account(session: Session, tenant_id: uuid.UUID) -> tuple[int, str]:
    """The tenant's balance (in units) and budget policy."""
    balance, policy = session.execute(
        select(Tenant.credit_balance, Tenant.budget_policy).where(Tenant.id == tenant_id)
    ).one()
    return balance, policy


def standing(session: Session, tenant_id: uuid.UUID, *, committed: bool = False) -> Standing:
    """The tenant's balance and total rate: that of its clusters metered now or, `committed`, of those
    and the ones about to start. One row: the rates are kept on it (see keep_standing_rates)."""
    rate = Tenant.committed_rate if committed else Tenant.metered_rate
    balance, policy, rate = session.execute(
        select(Tenant.credit_balance, Tenant.budget_policy, rate).where(Tenant.id == tenant_id)
    ).one()
    return Standing(balance=balance, rate=rate, policy=policy)


# --- the standing rates, kept on the tenant's row ---------------------------------------------------------

# What a cluster, tool or service costs, and whether it counts, depends on these of its attributes.
_PRICED = {
    Cluster: ("status", "number_of_nodes", "min_nodes", "nodes_up", "node_type", "storage_gb", "tools", "services"),
    ClusterTool: ("status", "name"),
    ClusterService: ("status", "name"),
}
_NOTED = "hpcinfra.standing_rates"  # in session.info: (tenant ids, cluster ids) whose rates changed


def keep_standing_rates(sessions: sessionmaker[Session]) -> None:
    """Make every session of `sessions` keep its tenants' standing rates current: a flush that changes
    what a cluster, tool or service costs, or whether it counts, notes its tenant; the commit sums that
    tenant's rates again in the same transaction. Reading the rates is then one row, however many
    clusters the tenant has (every request and cluster the API shows carries its runway)."""
    event.listen(sessions, "before_flush", _note_priced_changes)
    event.listen(sessions, "before_commit", _refresh_noted)
    event.listen(sessions, "after_rollback", lambda session: session.info.pop(_NOTED, None))


def _note_priced_changes(session: Session, _flush_context: object, _instances: object) -> None:
    tenants, clusters = session.info.setdefault(_NOTED, (set(), set()))
    for row in (*session.new, *session.dirty, *session.deleted):
        priced = _PRICED.get(type(row))
        if priced is None:
            continue
        state = inspect(row)
        if not (state.pending or state.deleted or any(state.attrs[a].history.has_changes() for a in priced)):
            continue
        if isinstance(row, Cluster):
            tenants.add(row.tenant_id)
        elif row.cluster_id is not None:  # else it is new in a cluster's list, and that cluster is noted
            clusters.add(row.cluster_id)


def _refresh_noted(session: Session) -> None:
    session.flush()  # the commit's own flush comes after this hook: what it writes is noted now
    if _NOTED not in session.info:
        return
    tenants, clusters = session.info.pop(_NOTED)
    if clusters:
        tenants |= set(session.scalars(select(Cluster.tenant_id).where(Cluster.id.in_(clusters))))
    for tenant_id in sorted(tenants):
        refresh_standing_rates(session, tenant_id)


def refresh_standing_rates(session: Session, tenant_id: uuid.UUID) -> None:
    """Sum the tenant's rates again and keep them on its row. The row is locked first, so that two
    transactions changing the tenant's clusters at once cannot each write a sum without the other's
    change: the sums are taken by the next statement, which (at READ COMMITTED) sees every commit made
    before the lock was granted. Every transaction changing a tenant's clusters takes its turn on the
    lock, held until its commit: only these two statements run under it."""
    lock_tenant(session, tenant_id)
    session.execute(
        update(Tenant)
        .where(Tenant.id == tenant_id)
        .values(
            metered_rate=_summed_rate(tenant_id, (ClusterStatus.AVAILABLE,), Cluster.nodes_charged),
            committed_rate=_summed_rate(tenant_id, STARTED_STATUSES),
        )
        .execution_options(synchronize_session=False)
    )


def summed_rate(
    session: Session, tenant_id: uuid.UUID, statuses: tuple[str, ...], nodes=Cluster.number_of_nodes
) -> int:
    """The sum of the rates of the tenant's clusters in `statuses`, with their tools and services."""
    return int(session.scalar(select(_summed_rate(tenant_id, statuses, nodes))))


def _summed_rate(tenant_id: uuid.UUID, statuses: tuple[str, ...], nodes=Cluster.number_of_nodes):
    """A SQL expression: the sum of the rates of the tenant's clusters in `statuses`, with their tools and
    services, at the catalog's rates (one statement, however many clusters), counting the nodes `nodes`
    says (all of each cluster's, or those charged now: Cluster.nodes_charged)."""
    chosen = select(Cluster.id).where(Cluster.tenant_id == tenant_id, Cluster.status.in_(statuses))
    per_node = _per_minute_of(Cluster.node_type, {n.name: n.credits_per_hour for n in NODE_TYPES.values()})
    storage = per_minute(STORAGE_CREDITS_PER_GB_HOUR)
    parts = [
        select(func.coalesce(func.sum(nodes * per_node + Cluster.storage_gb * storage), 0))
        .where(Cluster.id.in_(chosen))
        .scalar_subquery()
    ]
    for table, rates, wanted in (
        (
            ClusterService,
            {s.name: s.credits_per_hour for s in SERVICES.values()},
            ClusterService.status.in_(COSTLY_SERVICE_STATUSES),
        ),
        (ClusterTool, {t.name: t.credits_per_hour for t in TOOLS.values()}, ClusterTool.status != ToolStatus.FAILED),
    ):
        parts.append(
            select(func.coalesce(func.sum(_per_minute_of(table.name, rates)), 0))
            .where(table.cluster_id.in_(chosen), wanted)
            .scalar_subquery()
        )
    return parts[0] + parts[1] + parts[2]


def _per_minute_of(name_column, rates: dict[str, float]):
    """A SQL expression: the per-minute units of the catalog rate of the item `name_column` names."""
    return case({name: per_minute(rate) for name, rate in rates.items()}, value=name_column, else_=0)


def grant(
    session: Session, tenant: Tenant, credits: Decimal, note: str, by: uuid.UUID | None = None, source: str = audit.CLI
) -> CreditEntry:
    """Add credits to a tenant's balance, as an entry in its ledger."""
    if not 0 < credits <= MAX_GRANT or credits != credits.quantize(Decimal("0.000001")):
        raise ValueError(f"a grant must be from 0.000001 to {MAX_GRANT:,} credits, with at most 6 decimals")
    balance, _ = account(session, tenant.id)
    if balance + as_units(credits) > as_units(MAX_BALANCE):
        raise ValueError(f"a balance may hold at most {MAX_BALANCE:,} credits; this tenant has {as_credits(balance):,}")
    entry = CreditEntry(tenant_id=tenant.id, kind="grant", amount=as_units(credits), note=note, by_id=by, time=utcnow())
    _enter(session, entry)
    audit.record(
        session, tenant.id, by, "credits.grant", f"tenant {tenant.id}", source, credits=str(credits), note=note
    )
    return entry


def charge(
    session: Session, tenant_id: uuid.UUID, cluster_id: uuid.UUID, start: datetime, end: datetime, units: int
) -> None:
    """Draw a cluster's consumption over [start, end) from the tenant's balance. The ledger takes one
    entry per cluster and start, so the same interval can never be charged twice."""
    entry = CreditEntry(
        tenant_id=tenant_id,
        kind="consumption",
        amount=-units,
        cluster_id=cluster_id,
        period_start=start,
        period_end=end,
        time=utcnow(),
    )
    _enter(session, entry)


def _enter(session: Session, entry: CreditEntry) -> None:
    """Write a ledger entry and move the balance with it, in the database (collectors of one tenant's
    clusters charge it at the same time: a read-modify-write here would lose some of their charges)."""
    session.add(entry)
    session.execute(
        update(Tenant)
        .where(Tenant.id == entry.tenant_id)
        .values(credit_balance=Tenant.credit_balance + entry.amount)
        .execution_options(synchronize_session=False)
    )
    session.flush()
