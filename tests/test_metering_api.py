"""Metering through the real API and worker: metrics, summary and analytics agree with the ledger; the
budget guard; the `stop` policy; role rules and time-range validation."""

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from core.db import transaction
from core.messages import metering_workflow_id
from harness.servers import wait_until
from harness.world import OPENING_CREDITS, file_request, make_admin, make_tenant, request_body, wait_for_cluster
from services import credits


def create_cluster(api, tenant, **overrides) -> dict:
    body = request_body(tenant.provider_id, size={"numberOfNodes": 2, "nodeType": "small"}, **overrides)
    response = api.post("/clusters", json=body, headers=tenant.cad.headers)
    assert response.status_code == 201, response.text
    return response.json()


def get_ok(api, path: str, who, **params) -> dict:
    response = api.get(path, params=params, headers=who.headers)
    assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"
    return response.json()


def consumption_in_ledger(api, tenant, admin, cluster_id: str) -> float:
    entries = get_ok(api, f"/tenants/{tenant.id}/credits", admin, limit=500)["entries"]
    return -sum(e["amount"] for e in entries if e["clusterId"] == cluster_id)


def test_a_sim_cluster_is_metered_minute_by_minute_and_every_report_agrees_with_the_ledger(api, stack, tenant):
    admin = make_admin(stack.db.sessions)
    cluster = create_cluster(api, tenant, services=[{"name": "redis", "version": "7.2"}])
    wait_for_cluster(api, cluster["id"], tenant.cad.headers, "available")

    def first_minute():
        points = get_ok(api, f"/clusters/{cluster['id']}/metrics", tenant.cad, interval="minute")["metrics"]
        return points or None

    points = wait_until(first_minute, timeout=90, what="the first metered minute")
    point = points[0]
    # 2 small nodes (1 credit/hour each), 10 GB (0.0002 per GB-hour), redis (0.25 per hour).
    assert point["credits"] == {"consumed": round(2.252 / 60, 6), "rate": 2.252}
    assert point["cpu"]["allocatedCores"] == 4 and point["memory"]["allocatedGB"] == 16
    assert point["storage"]["allocatedGB"] == 10 and 0 < point["cpu"]["utilizationPercent"] <= 100

    summary = get_ok(api, f"/clusters/{cluster['id']}/metrics/summary", tenant.cad)
    assert summary["credits"]["currentRate"] == 2.252
    assert summary["credits"]["estimatedDaily"] == pytest.approx(2.252 * 24)
    assert summary["credits"]["estimatedMonthly"] == pytest.approx(2.252 * 24 * 30)
    assert summary["current"]["cpu"]["allocatedCores"] == 4
    analytics = get_ok(api, f"/tenants/{tenant.id}/analytics", tenant.it)
    ledger = consumption_in_ledger(api, tenant, admin, cluster["id"])
    (share,) = analytics["breakdown"]["byCluster"]
    # Collection goes on meanwhile: compare what was read at (nearly) one moment, allowing one minute.
    one_minute = 2.252 / 60 + 1e-6
    assert abs(summary["credits"]["totalConsumed"] - ledger) <= one_minute
    assert abs(share["creditsConsumed"] - ledger) <= one_minute
    assert analytics["breakdown"]["byUser"][0]["userId"] == tenant.cad.id
    assert analytics["overview"]["activeClusters"] == 1 and analytics["resources"]["totalCores"] == 4
    assert analytics["credits"]["balance"] == pytest.approx(float(OPENING_CREDITS) - ledger, abs=one_minute)
    assert analytics["credits"]["forecast"]["nextWeek"] == pytest.approx(2.252 * 24 * 7)

    # Teardown ends the metering: the workflow finishes, and nothing is charged after the teardown began.
    assert api.delete(f"/clusters/{cluster['id']}", headers=tenant.cad.headers).status_code == 202
    wait_for_cluster(api, cluster["id"], tenant.cad.headers, "deleted")
    wait_until(lambda: metering_ended(stack, cluster["id"]), timeout=90, what="the metering workflow to end")
    entries = get_ok(api, f"/tenants/{tenant.id}/credits", admin)["entries"]
    teardown = next(
        e for e in get_ok(api, f"/clusters/{cluster['id']}/events", tenant.cad) if e["status"] == "deleting"
    )
    # The minute the teardown began in is the last one charged.
    began = datetime.fromisoformat(teardown["time"])
    last_charged = max(datetime.fromisoformat(e["periodEnd"]) for e in entries if e["clusterId"] == cluster["id"])
    assert last_charged == began.replace(second=0, microsecond=0) + timedelta(minutes=1)
    assert get_ok(api, f"/clusters/{cluster['id']}/metrics/summary", tenant.cad)["credits"]["currentRate"] == 0


def metering_ended(stack, cluster_id: str) -> bool:
    import asyncio

    async def status():
        client = await Client.connect(stack.temporal_address)
        return (await client.get_workflow_handle(metering_workflow_id(cluster_id)).describe()).status

    return asyncio.run(status()) == WorkflowExecutionStatus.COMPLETED


def test_under_the_stop_policy_a_spent_balance_tears_clusters_down_with_a_note(api, stack):
    tenant = make_tenant(stack.db.sessions, budget_policy="stop")
    cluster = create_cluster(api, tenant)
    spend_everything(stack, tenant, cluster["id"])

    wait_for_cluster(api, cluster["id"], tenant.cad.headers, "deleted", timeout=120)
    events = get_ok(api, f"/clusters/{cluster['id']}/events", tenant.cad)
    (why,) = [e["message"] for e in events if e["step"] == "status" and e["status"] == "deleting"]
    assert "credit balance is" in why and "'stop'" in why and "grant credits" in why


def spend_everything(stack, tenant, cluster_id: str) -> None:
    """Charge the tenant its whole balance, as a long-gone stretch of the cluster's use would have."""
    long_ago = datetime(2001, 1, 1, tzinfo=UTC)
    with transaction(stack.db.sessions) as session:
        units = credits.standing(session, uuid.UUID(tenant.id)).balance
        credits.charge(session, uuid.UUID(tenant.id), uuid.UUID(cluster_id), long_ago, long_ago, units)


def test_under_the_flag_policy_a_spent_balance_marks_running_clusters(api, stack, tenant):
    cluster = create_cluster(api, tenant)
    wait_for_cluster(api, cluster["id"], tenant.cad.headers, "available")
    spend_everything(stack, tenant, cluster["id"])
    summary = get_ok(api, f"/clusters/{cluster['id']}/metrics/summary", tenant.cad)
    # (A minute may have been charged since: the balance is at most zero.)
    assert summary["budget"]["balance"] <= 0 and summary["budget"]["policy"] == "flag"
    assert summary["budget"]["overBudget"] is True
    analytics = get_ok(api, f"/tenants/{tenant.id}/analytics", tenant.it)
    assert analytics["credits"]["exhausted"] is True
    assert get_ok(api, f"/clusters/{cluster['id']}", tenant.cad)["status"] == "available"


def test_an_approval_the_balance_cannot_carry_for_a_day_is_refused_until_credits_are_granted(api, stack):
    tenant = make_tenant(stack.db.sessions, opening_credits=Decimal(40))
    admin = make_admin(stack.db.sessions)
    request = file_request(api, tenant.cad, tenant.provider_id)  # 2 small nodes: 2.002 credits/hour
    estimate = request["estimatedCredits"]
    assert estimate == {
        "ratePerHour": 2.002,
        "runwayDaysBefore": None,
        "runwayDaysAfter": round(40 / 2.002 / 24, 2),
        "minRatePerHour": None,  # a static cluster's rate has no range
    }

    refused = api.patch(f"/requests/{request['id']}", json={"status": "approved"}, headers=tenant.it.headers)
    assert refused.status_code == 409, refused.text
    assert "40 credits would last 20.0 hours" in refused.json()["detail"] and "24 hours" in refused.json()["detail"]
    assert get_ok(api, f"/requests/{request['id']}", tenant.it)["status"] == "pending"
    direct = api.post("/clusters", json=request_body(tenant.provider_id), headers=tenant.cad.headers)
    assert direct.status_code == 409 and "runway" in direct.json()["detail"]

    granted = api.post(f"/tenants/{tenant.id}/credits", json={"amount": 100, "note": "pilot"}, headers=admin.headers)
    assert granted.status_code == 201, granted.text
    assert granted.json()["amount"] == 100 and granted.json()["note"] == "pilot"
    account = get_ok(api, f"/tenants/{tenant.id}/credits", tenant.it)
    assert account["balance"] == 140 and [e["kind"] for e in account["entries"]] == ["grant", "grant"]
    approved = api.patch(f"/requests/{request['id']}", json={"status": "approved"}, headers=tenant.it.headers)
    assert approved.status_code == 200, approved.text


def test_clusters_show_their_rate_and_the_runway_without_and_with_them(api, stack):
    tenant = make_tenant(stack.db.sessions, opening_credits=Decimal(1000))
    first = create_cluster(api, tenant)
    wait_for_cluster(api, first["id"], tenant.cad.headers, "available")
    second = create_cluster(api, tenant, services=[{"name": "postgresql", "version": "16"}])
    balance = get_ok(api, f"/tenants/{tenant.id}/credits", tenant.it)["balance"]
    # Just created, so still pending: "after" counts it, "before" only the running one.
    shown = second["estimatedCredits"]
    assert second["status"] == "pending" and shown["ratePerHour"] == 2.502
    assert shown["runwayDaysBefore"] == pytest.approx(balance / 2.002 / 24, abs=0.02)
    assert shown["runwayDaysAfter"] == pytest.approx(balance / (2.002 + 2.502) / 24, abs=0.02)
    wait_for_cluster(api, second["id"], tenant.cad.headers, "available")
    running = get_ok(api, f"/clusters/{second['id']}", tenant.cad)["estimatedCredits"]
    assert running["runwayDaysBefore"] == pytest.approx(balance / 2.002 / 24, abs=0.02)
    assert running["runwayDaysAfter"] == pytest.approx(balance / (2.002 + 2.502) / 24, abs=0.02)


def test_who_may_read_metrics_analytics_and_credits(api, stack, tenant, other_tenant):
    admin = make_admin(stack.db.sessions)
    cluster = create_cluster(api, tenant)
    metrics = f"/clusters/{cluster['id']}/metrics"
    assert api.get(metrics, headers=tenant.cad.headers).status_code == 200
    assert api.get(metrics, headers=tenant.it.headers).status_code == 200
    assert api.get(metrics, headers=tenant.cad2.headers).status_code == 404  # not the creator
    assert api.get(metrics, headers=other_tenant.it.headers).status_code == 404

    analytics = f"/tenants/{tenant.id}/analytics"
    refused = api.get(analytics, headers=tenant.cad.headers)
    assert refused.status_code == 403 and "it_manager or admin" in refused.json()["detail"]
    assert api.get(analytics, headers=tenant.it.headers).status_code == 200
    assert api.get(analytics, headers=admin.headers).status_code == 200
    assert api.get(analytics, headers=other_tenant.it.headers).status_code == 404

    grant = f"/tenants/{tenant.id}/credits"
    assert api.post(grant, json={"amount": 5}, headers=tenant.it.headers).status_code == 403
    assert api.post(grant, json={"amount": 5}, headers=other_tenant.it.headers).status_code == 404
    assert get_ok(api, grant, tenant.it)["balance"] == float(OPENING_CREDITS)


@pytest.mark.parametrize(
    "params, complaint",
    [
        ({"start": "2026-11-02T10:00:00Z", "end": "2026-11-02T09:00:00Z"}, "must be before end"),
        ({"start": "2026-11-02T10:00:00Z", "end": "2026-11-02T10:00:00Z"}, "must be before end"),
        ({"start": "yesterday"}, "start"),
        ({"interval": "week"}, "interval"),
        ({"interval": "minute", "start": "2026-10-01T00:00:00Z", "end": "2026-11-01T00:00:00Z"}, "coarser interval"),
        ({"start": "1900-01-01T00:00:00Z"}, "between 2000-01-01"),
        ({"end": "9999-12-31T23:59:59Z"}, "between 2000-01-01"),
        ({"end": "9999-12-31T23:59:59-23:00"}, "between 2000-01-01"),
        ({"start": "0001-01-01T00:00:00+05:00"}, "between 2000-01-01"),
        ({"end": "0001-01-01T00:00:00"}, "between 2000-01-01"),
    ],
)
def test_a_bad_time_range_is_refused_with_what_to_change(api, tenant, params, complaint):
    cluster = create_cluster(api, tenant)
    response = api.get(f"/clusters/{cluster['id']}/metrics", params=params, headers=tenant.cad.headers)
    assert response.status_code == 422, response.text
    assert complaint in response.text


def test_a_bad_analytics_range_or_grant_is_refused(api, stack, tenant):
    admin = make_admin(stack.db.sessions)
    response = api.get(
        f"/tenants/{tenant.id}/analytics",
        params={"start": "2026-11-02T00:00:00Z", "end": "2026-11-01T00:00:00Z"},
        headers=tenant.it.headers,
    )
    assert response.status_code == 422 and "must be before end" in response.text
    for amount in (0, -1, "lots", 1e12, 0.0000001):
        refused = api.post(f"/tenants/{tenant.id}/credits", json={"amount": amount}, headers=admin.headers)
        assert refused.status_code == 422, (amount, refused.text)
    assert get_ok(api, f"/tenants/{tenant.id}/credits", tenant.it)["balance"] == float(OPENING_CREDITS)


def test_metrics_default_to_the_last_day_by_the_hour(api, tenant):
    cluster = create_cluster(api, tenant)
    body = get_ok(api, f"/clusters/{cluster['id']}/metrics", tenant.cad)
    start = datetime.fromisoformat(body["timeRange"]["start"])
    end = datetime.fromisoformat(body["timeRange"]["end"])
    assert body["timeRange"]["interval"] == "hour" and end - start == timedelta(hours=24)
    assert abs(end - datetime.now(UTC)) < timedelta(minutes=1)
