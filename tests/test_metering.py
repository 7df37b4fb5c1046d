"""Metering on the database: minutes recorded once, charged at the catalog's rates, rolled up exactly,
and read back from the coarsest table that answers, on SQLite and PostgreSQL."""

import asyncio
import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import func, select
from temporalio.testing import ActivityEnvironment

from activities.clusters import ClusterActivities
from activities.metering import MeteringActivities
from core.credentials import credential_box
from core.db import transaction
from core.messages import CollectRequest
from core.models import Cluster, ClusterService, ClusterTool, CreditEntry, MetricRollup, MetricSample, Tenant
from core.providers import Utilisation
from core.settings import Settings
from harness.world import OPENING_CREDITS, insert_cluster, make_tenant
from infra.providers.sim import simulated_use
from services import credits, metering, reports
from services.migrations import MIGRATIONS
from worker import provider_settings

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
STEADY = {}  # no readings: every minute carries the last one (zero at first)


def minutes(n: int) -> timedelta:
    return timedelta(minutes=n)


def metered_cluster(db, tenant, *, nodes=4, node_type="small", storage_gb=10, services=(), since=T0):
    cluster = insert_cluster(
        db.sessions,
        tenant,
        f"m-{uuid.uuid4().hex[:8]}",
        number_of_nodes=nodes,
        node_type=node_type,
        storage_gb=storage_gb,
        status="available",
        metering_from=since,
    )
    with transaction(db.sessions) as session:
        for name in services:
            session.add(ClusterService(cluster_id=cluster.id, name=name, version="16", status="running"))
    return cluster.id


def record(db, cluster_id, now, readings=STEADY):
    with transaction(db.sessions) as session:
        return metering.record(session, cluster_id, now, readings)


def ledger(db, cluster_id) -> list[CreditEntry]:
    with db.sessions() as session:
        return session.scalars(
            select(CreditEntry).where(CreditEntry.cluster_id == cluster_id).order_by(CreditEntry.period_start)
        ).all()


def balance(db, tenant) -> Decimal:
    with db.sessions() as session:
        units = session.get_one(Tenant, uuid.UUID(tenant.id)).credit_balance
        assert units == session.scalar(
            select(func.sum(CreditEntry.amount)).where(CreditEntry.tenant_id == uuid.UUID(tenant.id))
        ), "the balance is the sum of the ledger"
        return Decimal(units) / credits.UNITS_PER_CREDIT


def test_four_small_nodes_for_90_minutes_cost_exactly_what_the_rates_say(db):
    tenant = make_tenant(db.sessions)
    plain = metered_cluster(db, tenant)
    with_database = metered_cluster(db, tenant, services=["postgresql"])

    for cluster_id in (plain, with_database):
        assert record(db, cluster_id, T0 + minutes(90)).minutes == 90

    # small: 1 credit/hour per node; storage: 0.0002 per GB-hour; postgresql: 0.5 per hour.
    expected_plain = Decimal("1.5") * (4 * Decimal(1) + 10 * Decimal("0.0002"))  # 6.003
    expected_with_database = expected_plain + Decimal("1.5") * Decimal("0.5")  # 6.753
    for cluster_id, expected in ((plain, expected_plain), (with_database, expected_with_database)):
        (entry,) = ledger(db, cluster_id)
        assert Decimal(-entry.amount) / credits.UNITS_PER_CREDIT == expected
        assert (entry.period_start, entry.period_end) == (T0, T0 + minutes(90))
    assert balance(db, tenant) == OPENING_CREDITS - expected_plain - expected_with_database

    with db.sessions() as session:
        hours = reports.series(session, plain, T0, T0 + minutes(90), "hour")
    assert [(p.timestamp, p.credits_consumed, p.credits_rate) for p in hours] == [
        (T0, 4.002, 4.002),
        (T0 + minutes(60), 2.001, 4.002),
    ]
    assert (hours[0].cpu.allocated, hours[0].memory.allocated, hours[0].storage.allocated) == (8, 32, 10)


def test_every_minute_the_cluster_was_available_in_is_metered_once_it_has_ended(db):
    tenant = make_tenant(db.sessions)
    # Available at 10:00:30: the minute 10:00 counts, once it is over.
    cluster_id = metered_cluster(db, tenant, since=T0 + timedelta(seconds=30))
    assert record(db, cluster_id, T0 + timedelta(seconds=59)) is None
    span = record(db, cluster_id, T0 + minutes(1))
    assert (span.start, span.end) == (T0, T0 + minutes(1))

    # Teardown began at 10:30:45: 10:30 is the last minute metered, however late the collection runs.
    with transaction(db.sessions) as session:
        session.get_one(Cluster, cluster_id).metering_to = T0 + minutes(30) + timedelta(seconds=45)
    assert record(db, cluster_id, T0 + minutes(30) + timedelta(seconds=50)).minutes == 29
    with db.sessions() as session:
        assert not metering.finished(session.get_one(Cluster, cluster_id))
    assert record(db, cluster_id, T0 + minutes(300)).minutes == 1
    with db.sessions() as session:
        cluster = session.get_one(Cluster, cluster_id)
        assert metering.finished(cluster)
        last = session.scalar(select(func.max(MetricSample.minute)).where(MetricSample.cluster_id == cluster_id))
    assert last == T0 + minutes(30)


def test_missed_minutes_are_filled_in_once_when_collection_resumes(db, tmp_path):
    """Through the activity, with the sim provider's readings: collections every minute, then none for
    an hour (no worker), then again; and the same collection twice (a retried activity)."""
    tenant = make_tenant(db.sessions)
    cluster_id = metered_cluster(db, tenant)
    collect = collector(db, tmp_path)

    for now in [T0 + minutes(m) for m in (1, 2, 3)] + [T0 + minutes(63), T0 + minutes(63), T0 + minutes(64)]:
        asyncio.run(ActivityEnvironment().run(collect, CollectRequest(str(cluster_id), now)))

    with db.sessions() as session:
        samples = session.scalars(
            select(MetricSample).where(MetricSample.cluster_id == cluster_id).order_by(MetricSample.minute)
        ).all()
    assert [s.minute for s in samples] == [T0 + minutes(m) for m in range(64)]
    # The gap carries the sim's reading for each minute it missed, not a copy of the last one.
    for sample in (samples[3], samples[40], samples[62]):
        assert sample.cpu_use == round(simulated_use(str(cluster_id), sample.minute).cpu_percent * 100)
    entries = ledger(db, cluster_id)
    assert [(e.period_start, e.period_end) for e in entries] == [
        (T0 + minutes(a), T0 + minutes(b)) for a, b in ((0, 1), (1, 2), (2, 3), (3, 63), (63, 64))
    ]
    rate = credits.cluster_rate("small", 4, 10)
    assert sum(e.amount for e in entries) == -64 * rate
    assert balance(db, tenant) == OPENING_CREDITS - Decimal(64 * rate) / credits.UNITS_PER_CREDIT


def collector(db, tmp_path):
    settings = Settings(database_url=db.url, data_dir=tmp_path, sim_step_seconds=0)
    clusters = ClusterActivities(db.sessions, credential_box(settings), provider_settings(settings))
    return MeteringActivities(db.sessions, clusters.describe).collect


def test_rollups_equal_the_raw_aggregate(db):
    tenant = make_tenant(db.sessions)
    cluster_id = metered_cluster(db, tenant, since=T0 - minutes(17))
    rng = random.Random(7)
    now = T0 - minutes(17)
    while now < T0 + timedelta(days=2, hours=3):
        now += minutes(rng.choice([1, 1, 1, 2, 7, 59, 61, 200]))
        readings = {m: simulated_use(str(cluster_id), m) for m in _minutes_before(now, 300) if rng.random() < 0.8}
        record(db, cluster_id, now, readings)

    with db.sessions() as session:
        for resolution in ("hour", "day"):
            raw = {
                start: totals
                for start, *totals in session.execute(
                    select(
                        func.min(MetricSample.minute),
                        func.count(),
                        func.sum(MetricSample.cpu_use),
                        func.sum(MetricSample.memory_use),
                        func.sum(MetricSample.storage_use),
                        func.sum(MetricSample.credit_units),
                    )
                    .where(MetricSample.cluster_id == cluster_id)
                    .group_by(_period(session, resolution))
                )
            }
            rolled = {
                r.start: [r.samples, r.cpu_use, r.memory_use, r.storage_use, r.credit_units]
                for r in session.scalars(
                    select(MetricRollup).where(
                        MetricRollup.cluster_id == cluster_id, MetricRollup.resolution == resolution
                    )
                )
            }
            assert len(rolled) > 2
            assert {
                reports.floor_to(start, reports.INTERVALS[resolution]): [int(v) for v in totals]
                for start, totals in raw.items()
            } == rolled


def _minutes_before(now: datetime, count: int) -> list[datetime]:
    last = metering.floor_minute(now)
    return [last - minutes(i) for i in range(1, count + 1)]


def _period(session, resolution: str):
    if session.get_bind().dialect.name == "postgresql":
        return func.date_trunc(resolution, MetricSample.minute)
    return func.substr(MetricSample.minute, 1, 13 if resolution == "hour" else 10)


def test_tenant_figures_over_any_range_equal_the_minutes_of_the_hours_it_touches(db):
    tenant = make_tenant(db.sessions)
    first = T0 - timedelta(days=3, minutes=13)
    clusters = [metered_cluster(db, tenant, since=first), metered_cluster(db, tenant, nodes=2, since=first)]
    now = T0 + timedelta(days=2)
    for cluster_id in clusters:
        record(db, cluster_id, now)
    rng = random.Random(11)
    with db.sessions() as session:
        for _ in range(25):
            start = first + timedelta(seconds=rng.randrange(0, 5 * 86400))
            end = start + timedelta(seconds=rng.randrange(1, 5 * 86400))
            hours = reports.hours_of(start, end, now)
            by_cluster = reports.totals(session, uuid.UUID(tenant.id), *hours, by_cluster=True)
            tenant_wide = reports.totals(session, uuid.UUID(tenant.id), *hours, by_cluster=False)
            expected = reports.Totals()
            for cluster_id in clusters:
                raw = session.execute(
                    select(func.count(), func.coalesce(func.sum(MetricSample.credit_units), 0)).where(
                        MetricSample.cluster_id == cluster_id,
                        MetricSample.minute >= reports.floor_to(start, reports.HOUR),
                        MetricSample.minute < reports.ceil_to(end, reports.HOUR),
                    )
                ).one()
                got = by_cluster.get(cluster_id, reports.Totals())
                assert (got.samples, got.credit_units) == (raw[0], raw[1]), (start, end)
                expected.add(got)
            got = tenant_wide.get(None, reports.Totals())
            assert (got.samples, got.credit_units) == (expected.samples, expected.credit_units)


def test_a_range_is_cut_into_the_coarsest_periods():
    start = datetime(2026, 11, 2, 22, 17, 30, tzinfo=UTC)
    end = datetime(2026, 11, 6, 1, 5, tzinfo=UTC)
    later = datetime(2027, 1, 1, tzinfo=UTC)
    hours = reports.hours_of(start, end, now=later)
    assert hours == (datetime(2026, 11, 2, 22, tzinfo=UTC), datetime(2026, 11, 6, 2, tzinfo=UTC))
    assert reports.pieces(*hours) == [
        ("hour", datetime(2026, 11, 2, 22, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC)),
        ("day", datetime(2026, 11, 3, tzinfo=UTC), datetime(2026, 11, 6, tzinfo=UTC)),
        ("hour", datetime(2026, 11, 6, tzinfo=UTC), datetime(2026, 11, 6, 2, tzinfo=UTC)),
    ]
    # A range reaching the present ends with today's day rollup: nothing later is recorded yet.
    assert reports.pieces(*reports.hours_of(start, end, now=end))[-1] == (
        "day",
        datetime(2026, 11, 3, tzinfo=UTC),
        datetime(2026, 11, 7, tzinfo=UTC),
    )
    within_a_day = (datetime(2026, 11, 2, 9, tzinfo=UTC), datetime(2026, 11, 2, 11, tzinfo=UTC))
    assert reports.pieces(*within_a_day) == [("hour", *within_a_day)]


def test_the_budget_guard_counts_clusters_about_to_start_and_names_the_shortfall(db):
    tenant = make_tenant(db.sessions, opening_credits=Decimal(40))
    insert_cluster(db.sessions, tenant, "starting", status="provisioning")  # 1 small node: 1.002 credits/hour
    insert_cluster(db.sessions, tenant, "gone", status="deleted")
    two_small = credits.cluster_rate("small", 2, 10)
    with transaction(db.sessions) as session:
        reason = credits.shortfall(session, uuid.UUID(tenant.id), two_small, min_runway_hours=24)
        # 40 credits at 1.002 + 2.002 credits/hour last 13.3 hours.
        assert reason is not None and "13.3 hours" in reason and "3.004 credits/hour" in reason
        assert "24 hours" in reason and "POST /tenants/{tenantId}/credits" in reason
        assert credits.shortfall(session, uuid.UUID(tenant.id), two_small, min_runway_hours=12) is None
        assert credits.shortfall(session, uuid.UUID(tenant.id), two_small, min_runway_hours=0) is None


@pytest.mark.parametrize("given", ["0", "-5", "1000000001", "0.0000001"])
def test_a_grant_out_of_range_is_refused_and_changes_nothing(db, given):
    tenant = make_tenant(db.sessions)
    with pytest.raises(ValueError, match="a grant must be"):
        with transaction(db.sessions) as session:
            credits.grant(session, session.get_one(Tenant, uuid.UUID(tenant.id)), Decimal(given), "x")
    assert balance(db, tenant) == OPENING_CREDITS


def test_utilisation_the_provider_cannot_give_is_carried_forward(db):
    tenant = make_tenant(db.sessions)
    cluster_id = metered_cluster(db, tenant)
    record(db, cluster_id, T0 + minutes(2), {T0: Utilisation(50, 40, 10), T0 + minutes(1): Utilisation(60, 41, 11)})
    record(db, cluster_id, T0 + minutes(4), {})
    with db.sessions() as session:
        uses = session.scalars(
            select(MetricSample.cpu_use).where(MetricSample.cluster_id == cluster_id).order_by(MetricSample.minute)
        ).all()
    assert uses == [5000, 6000, 6000, 6000]


def test_analytics_break_consumption_down_by_cluster_and_by_user(db):
    tenant = make_tenant(db.sessions)
    big = metered_cluster(db, tenant, nodes=8)  # 8.002 credits/hour
    small = metered_cluster(db, tenant, nodes=1)  # 1.002 credits/hour
    with transaction(db.sessions) as session:
        session.get_one(Cluster, small).created_by_id = uuid.UUID(tenant.cad2.id)
    for cluster_id in (big, small):
        record(db, cluster_id, T0 + minutes(60))
    now = T0 + minutes(60) + timedelta(seconds=5)

    with db.sessions() as session:
        report = reports.analytics(session, uuid.UUID(tenant.id), T0 - timedelta(days=30), now, now)
    assert [(s.cluster_id, s.credits_consumed) for s in report.by_cluster] == [(big, 8.002), (small, 1.002)]
    assert [(s.user_id, s.credits_consumed) for s in report.by_user] == [
        (uuid.UUID(tenant.cad.id), 8.002),
        (uuid.UUID(tenant.cad2.id), 1.002),
    ]
    assert report.consumed_daily == report.consumed_weekly == report.consumed_monthly == 9.004
    assert report.balance == float(OPENING_CREDITS) - 9.004
    assert (report.active_clusters, report.total_cores, report.total_memory_gb) == (2, 18, 72)
    # The forecast holds the rate of what runs now: 9.004 credits/hour for 7 and 30 days.
    assert (report.forecast_next_week, report.forecast_next_month) == (9.004 * 168, 9.004 * 720)

    # A range before any of it counts nothing.
    with db.sessions() as session:
        before = reports.analytics(session, uuid.UUID(tenant.id), T0 - timedelta(days=3), T0 - timedelta(days=2), now)
    assert before.by_cluster == [] and before.active_clusters == 0 and before.consumed_daily == 0


def test_analytics_list_every_cluster_available_in_the_range_from_its_first_moment(db):
    """A cluster that became available seconds ago has no minute recorded yet: it counts, and is listed
    with nothing consumed, as is its maker; a cluster whose availability ended before the range is not."""
    tenant = make_tenant(db.sessions)
    running = metered_cluster(db, tenant, since=T0 - timedelta(hours=2))
    record(db, running, T0)
    gone = metered_cluster(db, tenant, since=T0 - timedelta(days=3))
    with transaction(db.sessions) as session:
        cluster = session.get_one(Cluster, gone)
        cluster.metering_to, cluster.status = T0 - timedelta(days=2), "deleted"
    record(db, gone, T0)
    fresh = metered_cluster(db, tenant, nodes=1, since=T0 + timedelta(seconds=10))
    with transaction(db.sessions) as session:
        session.get_one(Cluster, fresh).created_by_id = uuid.UUID(tenant.cad2.id)
    now = T0 + timedelta(seconds=40)

    with db.sessions() as session:
        report = reports.analytics(session, uuid.UUID(tenant.id), now - timedelta(days=1), now, now)
    assert [(s.cluster_id, s.credits_consumed, s.utilization_percent) for s in report.by_cluster] == [
        (running, 8.004, 0.0),
        (fresh, 0.0, 0.0),
    ]
    assert report.active_clusters == 2
    assert [(s.user_id, s.credits_consumed) for s in report.by_user] == [
        (uuid.UUID(tenant.cad.id), 8.004),
        (uuid.UUID(tenant.cad2.id), 0.0),
    ]
    assert report.active_users == 2

    # Over a range the gone cluster was available in, it is listed too.
    with db.sessions() as session:
        earlier = reports.analytics(session, uuid.UUID(tenant.id), now - timedelta(days=4), now, now)
    assert {s.cluster_id for s in earlier.by_cluster} == {running, gone, fresh} and earlier.active_clusters == 3


def kept_and_summed(db, tenant) -> tuple[tuple[int, int], tuple[int, int]]:
    """The tenant's standing rates as kept on its row, and as summed from its clusters now."""
    tenant_id = uuid.UUID(tenant.id)
    with db.sessions() as session:
        kept = session.execute(select(Tenant.metered_rate, Tenant.committed_rate).where(Tenant.id == tenant_id)).one()
        summed = (
            credits.summed_rate(session, tenant_id, ("available",)),
            credits.summed_rate(session, tenant_id, credits.STARTED_STATUSES),
        )
    return tuple(kept), summed


# What a tool's and a service's status may be (the API answers with them).
ITEM_STATUSES = {
    ClusterTool: ["pending", "installing", "installed", "failed"],
    ClusterService: ["pending", "provisioning", "running", "failed", "stopped"],
}


def test_the_standing_rates_kept_on_the_tenant_equal_the_sum_of_its_clusters_after_every_commit(db):
    """Random changes to what clusters, tools and services cost and whether they count, committed or
    rolled back, some in the same transaction: after each, the rates on the tenant's row (what every
    request and cluster shown reads) are the sums over its clusters."""
    tenant = make_tenant(db.sessions)
    rng = random.Random(11)
    statuses = ["pending", "provisioning", "available", "deleting", "deleted", "error"]
    cluster_ids = [
        insert_cluster(db.sessions, tenant, f"r-{i}", status=status, number_of_nodes=i + 1).id
        for i, status in enumerate(["available", "pending", "provisioning", "deleted", "error"])
    ]
    # One small node and 10 GB, available; two and three nodes, starting.
    assert kept_and_summed(db, tenant) == ((1_002_000, 1_002_000 + 2_002_000 + 3_002_000),) * 2
    for step in range(60):
        added = []
        try:
            with transaction(db.sessions) as session:
                for _ in range(rng.randint(1, 3)):
                    cluster = session.get(Cluster, rng.choice(cluster_ids))
                    change = rng.choice(["status", "size", "tool", "service", "item status", "new cluster"])
                    if change == "status":
                        cluster.status = rng.choice(statuses)
                    elif change == "size":
                        cluster.number_of_nodes, cluster.node_type = rng.randint(1, 8), rng.choice(["small", "medium"])
                    elif change == "tool":
                        cluster.tools.append(ClusterTool(name="iverilog", version=f"{step}.{rng.random()}"))
                    elif change == "service" and not cluster.services:
                        cluster.services.append(ClusterService(name="postgresql", version="16"))
                    elif change == "item status" and (cluster.tools or cluster.services):
                        item = rng.choice([*cluster.tools, *cluster.services])
                        item.status = rng.choice(ITEM_STATUSES[type(item)])
                    elif change == "new cluster":
                        new = Cluster(
                            tenant_id=cluster.tenant_id, name=f"n-{step}", cloud_provider_id=cluster.cloud_provider_id,
                            number_of_nodes=2, node_type="small", storage_gb=50, status=rng.choice(statuses),
                            created_by_id=cluster.created_by_id,
                        )  # fmt: skip
                        session.add(new)
                        session.flush()
                        added.append(new.id)
                if rng.random() < 0.2:
                    raise RuntimeError("rolled back")
            cluster_ids += added
        except RuntimeError:
            pass
        kept, summed = kept_and_summed(db, tenant)
        assert kept == summed, f"after step {step}"
    with db.sessions() as session:
        assert credits.standing(session, uuid.UUID(tenant.id)).rate == summed[0]
        assert credits.standing(session, uuid.UUID(tenant.id), committed=True).rate == summed[1]


def test_the_migration_that_keeps_the_rates_sums_them_for_existing_tenants(fresh_db):
    tenant = make_tenant(fresh_db.sessions)
    insert_cluster(fresh_db.sessions, tenant, "running", status="available", number_of_nodes=3)
    insert_cluster(fresh_db.sessions, tenant, "starting", status="provisioning")
    before = kept_and_summed(fresh_db, tenant)
    assert before[0] == before[1] != (0, 0)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = fresh_db.url
    command.downgrade(config, "0004")  # the rates' columns go
    command.upgrade(config, "head")  # and come back, summed
    assert kept_and_summed(fresh_db, tenant) == before


def test_clusters_added_at_once_keep_the_rates_without_deadlocking(db):
    """Each new cluster holds a key-share lock on its tenant (its foreign key) before its commit locks the
    tenant to sum the rates again: 20 at once all commit, and the sum counts every one."""
    if db.kind == "sqlite":
        pytest.skip("SQLite has one writer at a time")
    tenant = make_tenant(db.sessions)
    with ThreadPoolExecutor(max_workers=20) as pool:
        added = list(
            pool.map(lambda i: insert_cluster(db.sessions, tenant, f"at-once-{i}", status="available"), range(20))
        )
    assert len(added) == 20
    kept, summed = kept_and_summed(db, tenant)
    assert kept == summed == (20 * credits.cluster_rate("small", 1, 10),) * 2
