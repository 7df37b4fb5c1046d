"""Elastic clusters: a floor of nodes always up, the rest powered up for jobs and down once idle, each
charged only for the minutes it was up. The sim provider's demand model drives the power; the metering
collection records it (the step log, webhooks, node-minutes), on SQLite and PostgreSQL."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from temporalio.testing import ActivityEnvironment

from activities.clusters import ClusterActivities
from activities.metering import MeteringActivities
from core.credentials import credential_box
from core.db import transaction
from core.messages import CollectRequest, StatusChange
from core.models import ClusterEvent, CreditEntry, NodeUptime, WebhookEvent
from core.settings import Settings
from harness.servers import wait_until
from harness.world import insert_cluster, make_tenant, wait_for_cluster
from services import credits
from services.outbox import Outbox, create_webhook
from worker import provider_settings

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
# Jobs for three nodes from 2 to 5 minutes after the cluster came up: its floor and two more (powered down
# after a minute idle).
BURST = {"demand": [{"at": 120, "nodes": 3, "seconds": 180}]}


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


class Collector:
    """The cluster workflow's status activity and the metering activity, on the test's database."""

    def __init__(self, db, tmp_path) -> None:
        settings = Settings(database_url=db.url, data_dir=tmp_path, sim_step_seconds=0)
        self.box = credential_box(settings)
        self.clusters = ClusterActivities(db.sessions, self.box, provider_settings(settings))
        self.metering = MeteringActivities(db.sessions, self.clusters.describe, Outbox(None, 0))

    def available(self, cluster_id, at: datetime) -> None:
        change = StatusChange(str(cluster_id), str(uuid.uuid4()), "available", None, at)
        ActivityEnvironment().run(self.clusters.set_status, change)

    def collect(self, cluster_id, now: datetime) -> None:
        asyncio.run(ActivityEnvironment().run(self.metering.collect, CollectRequest(str(cluster_id), now)))


def elastic_cluster(db, config, *, nodes=4, min_nodes=1, idle_seconds=60):
    tenant = make_tenant(db.sessions, extra_providers={"bursty": {"kind": "sim", "config": config}})
    cluster = insert_cluster(
        db.sessions,
        tenant,
        f"e-{uuid.uuid4().hex[:8]}",
        cloud_provider_id=uuid.UUID(tenant.providers["bursty"]),
        number_of_nodes=nodes,
        min_nodes=min_nodes,
        idle_seconds=idle_seconds,
        status="provisioning",
    )
    return tenant, cluster.id


def test_an_elastic_cluster_is_charged_for_the_minutes_each_node_was_up(db, tmp_path):
    """One node always up; two more up from minute 2 until a minute after the burst ends (minute 6):
    10 minutes of the floor and 2 x 4 of the burst, 18 node-minutes instead of a static cluster's 40."""
    tenant, cluster_id = elastic_cluster(db, BURST, nodes=4, min_nodes=1)
    collector = Collector(db, tmp_path)
    with transaction(db.sessions) as session:
        hook, _ = create_webhook(
            session, collector.box, uuid.UUID(tenant.id), "https://hooks.example.com/h", ["cluster.node_changed"], None
        )
    collector.available(cluster_id, T0)
    for m in range(1, 11):
        collector.collect(cluster_id, T0 + minutes(m) + timedelta(seconds=2))
    collector.collect(cluster_id, T0 + minutes(10) + timedelta(seconds=2))  # a retried collection

    with db.sessions() as session:
        entries = session.scalars(select(CreditEntry).where(CreditEntry.cluster_id == cluster_id)).all()
        lines = session.scalars(
            select(ClusterEvent).where(ClusterEvent.cluster_id == cluster_id, ClusterEvent.step == "node")
        ).all()
        spans = session.scalars(select(NodeUptime).where(NodeUptime.cluster_id == cluster_id)).all()
        told = session.scalars(select(WebhookEvent).where(WebhookEvent.tenant_id == uuid.UUID(tenant.id))).all()
    base, per_node = credits.cluster_rate("small", 0, 10), credits.node_rate("small")
    assert -sum(e.amount for e in entries) == 10 * base + 18 * per_node
    assert credits.cluster_rate("small", 4, 10) * 10 > -sum(e.amount for e in entries)  # the static cluster's
    assert sorted((line.message, line.time) for line in lines) == sorted(
        [
            ("node-1 is up", T0 + minutes(2)),
            ("node-2 is up", T0 + minutes(2)),
            ("node-1 is down", T0 + minutes(6)),
            ("node-2 is down", T0 + minutes(6)),
        ]
    )
    # Each change once for the webhooks too, with the nodes up after it.
    assert sorted((e.data["node"], e.data["state"], e.data["nodesUp"]) for e in told) == [
        ("node-1", "down", 2), ("node-1", "up", 2), ("node-2", "down", 1), ("node-2", "up", 3)
    ]  # fmt: skip
    assert sorted((s.node, s.up_from, s.up_to) for s in spans) == [
        ("node-0", T0, None),
        ("node-1", T0 + minutes(2), T0 + minutes(6)),
        ("node-2", T0 + minutes(2), T0 + minutes(6)),
    ]


def test_the_floor_never_powers_down_and_a_short_gap_keeps_a_node_up(db, tmp_path):
    """Two bursts 30 s apart with a minute's idle time are one span; the floor (2 of 3) is not in the
    provider's changes at all, however many jobs come and go."""
    demand = {"demand": [{"at": 60, "nodes": 3, "seconds": 60}, {"at": 150, "nodes": 3, "seconds": 60}]}
    _, cluster_id = elastic_cluster(db, demand, nodes=3, min_nodes=2)
    collector = Collector(db, tmp_path)
    collector.available(cluster_id, T0)
    collector.collect(cluster_id, T0 + minutes(10))
    with db.sessions() as session:
        spans = session.scalars(select(NodeUptime).where(NodeUptime.cluster_id == cluster_id)).all()
    assert sorted((s.node, s.up_from, s.up_to) for s in spans) == [
        ("node-0", T0, None),
        ("node-1", T0, None),
        ("node-2", T0 + minutes(1), T0 + minutes(4.5)),
    ]


def test_a_cluster_that_goes_away_stops_charging_its_nodes(db, tmp_path):
    """Deleted while a burst holds nodes up: from then on no node is charged, whatever the provider says."""
    _, cluster_id = elastic_cluster(db, {"demand": [{"at": 0, "nodes": 4, "seconds": 3600}]}, min_nodes=0)
    collector = Collector(db, tmp_path)
    collector.available(cluster_id, T0)
    collector.collect(cluster_id, T0 + minutes(3))
    change = StatusChange(str(cluster_id), str(uuid.uuid4()), "deleting", None, T0 + minutes(3))
    ActivityEnvironment().run(collector.clusters.set_status, change)
    collector.collect(cluster_id, T0 + minutes(20))
    with db.sessions() as session:
        entries = session.scalars(select(CreditEntry).where(CreditEntry.cluster_id == cluster_id)).all()
        spans = session.scalars(select(NodeUptime).where(NodeUptime.cluster_id == cluster_id)).all()
    assert {s.up_to for s in spans} == {T0 + minutes(3)} and len(spans) == 4
    assert -sum(e.amount for e in entries) == credits.cluster_rate("small", 4, 10) * 3


# --- through the API ----------------------------------------------------------------------------


def sim_provider(api, tenant, config) -> str:
    answer = api.post(
        "/cloud-providers",
        json={"name": f"p-{uuid.uuid4().hex[:6]}", "kind": "sim", "region": "sim-1", "config": config},
        headers=tenant.it.headers,
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def test_an_elastic_cluster_shows_its_nodes_come_up_for_jobs(api, tenant, db):
    """A job waiting from the start: the first collection after the cluster is available powers up what
    it needs, which the cluster, its summary and its step log show."""
    provider = sim_provider(api, tenant, {"demand": [{"at": 0, "nodes": 2, "seconds": 3600}]})
    body = {
        "name": "elastic",
        "cloudProviderId": provider,
        "size": {"numberOfNodes": 2, "nodeType": "small"},
        "scaling": {"minNodes": 0, "idleSeconds": 60},
    }
    created = api.post("/clusters", json=body, headers=tenant.cad.headers)
    assert created.status_code == 201, created.text
    cluster = created.json()
    assert cluster["scaling"] == {"minNodes": 0, "idleSeconds": 60}
    assert cluster["estimatedCredits"]["minRatePerHour"] < cluster["estimatedCredits"]["ratePerHour"]
    wait_for_cluster(api, cluster["id"], tenant.cad.headers, "available")

    def both_up():
        shown = api.get(f"/clusters/{cluster['id']}", headers=tenant.cad.headers).json()
        return shown if shown["size"]["nodesUp"] == 2 else None

    now = wait_until(both_up, what="both nodes to be up")
    assert now["nodes"] == [{"name": "node-0", "state": "up"}, {"name": "node-1", "state": "up"}]
    assert now["size"]["nodesUp"] == 2
    events = api.get(f"/clusters/{cluster['id']}/events", headers=tenant.cad.headers).json()
    assert {e["message"] for e in events if e["step"] == "node"} == {"node-0 is up", "node-1 is up"}
    summary = api.get(f"/clusters/{cluster['id']}/metrics/summary", headers=tenant.cad.headers)
    assert summary.status_code == 200, summary.text
    assert summary.json()["credits"]["currentRate"] == credits.as_rate(credits.cluster_rate("small", 2, 10))


@pytest.mark.parametrize(
    "scaling, says",
    [
        ({"minNodes": 3, "idleSeconds": 60}, "scaling.minNodes (3) must be at most size.numberOfNodes (2)"),
        ({"minNodes": 0, "idleSeconds": 5}, "idleSeconds"),
        ({"minNodes": 0}, "idleSeconds"),
    ],
)
def test_a_scaling_that_does_not_fit_is_refused_and_changes_nothing(api, tenant, scaling, says):
    body = {"name": "nofit", "cloudProviderId": tenant.provider_id, "size": {"numberOfNodes": 2, "nodeType": "small"}}
    for path in ("/requests", "/clusters"):
        answer = api.post(path, json={**body, "scaling": scaling}, headers=tenant.cad.headers)
        assert answer.status_code == 422, answer.text
        assert says in answer.text
        assert api.get(path, headers=tenant.cad.headers).json() == []


def test_a_request_for_an_elastic_cloud_cluster_keeps_its_scaling(api, db):
    """Cloud clusters are elastic too (their programs: tests/test_cloud_programs.py): the request says so."""
    tenant = make_tenant(
        db.sessions, extra_providers={"aws-east": {"kind": "aws", "config": {"sshCidr": "198.51.100.0/24"}}}
    )
    body = {
        "name": "elastic-aws",
        "cloudProviderId": tenant.providers["aws-east"],
        "size": {"numberOfNodes": 4, "nodeType": "small"},
        "scaling": {"minNodes": 0, "idleSeconds": 600},
    }
    answer = api.post("/requests", json=body, headers=tenant.cad.headers)
    assert answer.status_code == 201, answer.text
    assert answer.json()["scaling"] == {"minNodes": 0, "idleSeconds": 600}
    estimate = answer.json()["estimatedCredits"]
    assert estimate["minRatePerHour"] < estimate["ratePerHour"]
