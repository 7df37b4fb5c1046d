"""What an elastic cluster is charged for a day of bursty demand, against the same cluster static.

Two clusters of one tenant, 16 `medium` nodes each, on the sim provider with the same demand: a
nightly regression on every node from 01:00 to 05:00, and on working days' hours (09:00 to 18:00)
a 20-minute burst of 6 nodes at the top of each hour. One is static (every node up all day); the
other elastic, with 2 nodes always up, idle nodes powered down after 10 minutes, and a minute to
power a node up or down. Both become available at midnight (UTC) and are metered through the real
activities (the cluster workflow's status change, then the metering collection every 5 minutes of
the day, with the sim's demand read for each), on a fresh SQLite file or PostgreSQL schema; the
credits are read back from the ledger.

    .venv/bin/python -m bench.elastic [--database sqlite|postgresql] [--every-minutes 5]

It prints both days' credits, the elastic cluster's share of the static one's, its node-hours, and
the collections' median time; it exits 1 if the elastic day does not cost less than the static one.
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from temporalio.testing import ActivityEnvironment

from activities.clusters import ClusterActivities
from activities.metering import MeteringActivities
from bench.metering import fresh_database
from core.credentials import credential_box
from core.db import make_engine, make_session_factory
from core.messages import CollectRequest, StatusChange
from core.models import CreditEntry, MetricSample
from core.settings import Settings
from harness.world import insert_cluster, make_tenant
from services import credits
from services.credits import keep_standing_rates
from worker import provider_settings

NODES, FLOOR, IDLE_SECONDS = 16, 2, 600
HOUR = 3600
DEMAND = [{"at": 1 * HOUR, "nodes": 16, "seconds": 4 * HOUR}] + [
    {"at": h * HOUR, "nodes": 6, "seconds": 20 * 60} for h in range(9, 18)
]
SIM = {"demand": DEMAND, "demandRepeatSeconds": 24 * HOUR, "bootSeconds": 60}
MIDNIGHT = datetime(2026, 11, 2, tzinfo=UTC)


def run(url: str, data_dir: Path, every: timedelta) -> dict:
    sessions = make_session_factory(make_engine(url), hooks=[keep_standing_rates])
    tenant = make_tenant(sessions, extra_providers={"bursty": {"kind": "sim", "config": SIM}})
    settings = Settings(database_url=url, data_dir=data_dir, sim_step_seconds=0)
    clusters = ClusterActivities(sessions, credential_box(settings), provider_settings(settings))
    collect = MeteringActivities(sessions, clusters.describe).collect
    provider = uuid.UUID(tenant.providers["bursty"])
    common = {"cloud_provider_id": provider, "number_of_nodes": NODES, "node_type": "medium", "status": "provisioning"}
    static = insert_cluster(sessions, tenant, "static", **common).id
    elastic = insert_cluster(sessions, tenant, "elastic", min_nodes=FLOOR, idle_seconds=IDLE_SECONDS, **common).id
    timings = []
    for cluster_id in (static, elastic):
        change = StatusChange(str(cluster_id), str(uuid.uuid4()), "available", None, MIDNIGHT)
        ActivityEnvironment().run(clusters.set_status, change)
    now = MIDNIGHT
    while now < MIDNIGHT + timedelta(days=1):
        now += every
        for cluster_id in (static, elastic):
            started = time.perf_counter()
            asyncio.run(ActivityEnvironment().run(collect, CollectRequest(str(cluster_id), now + timedelta(seconds=2))))
            timings.append(time.perf_counter() - started)
    with sessions() as session:

        def spent(cluster_id) -> float:
            units = session.scalar(select(func.sum(CreditEntry.amount)).where(CreditEntry.cluster_id == cluster_id))
            return credits.as_credits(-units)

        def node_hours(cluster_id) -> float:
            cores = session.scalar(select(func.sum(MetricSample.cores)).where(MetricSample.cluster_id == cluster_id))
            return cores / 4 / 60  # a medium node has 4 vCPUs

        return {
            "static_credits": spent(static),
            "elastic_credits": spent(elastic),
            "static_node_hours": node_hours(static),
            "elastic_node_hours": node_hours(elastic),
            "collection_median_ms": statistics.median(timings) * 1000,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--every-minutes", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, fresh_database(args.database, Path(folder), keep=False) as url:
        result = run(url, Path(folder), timedelta(minutes=args.every_minutes))
    share = result["elastic_credits"] / result["static_credits"]
    print(f"a day of bursty demand on {NODES} x medium ({args.database}, collected every {args.every_minutes} min)")
    print(f"  static:  {result['static_credits']:10.2f} credits, {result['static_node_hours']:6.1f} node-hours")
    print(
        f"  elastic: {result['elastic_credits']:10.2f} credits, {result['elastic_node_hours']:6.1f} node-hours "
        f"({share:.0%} of static; {FLOOR} nodes always up, {IDLE_SECONDS} s idle)"
    )
    print(f"  a collection takes {result['collection_median_ms']:.1f} ms (median)")
    return 0 if share < 1 else 1


if __name__ == "__main__":
    sys.exit(main())
