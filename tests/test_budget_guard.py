"""The budget guard holds on every path that raises what a tenant's clusters cost: an approval, a direct
create, a retry of a cluster in error, a service added to a running cluster; and two of them at once
cannot both count on the same balance, on SQLite as on PostgreSQL.

The tenants here hold 30 credits, and the guard asks for 24 hours of runway: one 1-node `small` cluster
(1.002 credits/hour) leaves 29.9 hours, a second one or a postgresql service (0.5 credits/hour) on it
leaves less than 24.
"""

import threading
import time
import uuid
from decimal import Decimal

from core.db import transaction
from core.models import Cluster, ClusterService
from harness.world import make_tenant, request_body, wait_for_cluster
from services import credits

BALANCE = Decimal(30)
SMALL = {"numberOfNodes": 1, "nodeType": "small"}


def one_small(provider_id: str) -> dict:
    return request_body(provider_id, size=SMALL, tools=[])


def test_a_service_added_to_a_running_cluster_is_guarded(api, stack):
    world = make_tenant(stack.db.sessions, opening_credits=BALANCE)
    r = api.post("/clusters", json=one_small(world.provider_id), headers=world.cad.headers)
    assert r.status_code == 201, r.text
    cluster = wait_for_cluster(api, r.json()["id"], world.cad.headers, "available")

    r = api.post(
        f"/clusters/{cluster['id']}/services", json={"name": "postgresql", "version": "16"}, headers=world.cad.headers
    )
    assert r.status_code == 409, r.text
    assert "runway" in r.json()["detail"] and "postgresql" in r.json()["detail"], r.text
    with stack.db.sessions() as s:
        assert s.query(ClusterService).filter_by(cluster_id=uuid.UUID(cluster["id"])).count() == 0
    # What costs nothing is not held back by the guard.
    r = api.post(
        f"/clusters/{cluster['id']}/tools", json={"name": "yosys", "version": "0.40"}, headers=world.cad.headers
    )
    assert r.status_code == 202, r.text


def test_a_retry_is_guarded_and_a_refused_one_stays_in_error(api, stack):
    world = make_tenant(
        stack.db.sessions,
        extra_providers={"broken": {"kind": "sim", "config": {"failAt": "compute-nodes"}}},
        opening_credits=BALANCE,
    )
    r = api.post("/clusters", json=one_small(world.providers["broken"]), headers=world.cad.headers)
    assert r.status_code == 201, r.text
    failed = wait_for_cluster(api, r.json()["id"], world.cad.headers, "error")
    # In error it costs nothing, so a second cluster fits the balance; the first may then not come back.
    r = api.post("/clusters", json=one_small(world.provider_id), headers=world.cad.headers)
    assert r.status_code == 201, r.text

    r = api.post(f"/clusters/{failed['id']}/retry", headers=world.cad.headers)
    assert r.status_code == 409, r.text
    assert "runway" in r.json()["detail"], r.text
    after = api.get(f"/clusters/{failed['id']}", headers=world.cad.headers).json()
    assert (after["status"], after["statusReason"]) == ("error", failed["statusReason"])
    # The workflow agrees: the refused retry left it in error, so a delete is taken as usual.
    assert api.delete(f"/clusters/{failed['id']}", headers=world.cad.headers).status_code == 202


def test_two_clusters_at_once_cannot_both_count_on_the_same_balance(db):
    """The guard's check and the write of what it admits share one transaction, and a second check waits
    for the first one's commit: it then counts the first cluster and refuses."""
    world = make_tenant(db.sessions, opening_credits=BALANCE)
    tenant_id = uuid.UUID(world.id)
    rate = credits.cluster_rate("small", 1, 10)
    first_checked, outcomes = threading.Event(), {}

    def first() -> None:
        with transaction(db.sessions) as session:
            outcomes["first"] = credits.shortfall(session, tenant_id, rate, 24)
            session.add(
                Cluster(
                    tenant_id=tenant_id, name="first", cloud_provider_id=uuid.UUID(world.provider_id),
                    number_of_nodes=1, node_type="small", storage_gb=10, created_by_id=uuid.UUID(world.cad.id),
                )
            )  # fmt: skip
            session.flush()
            first_checked.set()
            time.sleep(0.5)
            outcomes["first committed"] = time.monotonic()

    def second() -> None:
        first_checked.wait(10)
        with transaction(db.sessions) as session:
            outcomes["second"] = credits.shortfall(session, tenant_id, rate, 24)
            outcomes["second checked"] = time.monotonic()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert outcomes["first"] is None
    assert outcomes["second"] is not None and "runway" in outcomes["second"], outcomes
    assert outcomes["second checked"] >= outcomes["first committed"]
