"""Leases: a cluster with `expiresAt` warns before its end (step log, `cluster.expiring`) and is torn
down at it, by durable timers in its workflow that a killed worker does not lose; an extension moves
them, within the longest lease for its creator, beyond it for an IT manager. On the shared stack, whose
longest lease is 720 hours (tests/conftest.py)."""

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from core.db import transaction
from core.models import Cluster, Tenant, WebhookEvent
from harness.servers import wait_until
from harness.world import request_body, wait_for_cluster
from services.leases import LeasePolicy
from tests.conftest import start_worker, wait_for_worker


def at(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


def create(api, tenant, **fields):
    return api.post("/clusters", json={**request_body(tenant.provider_id), **fields}, headers=tenant.cad.headers)


def test_a_lease_warns_then_tears_the_cluster_down_even_across_a_killed_worker(api, stack, tenant):
    hook = api.post(
        f"/tenants/{tenant.id}/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "events": ["cluster.expiring"]},
        headers=tenant.it.headers,
    )
    assert hook.status_code == 201, hook.text
    created = create(api, tenant, expiresAt=at(timedelta(seconds=25)))
    assert created.status_code == 201, created.text
    cluster = wait_for_cluster(api, created.json()["id"], tenant.cad.headers, "available")
    assert datetime.fromisoformat(cluster["expiresAt"]) == datetime.fromisoformat(created.json()["expiresAt"])

    def lease_lines():
        events = api.get(f"/clusters/{cluster['id']}/events", headers=tenant.cad.headers).json()
        return [e["status"] for e in events if e["step"] == "lease"]

    # The lease is shorter than the warning's lead (60 minutes): the warning comes at once.
    assert wait_until(lease_lines, what="the lease's warning") == ["ending"]

    # The worker dies (SIGKILL) while the workflow waits for the lease's end; another one takes over.
    stack.worker.kill()
    stack.worker = start_worker(stack.env, stack.worker.log.with_name(f"worker-{uuid.uuid4().hex[:6]}.log"))
    wait_for_worker(stack.worker)

    gone = wait_for_cluster(api, cluster["id"], tenant.cad.headers, "deleted", timeout=90)
    assert gone["statusReason"].startswith("the lease ended at ")
    assert lease_lines() == ["ending", "ended"]
    with stack.db.sessions() as session:
        told = session.scalars(select(WebhookEvent).where(WebhookEvent.tenant_id == uuid.UUID(tenant.id))).all()
    assert [(e.type, e.data["clusterId"]) for e in told] == [("cluster.expiring", cluster["id"])]


def test_who_may_extend_a_lease_and_how_far(api, stack, tenant):
    cluster = create(api, tenant, expiresAt=at(timedelta(hours=2))).json()
    wait_for_cluster(api, cluster["id"], tenant.cad.headers, "available")
    extend = f"/clusters/{cluster['id']}/extend"

    later = api.post(extend, json={"until": at(timedelta(hours=3))}, headers=tenant.cad.headers)
    assert later.status_code == 200, later.text
    assert datetime.fromisoformat(later.json()["expiresAt"]) > datetime.fromisoformat(cluster["expiresAt"])
    earlier = api.post(extend, json={"until": at(timedelta(hours=1))}, headers=tenant.cad.headers)
    assert earlier.status_code == 422 and "must be later than the lease's end now" in earlier.json()["detail"]
    beyond = api.post(extend, json={"until": at(timedelta(days=40))}, headers=tenant.cad.headers)
    assert beyond.status_code == 403 and "beyond the longest lease, 720 hours" in beyond.json()["detail"]
    assert api.post(extend, json={"until": at(timedelta(days=40))}, headers=tenant.cad2.headers).status_code == 404
    by_it = api.post(extend, json={"until": at(timedelta(days=40))}, headers=tenant.it.headers)
    assert by_it.status_code == 200, by_it.text
    events = api.get(f"/clusters/{cluster['id']}/events", headers=tenant.cad.headers).json()
    assert [e["status"] for e in events if e["step"] == "lease"] == ["extended", "extended"]
    audit = api.get("/audit", params={"action": "cluster.extend"}, headers=tenant.it.headers).json()
    assert len([a for a in audit if a["target"] == f"cluster {cluster['id']}"]) == 2

    assert api.delete(f"/clusters/{cluster['id']}", headers=tenant.cad.headers).status_code == 202
    gone = api.post(extend, json={"until": at(timedelta(days=41))}, headers=tenant.it.headers)
    assert gone.status_code == 409, gone.text


def test_a_lease_that_cannot_be_given_is_refused_and_changes_nothing(api, stack, tenant):
    past = create(api, tenant, expiresAt=at(timedelta(minutes=-1)))
    assert past.status_code == 422 and "is in the past" in past.json()["detail"]
    too_long = create(api, tenant, expiresAt=at(timedelta(days=31)))
    assert too_long.status_code == 403 and "file a request" in too_long.json()["detail"]
    naive = create(api, tenant, expiresAt="2030-01-01T00:00:00")
    assert naive.status_code == 422, naive.text
    assert api.get("/clusters", headers=tenant.cad.headers).json() == []
    filed_past = api.post(
        "/requests", json={**request_body(tenant.provider_id), "expiresAt": at(timedelta(minutes=-1))},
        headers=tenant.cad.headers,
    )  # fmt: skip
    assert filed_past.status_code == 422 and api.get("/requests", headers=tenant.cad.headers).json() == []
    # A request may ask for longer than a CAD manager may set: its approver decides.
    filed = api.post(
        "/requests", json={**request_body(tenant.provider_id), "expiresAt": at(timedelta(days=60))},
        headers=tenant.cad.headers,
    )  # fmt: skip
    assert filed.status_code == 201 and filed.json()["expiresAt"]


def test_a_tenant_s_own_lease_policy_takes_the_place_of_the_settings(api, stack, tenant):
    """Set with `hpcinfra tenants leases` (tests/test_cli.py): a default of 2 hours, at most 4 for a CAD manager."""
    with transaction(stack.db.sessions) as session:
        row = session.get_one(Tenant, uuid.UUID(tenant.id))
        row.lease_default_hours, row.lease_max_hours = 2, 4
    created = create(api, tenant)
    assert created.status_code == 201 and created.json()["expiresAt"] is None
    cluster = wait_for_cluster(api, created.json()["id"], tenant.cad.headers, "available")
    assert (
        timedelta(hours=1, minutes=59)
        < datetime.fromisoformat(cluster["expiresAt"]) - datetime.now(UTC)
        <= timedelta(hours=2)
    )
    beyond = api.post(
        f"/clusters/{cluster['id']}/extend", json={"until": at(timedelta(hours=5))}, headers=tenant.cad.headers
    )
    assert beyond.status_code == 403 and "beyond the longest lease, 4 hours" in beyond.json()["detail"]
    too_long = create(api, tenant, expiresAt=at(timedelta(hours=5)))
    assert too_long.status_code == 403 and "4 hours" in too_long.json()["detail"]


def test_the_default_lease_begins_when_a_cluster_is_first_available():
    policy = LeasePolicy(default_hours=8, warning_minutes=30)
    now = datetime(2026, 12, 1, 9, tzinfo=UTC)
    own, unleased = Cluster(expires_at=now + timedelta(hours=1)), Cluster(expires_at=None)
    assert policy.started(own, now).expires_at == now + timedelta(hours=1)
    lease = policy.started(unleased, now)
    assert (lease.expires_at, lease.warn_at) == (now + timedelta(hours=8), now + timedelta(hours=7, minutes=30))
    assert unleased.expires_at == now + timedelta(hours=8)
    assert LeasePolicy().started(Cluster(expires_at=None), now) is None
