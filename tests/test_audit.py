"""The audit log: decisions (by the API and by a signal), clusters made and deleted, credentials shown,
tokens issued and credits granted, each with who, when and from where; never a secret."""

import asyncio
import json
import os
import subprocess
import uuid

import pytest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.requests import RequestActivities
from core.credentials import CredentialBox, new_key
from core.messages import Decision, DecisionRecord, decision_text, request_workflow_id
from core.models import ClusterRequest, utcnow
from harness.servers import executable
from harness.world import file_request, insert_request, make_admin, make_tenant, request_body, wait_for_cluster
from workflows.request import RequestWorkflow


def audit(api, who, **params) -> list[dict]:
    response = api.get("/audit", headers=who.headers, params={"limit": 500, **params})
    assert response.status_code == 200, response.text
    return response.json()


def test_what_is_done_is_in_the_audit_log_with_who_and_where_from(api, stack, tenant, other_tenant):
    admin = make_admin(stack.db.sessions)
    approved = file_request(api, tenant.cad, tenant.provider_id, services=[{"name": "redis", "version": "7.2"}])
    api.patch(f"/requests/{approved['id']}", json={"status": "approved"}, headers=tenant.it.headers)
    rejected = file_request(api, tenant.cad, tenant.provider_id)

    async def reject_by_signal():
        client = await Client.connect(stack.temporal_address)
        handle = client.get_workflow_handle(request_workflow_id(rejected["id"]))
        # A signal's sender can write anything in it, its source too: that is not what the log keeps.
        signalled = Decision("rejected", tenant.it.email, "too big", source="api 203.0.113.9")
        await handle.signal(RequestWorkflow.decide_by_signal, signalled)

    asyncio.run(reject_by_signal())
    cluster_id = api.get(f"/requests/{approved['id']}", headers=tenant.it.headers).json()["clusterId"]
    wait_for_cluster(api, cluster_id, tenant.cad.headers, "available")

    def redis_running():
        return (
            api.get(f"/clusters/{cluster_id}", headers=tenant.cad.headers).json()["services"][0]["status"] == "running"
        )

    from harness.servers import wait_until

    wait_until(redis_running, timeout=60)
    shown = api.get(f"/clusters/{cluster_id}", headers=tenant.cad.headers).json()
    password = shown["services"][0]["credentials"]["password"]
    direct = api.post("/clusters", json=request_body(tenant.provider_id), headers=tenant.cad.headers).json()
    api.delete(f"/clusters/{direct['id']}", headers=tenant.cad.headers)
    api.post(f"/tenants/{tenant.id}/credits", json={"amount": 5, "note": "top-up"}, headers=admin.headers)
    token = subprocess.run(
        [executable("hpcinfra"), "users", "token", "--tenant", tenant.name, "--email", tenant.cad.email],
        env={**os.environ, "HPCINFRA_DATABASE_URL": stack.db.url},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()[-1]

    def wait_for(action: str) -> dict:
        return wait_until(
            lambda: next((e for e in audit(api, tenant.it) if e["action"] == action), None), what=f"audit {action}"
        )

    approve = wait_for("request.approve")
    assert approve["actorId"] == tenant.it.id and approve["target"] == f"request {approved['id']}"
    assert approve["source"].startswith("api ") and approve["detail"] == {"cluster": cluster_id}
    reject = wait_for("request.reject")
    assert reject["actorId"] == tenant.it.id and reject["source"] == "temporal"
    assert reject["detail"] == {"reason": "too big", "claimed": True}  # the signal names its decider, proves nothing
    read = wait_for("credentials.read")
    assert read["actorId"] == tenant.cad.id and read["detail"] == {"services": ["redis"]}
    assert wait_for("cluster.create")["target"] == f"cluster {direct['id']}"
    assert wait_for("cluster.delete")["actorId"] == tenant.cad.id
    grant = wait_for("credits.grant")
    assert grant["actorId"] == admin.id and grant["detail"]["credits"] == "5.0"
    issued = [e for e in audit(api, tenant.it, action="token.create") if e["source"] == "cli"]
    assert len(issued) == 4  # three users made with a token each, and the one just issued

    everything = json.dumps(audit(api, tenant.it))
    for secret in (password, token, tenant.cad.token, tenant.it.token):
        assert secret not in everything

    # Tenants see their own log; a CAD manager none; an admin every tenant's.
    assert all(e["tenantId"] == other_tenant.id for e in audit(api, other_tenant.it))
    refused = api.get("/audit", headers=tenant.cad.headers)
    assert refused.status_code == 403 and "it_manager or admin" in refused.json()["detail"]
    assert {e["tenantId"] for e in audit(api, admin, tenantId=tenant.id)} == {tenant.id}


def test_decisions_through_temporal_can_be_turned_off(db):
    """For operators who cannot restrict who may signal in their Temporal namespace: with
    HPCINFRA_SIGNAL_DECISIONS=false a decision the API did not prove (a signal, or the `decide` update sent
    from the Temporal CLI with any decider and source in it) is refused (the workflow logs and drops it,
    the request stays pending); the API's own decision, which carries its proof, is taken."""
    tenant = make_tenant(db.sessions)
    request_id = str(insert_request(db.sessions, tenant))
    box = CredentialBox([new_key()])
    activities = RequestActivities(db.sessions, 0, signal_decisions=False, proofs=box)

    def decide(proof: str | None = None, source: str = "api 203.0.113.9"):
        record = DecisionRecord(request_id, "rejected", utcnow(), tenant.it.id, "no", None, source, proof=proof)
        return ActivityEnvironment().run(activities.record_decision, record)

    forged = CredentialBox([new_key()]).prove(
        decision_text(request_id, "rejected", tenant.it.id, "no", "api 203.0.113.9")
    )
    for unproven in ({}, {"proof": forged}):
        with pytest.raises(ApplicationError, match="HPCINFRA_SIGNAL_DECISIONS") as refused:
            decide(**unproven)
        assert refused.value.type == "NotAllowed" and refused.value.non_retryable
    with db.sessions() as session:
        assert session.get_one(ClusterRequest, uuid.UUID(request_id)).status == "pending"
    proof = box.prove(decision_text(request_id, "rejected", tenant.it.id, "no", "api 203.0.113.9"))
    assert decide(proof=proof).status == "rejected"
