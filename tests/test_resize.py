"""Resizing a running cluster (`PATCH /clusters/{clusterId}`), on the shared stack with the sim provider:
its creator within the self-service limit (2 nodes of small or medium here), an IT manager beyond it, a
CAD manager beyond it only through a request that names the cluster (`resizesClusterId`); growth is held
to the tenant's credits; a shrink waits for the jobs on the nodes it removes, across a killed worker."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select
from temporalio.testing import ActivityEnvironment

from core.messages import Resize, ResizeRef
from core.models import Cluster, User
from core.refusals import Refused
from harness.servers import wait_until
from harness.world import insert_cluster, make_tenant, request_body, wait_for_cluster
from services import clusters
from tests.conftest import start_worker, wait_for_worker
from tests.test_elastic import Collector, elastic_cluster

ONE_SMALL = {"numberOfNodes": 1, "nodeType": "small"}


def available_cluster(api, tenant, provider_id=None, size=ONE_SMALL, **fields):
    body = {**request_body(provider_id or tenant.provider_id, size=size, tools=[]), **fields}
    created = api.post("/clusters", json=body, headers=tenant.cad.headers)
    assert created.status_code == 201, created.text
    return wait_for_cluster(api, created.json()["id"], tenant.cad.headers, "available")


def resize_lines(api, tenant, cluster_id):
    events = api.get(f"/clusters/{cluster_id}/events", headers=tenant.cad.headers).json()
    return [(e["status"], e["message"]) for e in events if e["step"] == "resize"]


def resized(api, tenant, cluster_id, number_of_nodes):
    """The cluster once every resize asked for has finished (its line written after the size), at `number_of_nodes`."""

    def done():
        statuses = [status for status, _ in resize_lines(api, tenant, cluster_id)]
        assert "failed" not in statuses, resize_lines(api, tenant, cluster_id)
        if statuses.count("succeeded") < statuses.count("asked"):
            return None
        cluster = api.get(f"/clusters/{cluster_id}", headers=tenant.cad.headers).json()
        return cluster if cluster["size"]["numberOfNodes"] == number_of_nodes else None

    return wait_until(done, timeout=90, what=f"the resize to {number_of_nodes} node(s)")


def test_its_creator_resizes_within_the_limit_and_the_nodes_follow(api, tenant):
    cluster = available_cluster(api, tenant)
    path = f"/clusters/{cluster['id']}"

    grown = api.patch(path, json={"size": {"numberOfNodes": 2}}, headers=tenant.cad.headers)
    assert grown.status_code == 200, grown.text
    now = resized(api, tenant, cluster["id"], 2)
    assert now["nodes"] == [{"name": "node-0", "state": "up"}, {"name": "node-1", "state": "up"}]
    assert now["size"]["nodesUp"] == 2 and now["scaling"] is None
    assert now["estimatedCredits"]["ratePerHour"] > cluster["estimatedCredits"]["ratePerHour"]

    # Elastic, without jobs: every node above the floor of 0 is down, and charged nothing.
    elastic = {"size": {"numberOfNodes": 2}, "scaling": {"minNodes": 0, "idleSeconds": 60}}
    assert api.patch(path, json=elastic, headers=tenant.cad.headers).status_code == 200
    now = resized(api, tenant, cluster["id"], 2)
    assert now["scaling"] == {"minNodes": 0, "idleSeconds": 60}
    assert now["nodes"] == [{"name": "node-0", "state": "down"}, {"name": "node-1", "state": "down"}]
    assert now["size"]["nodesUp"] == 0
    # The same size again changes nothing, and adds no line.
    lines = resize_lines(api, tenant, cluster["id"])
    assert api.patch(path, json=elastic, headers=tenant.cad.headers).status_code == 200
    assert resize_lines(api, tenant, cluster["id"]) == lines

    # Static again, and smaller: the scaling goes with `"scaling": null`.
    assert (
        api.patch(path, json={"size": {"numberOfNodes": 1}, "scaling": None}, headers=tenant.cad.headers).status_code
        == 200
    )
    now = resized(api, tenant, cluster["id"], 1)
    assert now["scaling"] is None and now["nodes"] == [{"name": "node-0", "state": "up"}]
    assert [status for status, _ in resize_lines(api, tenant, cluster["id"])] == ["asked", "started", "succeeded"] * 3
    audit = api.get("/audit", params={"action": "cluster.resize"}, headers=tenant.it.headers).json()
    assert len([a for a in audit if a["target"] == f"cluster {cluster['id']}"]) == 3


def test_beyond_the_limit_an_it_manager_resizes_or_a_request_naming_the_cluster_is_approved(api, tenant):
    cluster = available_cluster(api, tenant)
    path = f"/clusters/{cluster['id']}"

    beyond = api.patch(path, json={"size": {"numberOfNodes": 3}}, headers=tenant.cad.headers)
    assert beyond.status_code == 403, beyond.text
    assert (
        f"file a request with POST /api/v1/requests naming resizesClusterId {cluster['id']}" in beyond.json()["detail"]
    )
    assert api.patch(path, json={"size": {"numberOfNodes": 2}}, headers=tenant.cad2.headers).status_code == 404
    assert resize_lines(api, tenant, cluster["id"]) == []

    by_it = api.patch(path, json={"size": {"numberOfNodes": 3}}, headers=tenant.it.headers)
    assert by_it.status_code == 200, by_it.text
    resized(api, tenant, cluster["id"], 3)

    asked = {**request_body(tenant.provider_id, size={"numberOfNodes": 4, "nodeType": "small"}, tools=[])}
    asked |= {"name": cluster["name"], "resizesClusterId": cluster["id"]}
    filed = api.post("/requests", json=asked, headers=tenant.cad.headers)
    assert filed.status_code == 201, filed.text
    assert filed.json()["resizesClusterId"] == cluster["id"]
    approved = api.patch(f"/requests/{filed.json()['id']}", json={"status": "approved"}, headers=tenant.it.headers)
    assert approved.status_code == 200, approved.text
    assert approved.json()["clusterId"] == cluster["id"]
    resized(api, tenant, cluster["id"], 4)
    assert any(
        "approved by" in message and filed.json()["id"] in message
        for _, message in resize_lines(api, tenant, cluster["id"])
    )
    assert [c["id"] for c in api.get("/clusters", headers=tenant.cad.headers).json()] == [cluster["id"]]


@pytest.mark.parametrize(
    "change, says",
    [
        ({"name": "another-name"}, "name 'another-name' is not the cluster's"),
        ({"size": {"numberOfNodes": 3, "nodeType": "medium"}}, "size.nodeType 'medium' is not the cluster's"),
        ({"tools": [{"name": "yosys", "version": "0.40"}]}, "tools, services and expiresAt are not for a resize"),
        ({"resizesClusterId": str(uuid.uuid4())}, "is not a cluster you created"),
    ],
)
def test_a_request_to_resize_must_name_the_cluster_as_it_is(api, tenant, change, says):
    cluster = available_cluster(api, tenant)
    asked = {**request_body(tenant.provider_id, size={"numberOfNodes": 3, "nodeType": "small"}, tools=[])}
    asked |= {"name": cluster["name"], "resizesClusterId": cluster["id"], **change}
    filed = api.post("/requests", json=asked, headers=tenant.cad.headers)
    assert filed.status_code == 422, filed.text
    assert says in filed.json()["detail"]
    assert api.get("/requests", headers=tenant.cad.headers).json() == []


def test_growth_is_held_to_the_tenants_credits_and_a_shrink_is_not(api, stack):
    """30 credits and 24 hours of runway asked for: one small node leaves 29.9 hours, two would not."""
    world = make_tenant(stack.db.sessions, opening_credits=Decimal(30))
    cluster = available_cluster(api, world)
    path = f"/clusters/{cluster['id']}"
    grown = api.patch(path, json={"size": {"numberOfNodes": 2}}, headers=world.it.headers)
    assert grown.status_code == 409, grown.text
    assert "the cluster was not resized" in grown.json()["detail"] and "runway" in grown.json()["detail"]
    assert api.get(path, headers=world.cad.headers).json()["size"]["numberOfNodes"] == 1
    assert resize_lines(api, world, cluster["id"]) == []


def test_a_shrink_waits_for_the_jobs_on_the_nodes_it_removes_across_a_killed_worker(api, stack, tenant):
    """A simulated job runs on both nodes for the first 40 s: node-1 is drained, the worker dies while the
    resize waits, and another finishes it once the job is done."""
    if stack.db.kind != "sqlite":
        pytest.skip("a resize's wait for jobs is the workflow's, whatever the database: checked once, on SQLite")
    provider = api.post(
        "/cloud-providers",
        json={"name": f"p-{uuid.uuid4().hex[:6]}", "kind": "sim", "region": "sim-1",
              "config": {"demand": [{"at": 0, "nodes": 2, "seconds": 40}]}},
        headers=tenant.it.headers,
    )  # fmt: skip
    assert provider.status_code == 201, provider.text
    cluster = available_cluster(api, tenant, provider.json()["id"], size={"numberOfNodes": 2, "nodeType": "small"})
    shrink = api.patch(f"/clusters/{cluster['id']}", json={"size": {"numberOfNodes": 1}}, headers=tenant.cad.headers)
    assert shrink.status_code == 200, shrink.text
    assert shrink.json()["size"]["numberOfNodes"] == 2  # not before node-1's job is done

    waiting = wait_until(
        lambda: [m for s, m in resize_lines(api, tenant, cluster["id"]) if s == "waiting"], what="the drain"
    )
    assert waiting == ["node-1 still running jobs: removed once idle"]
    stack.worker.kill()
    stack.worker = start_worker(stack.env, stack.worker.log.with_name(f"worker-{uuid.uuid4().hex[:6]}.log"))
    wait_for_worker(stack.worker)

    now = resized(api, tenant, cluster["id"], 1)
    assert now["nodes"] == [{"name": "node-0", "state": "up"}]
    with stack.db.sessions() as session:
        row = session.scalar(select(Cluster).where(Cluster.id == uuid.UUID(cluster["id"])))
        job_end = row.metering_from.timestamp() + 40
    events = api.get(f"/clusters/{cluster['id']}/events", headers=tenant.cad.headers).json()
    started = next(e for e in events if e["step"] == "resize" and e["status"] == "started")
    assert datetime.fromisoformat(started["time"]).timestamp() >= job_end


@pytest.mark.parametrize(
    "to, leaving",
    [
        (Resize(2), ["node-2", "node-3"]),  # a shrink: the nodes it removes
        (Resize(4, min_nodes=1, idle_seconds=60), ["node-1", "node-2", "node-3"]),  # they leave the floor
        (Resize(3, min_nodes=1, idle_seconds=60), ["node-1", "node-2", "node-3"]),  # both
        (Resize(6), []),  # a growth takes nothing away
    ],
)
def test_a_resize_drains_the_nodes_it_removes_and_those_that_leave_the_floor(db, tmp_path, to, leaving):
    """A simulated job on all four nodes of a static cluster: which of them the resize waits for."""
    tenant, cluster_id = elastic_cluster(db, {"demand": [{"at": 0, "nodes": 4, "seconds": 3600}]}, min_nodes=None)
    collector = Collector(db, tmp_path)
    collector.available(cluster_id, datetime.now(UTC) - timedelta(minutes=1))
    busy = asyncio.run(ActivityEnvironment().run(collector.clusters.drain_nodes, ResizeRef(str(cluster_id), to)))
    assert busy == leaving


def test_a_node_that_leaves_the_floor_powers_down_once_nothing_needs_it(db, tmp_path):
    """An elastic sim cluster's floor lowered from 2 to 0 with no jobs: both nodes up until the resize, down at the
    next collection, charged only until then."""
    tenant, cluster_id = elastic_cluster(db, {}, nodes=2, min_nodes=2)
    collector = Collector(db, tmp_path)
    began = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    collector.available(cluster_id, began)
    to = Resize(2, min_nodes=0, idle_seconds=60)
    asyncio.run(ActivityEnvironment().run(collector.clusters.resize, ResizeRef(str(cluster_id), to)))
    with db.sessions() as session:
        assert [(n.name, n.state) for n in session.get(Cluster, cluster_id).nodes] == [
            ("node-0", "up"),
            ("node-1", "up"),
        ]
    collector.collect(cluster_id, datetime.now(UTC) + timedelta(minutes=1))
    with db.sessions() as session:
        cluster = session.get(Cluster, cluster_id)
        assert [(n.name, n.state) for n in cluster.nodes] == [("node-0", "down"), ("node-1", "down")]
        assert cluster.nodes_up == 0


@pytest.mark.parametrize("min_nodes, to", [(None, Resize(2, min_nodes=0, idle_seconds=60)), (1, Resize(2))])
def test_a_cloud_cluster_is_not_made_static_or_elastic_by_a_resize(db, min_nodes, to):
    """Its head node's power programs come with it when it is made: only its size and floor change."""
    tenant = make_tenant(
        db.sessions, extra_providers={"aws": {"kind": "aws", "config": {"sshCidr": "198.51.100.0/24"}}}
    )
    fields = {"min_nodes": min_nodes, "idle_seconds": 60 if min_nodes is not None else None}
    cluster = insert_cluster(
        db.sessions,
        tenant,
        "on-aws",
        cloud_provider_id=uuid.UUID(tenant.providers["aws"]),
        status="available",
        **fields,
    )
    with db.sessions() as session:
        row, it = session.get(Cluster, cluster.id), session.get(User, uuid.UUID(tenant.it.id))
        with pytest.raises(Refused) as refused:
            clusters.admit_resize(session, row, it, to, 0, approved=False)
        assert refused.value.kind == "Invalid" and "this aws cluster stays" in refused.value.message
        grown = Resize(3, min_nodes, fields["idle_seconds"])
        assert clusters.admit_resize(session, row, it, grown, 0, approved=False)
