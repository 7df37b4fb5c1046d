"""The request -> approval -> provisioning flow, through HTTP, on a real worker and Temporal dev server.

Proves: the happy path to an `available` cluster with its step log; rejection with a reason;
a decision signalled from the Temporal CLI gives the same result as the PATCH; a request is decided
at most once (409 afterwards, even under concurrent decisions); notes.
"""

import json
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from core.models import Cluster
from harness.servers import executable, wait_until
from harness.world import file_request, wait_for_cluster, wait_for_request


def signal(stack, workflow_id: str, name: str, payload: dict) -> None:
    """What an operator types: `temporal workflow signal` against the same server."""
    subprocess.run(
        [executable("temporal"), "workflow", "signal", "--address", stack.temporal_address,
         "--workflow-id", workflow_id, "--name", name, "--input", json.dumps(payload)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip


def test_filed_approved_provisioned(api, tenant):
    body = {
        "name": "rtl-regression",
        "cloudProviderId": tenant.provider_id,
        "size": {"numberOfNodes": 3, "nodeType": "large"},
        "tools": [{"name": "verilator", "version": "5.024"}],
        "services": [{"name": "postgresql", "version": "16", "config": {"databaseName": "results"}}],
    }
    created = api.post("/requests", json=body, headers=tenant.cad.headers)
    assert created.status_code == 201, created.text
    request = created.json()
    assert request["status"] == "pending"
    assert request["requestedBy"]["id"] == tenant.cad.id
    assert request["approvedBy"] is None and request["clusterId"] is None
    assert request["size"] == {"numberOfNodes": 3, "nodeType": "large", "storage": 10}
    assert [t["name"] for t in request["tools"]] == ["verilator"]

    pending = api.get("/requests", params={"status": "pending"}, headers=tenant.it.headers).json()
    assert [r["id"] for r in pending] == [request["id"]]

    decided = api.patch(f"/requests/{request['id']}", json={"status": "approved"}, headers=tenant.it.headers)
    assert decided.status_code == 200, decided.text
    approved = decided.json()
    assert approved["status"] == "approved"
    assert approved["approvedBy"]["id"] == tenant.it.id
    assert approved["approvedAt"] >= approved["requestedAt"]
    assert approved["clusterId"]

    cluster = wait_for_cluster(api, approved["clusterId"], tenant.cad.headers, "available")
    assert cluster["name"] == "rtl-regression"
    assert cluster["size"] == {"numberOfNodes": 3, "nodeType": "large", "storage": 10, "nodesUp": 3}
    assert cluster["requestId"] == request["id"]
    assert cluster["createdBy"]["id"] == tenant.cad.id
    assert len(cluster["outputs"]["nodeIds"]) == 3
    assert [(t["name"], t["version"]) for t in cluster["tools"]] == [("verilator", "5.024")]
    assert [t["id"] for t in cluster["tools"]] == [t["id"] for t in request["tools"]]
    assert [s["id"] for s in cluster["services"]] == [s["id"] for s in request["services"]]
    assert [(s["name"], s["config"]) for s in cluster["services"]] == [("postgresql", {"databaseName": "results"})]

    # Then the tools and services the request named are installed, each as its own step.
    def installed():
        current = api.get(f"/clusters/{cluster['id']}", headers=tenant.cad.headers).json()
        done = [t["status"] for t in current["tools"]] == ["installed"] and [
            s["status"] for s in current["services"]
        ] == ["running"]
        return current if done else None

    wait_until(installed, what="tools installed and services running")
    events = api.get(f"/clusters/{cluster['id']}/events", headers=tenant.cad.headers).json()
    steps = [(e["step"], e["status"]) for e in events]
    assert steps == [
        ("status", "provisioning"),
        ("provision", "started"),
        ("network", "succeeded"),
        ("firewall", "succeeded"),
        ("head-node", "succeeded"),
        ("compute-nodes", "succeeded"),
        ("storage", "succeeded"),
        ("provision", "succeeded"),
        ("health-check", "started"),
        ("health-check", "succeeded"),
        ("status", "available"),
        ("install-tool", "started"),
        ("verilator", "succeeded"),
        ("install-tool", "succeeded"),
        ("start-service", "started"),
        ("postgresql", "succeeded"),
        ("start-service", "succeeded"),
    ]
    assert events[11]["message"] == "verilator 5.024"
    assert [e["time"] for e in events] == sorted(e["time"] for e in events)

    listed = api.get("/clusters", params={"status": "available"}, headers=tenant.cad.headers).json()
    assert [c["id"] for c in listed] == [cluster["id"]]


def test_rejected_with_reason(api, tenant, stack):
    request = file_request(api, tenant.cad, tenant.provider_id)
    reason = "use the shared regression cluster instead"
    decided = api.patch(
        f"/requests/{request['id']}", json={"status": "rejected", "rejectionReason": reason}, headers=tenant.it.headers
    )
    assert decided.status_code == 200, decided.text
    rejected = decided.json()
    assert rejected["status"] == "rejected"
    assert rejected["rejectionReason"] == reason
    assert rejected["approvedBy"]["id"] == tenant.it.id
    assert rejected["clusterId"] is None
    # The requester sees the same, and no cluster was made.
    assert api.get(f"/requests/{request['id']}", headers=tenant.cad.headers).json() == rejected
    with stack.db.sessions() as session:
        assert session.query(Cluster).filter_by(request_id=uuid.UUID(request["id"])).count() == 0


@pytest.mark.parametrize("status", ["approved", "rejected"])
def test_decision_by_signal_equals_decision_by_patch(api, tenant, stack, status):
    decision = {"status": status, "rejectionReason": "not this quarter" if status == "rejected" else None}
    by_patch = file_request(api, tenant.cad, tenant.provider_id)
    by_signal = file_request(api, tenant.cad, tenant.provider_id)

    patched = api.patch(f"/requests/{by_patch['id']}", json=decision, headers=tenant.it.headers).json()
    signal(stack, f"request-{by_signal['id']}", "decide",
           {"status": status, "decided_by": tenant.it.email, "rejection_reason": decision["rejectionReason"]})  # fmt: skip
    signalled = wait_for_request(api, by_signal["id"], tenant.it.headers, status)

    def outcome(request: dict) -> dict:
        return {
            "status": request["status"],
            "approvedBy": request["approvedBy"],
            "rejectionReason": request["rejectionReason"],
            "hasCluster": request["clusterId"] is not None,
            "hasApprovedAt": request["approvedAt"] is not None,
        }

    assert outcome(signalled) == outcome(patched)
    if status == "approved":
        for request in (patched, signalled):
            wait_for_cluster(api, request["clusterId"], tenant.it.headers, "available")
    # The workflow agrees with the database: it refuses a second decision either way.
    again = api.patch(f"/requests/{by_signal['id']}", json={"status": "approved"}, headers=tenant.it.headers)
    assert again.status_code == 409


def test_signal_from_someone_who_may_not_decide_is_ignored(api, tenant, stack):
    request = file_request(api, tenant.cad, tenant.provider_id)
    signal(stack, f"request-{request['id']}", "decide", {"status": "approved", "decided_by": tenant.cad.email})
    signal(stack, f"request-{request['id']}", "decide", {"status": "approved", "decided_by": "nobody@nowhere.example"})
    # A note through the same workflow is processed after the signals, so once it shows, they were handled.
    signal(
        stack,
        f"request-{request['id']}",
        "add_note",
        {"request_id": request["id"], "by": tenant.it.email, "note": "looking"},
    )
    wait_until(lambda: api.get(f"/requests/{request['id']}/notes", headers=tenant.it.headers).json(), what="the note")
    assert api.get(f"/requests/{request['id']}", headers=tenant.it.headers).json()["status"] == "pending"
    # The request can still be decided properly.
    decided = api.patch(f"/requests/{request['id']}", json={"status": "approved"}, headers=tenant.it.headers)
    assert decided.status_code == 200


def test_deciding_twice_is_409_and_changes_nothing(api, tenant):
    request = file_request(api, tenant.cad, tenant.provider_id)
    first = api.patch(f"/requests/{request['id']}", json={"status": "approved"}, headers=tenant.it.headers).json()
    for decision in ({"status": "approved"}, {"status": "rejected", "rejectionReason": "changed my mind"}):
        again = api.patch(f"/requests/{request['id']}", json=decision, headers=tenant.it.headers)
        assert again.status_code == 409
        assert again.headers["content-type"] == "application/problem+json"
        assert "already approved" in again.json()["detail"]
    after = api.get(f"/requests/{request['id']}", headers=tenant.it.headers).json()
    assert {k: after[k] for k in ("status", "approvedAt", "clusterId", "rejectionReason")} == {
        k: first[k] for k in ("status", "approvedAt", "clusterId", "rejectionReason")
    }


def test_concurrent_decisions_give_exactly_one(api, tenant, stack):
    request = file_request(api, tenant.cad, tenant.provider_id)
    decisions = [{"status": "approved"}, {"status": "rejected", "rejectionReason": "no"}] * 4

    def decide(decision: dict) -> int:
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            return client.patch(f"/requests/{request['id']}", json=decision, headers=tenant.it.headers).status_code

    with ThreadPoolExecutor(len(decisions)) as pool:
        codes = list(pool.map(decide, decisions))
    assert sorted(codes) == [200] + [409] * (len(decisions) - 1)
    final = api.get(f"/requests/{request['id']}", headers=tenant.it.headers).json()
    with stack.db.sessions() as session:
        clusters = session.query(Cluster).filter_by(request_id=uuid.UUID(request["id"])).count()
    assert clusters == (1 if final["status"] == "approved" else 0)


def test_notes_oldest_first_from_requester_and_approver(api, tenant):
    request = file_request(api, tenant.cad, tenant.provider_id)
    first = api.post(
        f"/requests/{request['id']}/notes", json={"note": "needed for tape-out"}, headers=tenant.cad.headers
    )
    assert first.status_code == 201, first.text
    assert first.json()["by"]["id"] == tenant.cad.id
    second = api.post(
        f"/requests/{request['id']}/notes", json={"note": "how many nodes really?"}, headers=tenant.it.headers
    )
    assert second.status_code == 201
    notes = api.get(f"/requests/{request['id']}/notes", headers=tenant.cad.headers).json()
    assert [(n["note"], n["by"]["email"]) for n in notes] == [
        ("needed for tape-out", tenant.cad.email),
        ("how many nodes really?", tenant.it.email),
    ]
    assert notes[0]["time"] <= notes[1]["time"]
    # Notes appear on the request itself too, and may still be added once it is decided.
    assert api.get(f"/requests/{request['id']}", headers=tenant.it.headers).json()["notes"] == notes
    api.patch(
        f"/requests/{request['id']}",
        json={"status": "rejected", "rejectionReason": "too big"},
        headers=tenant.it.headers,
    )
    late = api.post(
        f"/requests/{request['id']}/notes", json={"note": "ok, resubmitting smaller"}, headers=tenant.cad.headers
    )
    assert late.status_code == 201
