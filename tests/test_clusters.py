"""Clusters: direct creation within the self-service limit, and failures that end in `error`
with the reason and the failing step in the step log."""

import pytest

from harness.world import make_tenant, request_body, wait_for_cluster


@pytest.fixture
def failing_tenant(stack):
    return make_tenant(
        stack.db.sessions,
        extra_providers={
            "sim-broken": {"kind": "sim", "config": {"failAt": "compute-nodes"}},
            "sim-sick": {"kind": "sim", "config": {"unhealthy": True}},
            "aws-east": {"kind": "aws", "config": {"sshCidr": "198.51.100.0/24"}},
        },
    )


def test_direct_creation_within_self_service_limit(api, tenant):
    body = request_body(tenant.provider_id, size={"numberOfNodes": 2, "nodeType": "medium", "storage": 50})
    created = api.post("/clusters", json=body, headers=tenant.cad.headers)
    assert created.status_code == 201, created.text
    cluster = created.json()
    assert cluster["status"] == "pending"
    assert cluster["requestId"] is None
    assert cluster["createdBy"]["id"] == tenant.cad.id
    available = wait_for_cluster(api, cluster["id"], tenant.cad.headers, "available")
    assert available["size"] == {"numberOfNodes": 2, "nodeType": "medium", "storage": 50, "nodesUp": 2}
    assert [c["id"] for c in api.get("/clusters", headers=tenant.it.headers).json()] == [cluster["id"]]


@pytest.mark.parametrize(
    "size",
    [{"numberOfNodes": 3, "nodeType": "small"}, {"numberOfNodes": 1, "nodeType": "xlarge"}],
    ids=["too-many-nodes", "node-type-needs-approval"],
)
def test_above_self_service_limit_says_to_file_a_request(api, tenant, size):
    refused = api.post("/clusters", json=request_body(tenant.provider_id, size=size), headers=tenant.cad.headers)
    assert refused.status_code == 403
    assert "POST /api/v1/requests" in refused.json()["detail"]
    assert api.get("/clusters", headers=tenant.it.headers).json() == []


@pytest.mark.parametrize(
    "provider, failed_step, reason",
    [
        ("sim-broken", "compute-nodes", "provisioning failed at step compute-nodes (bad configuration): simulated"),
        ("sim-sick", "health-check", "provisioning failed at step health-check: slurmd not responding"),
        (
            "aws-east",
            "provision",
            "provisioning failed at step provision (bad configuration): the Pulumi CLI is not installed",
        ),
    ],
)
def test_failure_ends_in_error_with_reason_and_step(api, failing_tenant, provider, failed_step, reason):
    tenant = failing_tenant
    body = request_body(tenant.providers[provider])
    cluster = api.post("/clusters", json=body, headers=tenant.cad.headers).json()
    failed = wait_for_cluster(api, cluster["id"], tenant.cad.headers, "error")
    assert failed["statusReason"].startswith(reason)
    events = api.get(f"/clusters/{cluster['id']}/events", headers=tenant.cad.headers).json()
    assert (failed_step, "failed") in [(e["step"], e["status"]) for e in events]
    assert events[-1]["step"] == "status" and events[-1]["status"] == "error"
    assert events[-1]["message"] == failed["statusReason"]


def test_an_admin_registers_a_provider_for_another_tenant_and_nobody_else_may(api, tenant, other_tenant, stack):
    from harness.world import make_admin

    body = {"tenantId": tenant.id, "name": "lab-2", "kind": "sim", "region": "r"}
    refused = api.post("/cloud-providers", json=body, headers=other_tenant.it.headers)
    assert refused.status_code == 422 and "tenantId" in refused.json()["detail"]
    created = api.post("/cloud-providers", json=body, headers=make_admin(stack.db.sessions).headers)
    assert created.status_code == 201, created.text
    assert created.json()["id"] in [p["id"] for p in api.get("/cloud-providers", headers=tenant.cad.headers).json()]
    assert len(api.get("/cloud-providers", headers=other_tenant.it.headers).json()) == 1
