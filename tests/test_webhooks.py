"""Outbound webhooks, against the real stack (API, worker, Temporal; SQLite and PostgreSQL) and a real
HTTP receiver in this process: every event arrives signed with the secret of the create answer, a
receiver that fails gets the same event again, one that never answers delays nothing, a delivery given up
is recorded, and the secret is nowhere but in that answer (not in the database in clear, not in any
workflow history, not in the logs). Validation and who may do what too, and where webhooks may go: an
internal address is refused at registration, and at delivery nothing connects to one; a failure is recorded
in general words (the address rule itself is tested in tests/test_addresses.py).
"""

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.webhooks import WebhookActivities
from api.main import create_app
from core import webhooks
from core.credentials import CredentialBox
from core.db import transaction
from core.messages import RequestInput, request_workflow_id
from core.models import Base, Tenant, Webhook, WebhookDelivery, WebhookEvent
from core.settings import Settings
from core.webhooks import DeliveryOutcome, DeliveryRef
from harness.servers import free_port, wait_until
from harness.world import file_request, insert_cluster, insert_request, make_admin, make_tenant
from services import credits, outbox
from tests.test_access import approve, assert_problem, cluster_of, create_cluster, wait_available
from tests.utils.record_histories import leaks
from workflows.request import RequestWorkflow

ALL_EVENTS = list(webhooks.EVENT_TYPES)


# --- a receiver ------------------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered

    @property
    def event(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP server on a free port that keeps every POST it gets; `answer` says what to answer (given
    the request and how many came before it) and may block to play a receiver that does not answer."""

    answer: Callable[[Received, int], int] = lambda request, earlier: 200
    received: list[Received] = field(default_factory=list)
    answer_headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = Received({k.lower(): v for k, v in self.headers.items()}, body, 0)
                with receiver.lock:
                    earlier = len(receiver.received)
                    receiver.received.append(request)
                request.status = receiver.answer(request, earlier)
                try:
                    self.send_response(request.status)
                    for name, value in receiver.answer_headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender gave up waiting

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/hpcinfra"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def of_type(self, event_type: str, accepted: bool = True) -> list[Received]:
        with self.lock:
            return [
                r for r in self.received if r.event["type"] == event_type and (not accepted or 200 <= r.status < 300)
            ]

    def wait_for(
        self, event_type: str, check: Callable[[dict], bool] = lambda e: True, timeout: float = 60
    ) -> Received:
        return wait_until(
            lambda: next((r for r in self.of_type(event_type) if check(r.event)), None),
            timeout=timeout,
            what=f"the receiver to accept a {event_type} event",
        )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def register(api: httpx.Client, tenant, url: str, events: list[str], who=None) -> dict:
    response = api.post(
        f"/tenants/{tenant.id}/webhooks", json={"url": url, "events": events}, headers=(who or tenant.it).headers
    )
    assert response.status_code == 201, response.text
    return response.json()


def assert_signed(received: Received, secret: str) -> None:
    """The delivery is signed as documented: HMAC-SHA256 of "<timestamp>.<body>" with the secret."""
    h = received.headers
    assert webhooks.verify(secret, h["x-hpcinfra-timestamp"], received.body, h["x-hpcinfra-signature"], time.time())
    assert not webhooks.verify(
        "not-the-secret", h["x-hpcinfra-timestamp"], received.body, h["x-hpcinfra-signature"], time.time()
    )
    event = received.event
    assert h["x-hpcinfra-event-id"] == event["id"] and h["x-hpcinfra-event-type"] == event["type"]
    assert h["content-type"] == "application/json"


def deliveries(api: httpx.Client, tenant, webhook_id: str) -> list[dict]:
    response = api.get(f"/tenants/{tenant.id}/webhooks/{webhook_id}/deliveries", headers=tenant.it.headers)
    assert response.status_code == 200, response.text
    return response.json()


def database_text(stack) -> str:
    """Every row of every table of the application database, as text."""
    with stack.db.sessions() as session:
        return "\n".join(repr(session.execute(select(table)).all()) for table in Base.metadata.sorted_tables)


async def _histories(stack, workflow_ids: list[str]) -> list[dict]:
    client = await Client.connect(stack.temporal_address)
    return [json.loads((await client.get_workflow_handle(i).fetch_history()).to_json()) for i in workflow_ids]


# --- the events ------------------------------------------------------------------------------------


def test_every_event_arrives_signed_and_the_secret_stays_secret(api, stack, tenant, receiver):
    hook = register(api, tenant, receiver.url, ALL_EVENTS)
    secret = hook["secret"]
    assert hook["events"] == ALL_EVENTS and hook["url"] == receiver.url and len(secret) >= 32
    listed = api.get(f"/tenants/{tenant.id}/webhooks", headers=tenant.it.headers).json()
    assert [w["id"] for w in listed] == [hook["id"]] and "secret" not in listed[0] and secret not in json.dumps(listed)

    # Filed, rejected.
    rejected = file_request(api, tenant.cad, tenant.provider_id, tools=[])
    response = api.patch(
        f"/requests/{rejected['id']}",
        json={"status": "rejected", "rejectionReason": "not now"},
        headers=tenant.it.headers,
    )
    assert response.status_code == 200, response.text
    # Filed, approved, available with its tool, another tool, deleted.
    request = file_request(api, tenant.cad, tenant.provider_id)
    approve(api, tenant.it, request["id"])
    cluster_id = cluster_of(api, tenant.it, request["id"])
    wait_available(api, tenant.cad, cluster_id)
    added = api.post(
        f"/clusters/{cluster_id}/tools", json={"name": "yosys", "version": "0.40"}, headers=tenant.cad.headers
    )
    assert added.status_code == 202, added.text
    receiver.wait_for("install.finished", lambda e: e["data"]["name"] == "yosys")
    assert api.delete(f"/clusters/{cluster_id}", headers=tenant.cad.headers).status_code == 202

    filed = receiver.wait_for("request.filed", lambda e: e["data"]["requestId"] == request["id"])
    assert filed.event["data"]["requestedBy"] == tenant.cad.id and filed.event["data"]["name"] == request["name"]
    no = receiver.wait_for("request.decided", lambda e: e["data"]["requestId"] == rejected["id"])
    assert no.event["data"]["decision"] == "rejected" and no.event["data"]["rejectionReason"] == "not now"
    yes = receiver.wait_for("request.decided", lambda e: e["data"]["requestId"] == request["id"])
    assert yes.event["data"]["decision"] == "approved" and yes.event["data"]["clusterId"] == cluster_id
    assert yes.event["data"]["decidedBy"] == tenant.it.id
    available = receiver.wait_for("cluster.available", lambda e: e["data"]["clusterId"] == cluster_id)
    installs = {e.event["data"]["name"]: e.event["data"] for e in receiver.of_type("install.finished")}
    assert installs["iverilog"]["result"] == installs["yosys"]["result"] == "ok", installs
    assert installs["iverilog"]["kind"] == "tool" and installs["iverilog"]["clusterId"] == cluster_id
    deleted = receiver.wait_for("cluster.deleted", lambda e: e["data"]["clusterId"] == cluster_id)
    # 2 filed, 2 decided, available, 2 installs, deleted.
    wait_until(lambda: len(receiver.received) >= 8, what="every event to arrive")
    time.sleep(1)  # and nothing more

    everything = list(receiver.received)
    for received in everything:
        assert_signed(received, secret)
        event = received.event
        assert set(event) == {"id", "type", "occurredAt", "tenantId", "data"} and event["tenantId"] == tenant.id
        assert event["occurredAt"].endswith("Z")
    # Each act is told once, and each event has an id of its own.
    assert len({r.event["id"] for r in everything}) == len(everything) == 8, [r.event["type"] for r in everything]
    assert available.event["data"]["status"] == "available" and deleted.event["data"]["status"] == "deleted"

    listed = wait_until(
        lambda: (d := deliveries(api, tenant, hook["id"])) and all(x["status"] == "delivered" for x in d) and d,
        what="every delivery to be recorded as delivered",
    )
    assert len(listed) == 8
    assert {(d["attempts"], d["lastStatusCode"]) for d in listed} == {(1, 200)}
    assert {d["eventId"] for d in listed} == {r.event["id"] for r in everything}

    # The secret is in the create answer only: not in the database in clear (the URL is, so the scan
    # reads the webhooks), not in the delivery workflows' histories (their payloads decoded: the ids are
    # there), not in the logs of the API and the worker.
    stored = database_text(stack)
    assert receiver.url in stored and secret not in stored
    ids = [webhooks.delivery_workflow_id(d["id"]) for d in listed]
    for history, delivery in zip(asyncio.run(_histories(stack, ids)), listed, strict=True):
        assert leaks(history, [delivery["id"]]), "the history's payloads were not decoded"
        assert not leaks(history, [secret])
    assert secret not in stack.api.output() and secret not in stack.worker.output()


def test_failures_and_expiry_are_events_too(api, stack, receiver):
    """cluster.failed for a provisioning that failed, install.finished `failed` for a tool whose install
    failed, request.decided `expired` for a request nobody decided (its workflow started here with an
    expiry of a second, on the stack's worker)."""
    tenant = make_tenant(
        stack.db.sessions,
        extra_providers={
            "broken": {"kind": "sim", "config": {"failAt": "storage"}},
            "no-tools": {"kind": "sim", "config": {"failTools": ["iverilog"]}},
        },
    )
    hook = register(api, tenant, receiver.url, ALL_EVENTS)
    broken = create_cluster(api, tenant.cad, tenant.providers["broken"])["id"]
    toolless = create_cluster(api, tenant.cad, tenant.providers["no-tools"])["id"]
    request_id = str(insert_request(stack.db.sessions, tenant, "undecided"))

    async def start_expiring() -> None:
        client = await Client.connect(stack.temporal_address)
        await client.start_workflow(
            RequestWorkflow.run,
            RequestInput(request_id, 1),
            id=request_workflow_id(request_id),
            task_queue=stack.task_queue,
        )

    asyncio.run(start_expiring())
    failed = receiver.wait_for("cluster.failed", lambda e: e["data"]["clusterId"] == broken)
    assert failed.event["data"]["status"] == "error" and "storage" in failed.event["data"]["reason"]
    install = receiver.wait_for("install.finished", lambda e: e["data"]["clusterId"] == toolless)
    assert install.event["data"]["result"] == "failed" and install.event["data"]["name"] == "iverilog"
    assert install.event["data"]["reason"]
    expired = receiver.wait_for("request.decided", lambda e: e["data"]["requestId"] == request_id)
    assert expired.event["data"]["decision"] == "expired" and expired.event["data"]["decidedBy"] is None
    assert expired.event["data"]["rejectionReason"].startswith("expired")
    for received in receiver.received:
        assert_signed(received, hook["secret"])
    for cluster_id in (broken, toolless):
        api.delete(f"/clusters/{cluster_id}", headers=tenant.cad.headers)


def test_a_receiver_that_fails_gets_the_same_event_again(api, tenant):
    failing_first = Receiver(answer=lambda request, earlier: 500 if earlier == 0 else 200)
    try:
        hook = register(api, tenant, failing_first.url, ["request.filed"])
        file_request(api, tenant.cad, tenant.provider_id)
        wait_until(lambda: len(failing_first.received) >= 2, what="the delivery to be retried")
        first, second = failing_first.received[:2]
        assert (first.status, second.status) == (500, 200)
        assert first.body == second.body and first.event["type"] == "request.filed"
        assert first.headers["x-hpcinfra-event-id"] == second.headers["x-hpcinfra-event-id"] == first.event["id"]
        assert_signed(first, hook["secret"])
        assert_signed(second, hook["secret"])
        [delivery] = wait_until(
            lambda: [d for d in deliveries(api, tenant, hook["id"]) if d["status"] == "delivered"],
            what="the delivery to be recorded as delivered",
        )
        assert delivery["attempts"] == 2 and delivery["lastStatusCode"] == 200 and delivery["lastError"] is None
        time.sleep(1)
        assert len(failing_first.received) == 2, "an accepted delivery is not sent again"
    finally:
        failing_first.stop()


def test_a_receiver_that_never_answers_delays_nothing(api, stack, tenant):
    """Each event is posted by its own workflow: while the receiver holds the cluster.available delivery
    unanswered, the cluster goes on and installs its tool (the worker waits up to 10 s for an answer; the
    install takes about a second)."""
    release = threading.Event()
    held_at: dict[str, float] = {}

    def hold(request: Received, earlier: int) -> int:
        held_at.setdefault(request.event["type"], time.monotonic())
        release.wait(60)
        return 200

    silent = Receiver(answer=hold)
    try:
        hook = register(api, tenant, silent.url, ALL_EVENTS)
        cluster_id = create_cluster(api, tenant.cad, tenant.provider_id)["id"]
        wait_until(lambda: "cluster.available" in held_at, what="the receiver to hold the cluster.available delivery")
        cluster = wait_available(api, tenant.cad, cluster_id)
        waited = time.monotonic() - held_at["cluster.available"]
        assert [t["status"] for t in cluster["tools"]] == ["installed"]
        assert not release.is_set()
        assert waited < Settings().webhook_timeout_seconds, (
            f"the tool was installed {waited:.1f}s after the receiver got cluster.available: "
            "the cluster waited for the receiver"
        )
        release.set()
        wait_until(
            lambda: {d["status"] for d in deliveries(api, tenant, hook["id"])} == {"delivered"},
            what="the held deliveries to be delivered once the receiver answers",
        )
        api.delete(f"/clusters/{cluster_id}", headers=tenant.cad.headers)
    finally:
        release.set()
        silent.stop()


def test_a_delivery_is_given_up_and_recorded(api, tenant):
    broken = Receiver(answer=lambda request, earlier: 503)
    try:
        hook = register(api, tenant, broken.url, ["request.filed"])
        file_request(api, tenant.cad, tenant.provider_id)
        # The stack gives up after 20 seconds (tests/conftest.py).
        [delivery] = wait_until(
            lambda: [d for d in deliveries(api, tenant, hook["id"]) if d["status"] == "failed"],
            timeout=90,
            what="the delivery to be given up",
        )
        assert delivery["attempts"] >= 3 and delivery["lastStatusCode"] == 503
        assert "503" in delivery["lastError"] and delivery["finishedAt"]
        assert len({r.headers["x-hpcinfra-event-id"] for r in broken.received}) == 1
    finally:
        broken.stop()


def test_deliveries_never_started_are_started_by_the_resume(api, stack, tenant, receiver):
    """An event written while its delivery could not be started (Temporal down, the process gone) is sent
    when a worker or the API starts again (services/resume.py)."""
    from services.resume import resume_workflows

    hook = register(api, tenant, receiver.url, ["cluster.failed"])
    with transaction(stack.db.sessions) as session:
        [delivery_id] = outbox.Outbox(None, min_runway_hours=24).emit(
            session, uuid.UUID(tenant.id), "cluster.failed", {"clusterId": "c", "reason": "r"}
        )
    time.sleep(1)
    assert receiver.received == []
    settings = Settings(
        database_url=stack.db.url,
        temporal_address=stack.temporal_address,
        task_queue=stack.task_queue,
        webhook_retry_initial_seconds=0.2,
    )

    async def resume() -> dict[str, int]:
        client = await Client.connect(stack.temporal_address)
        return await resume_workflows(client, stack.db.sessions, settings)

    assert asyncio.run(resume())["webhook deliveries"] >= 1
    got = receiver.wait_for("cluster.failed")
    assert_signed(got, hook["secret"])
    assert got.event["data"] == {"clusterId": "c", "reason": "r"}
    wait_until(lambda: deliveries(api, tenant, hook["id"])[0]["status"] == "delivered", what="delivered")
    assert delivery_id not in outbox.undelivered(stack.db.sessions)
    asyncio.run(resume())  # again: a delivered event is not sent again
    time.sleep(1)
    assert receiver.received == [got]


# --- balance.low -----------------------------------------------------------------------------------


def test_balance_low_is_told_once_per_crossing(db):
    """The crossing logic on its own, against the database: told when the runway falls below the
    threshold, not again while it stays there, and again after it has been back above."""
    tenant = make_tenant(db.sessions)
    cluster = insert_cluster(db.sessions, tenant, "metered", status="available")
    with transaction(db.sessions) as session:
        outbox.create_webhook(session, _box(), uuid.UUID(tenant.id), "http://127.0.0.1:9/x", ["balance.low"], None)
    checker = outbox.Outbox(None, min_runway_hours=24)

    def check(balance_credits: float) -> int:
        with transaction(db.sessions) as session:
            session.execute(
                update(Tenant)
                .where(Tenant.id == uuid.UUID(tenant.id))
                .values(credit_balance=credits.as_units(balance_credits))
            )
            checker.check_balance(session, uuid.UUID(tenant.id))
        with db.sessions() as session:
            return len(
                session.scalars(
                    select(WebhookEvent).where(
                        WebhookEvent.tenant_id == uuid.UUID(tenant.id), WebhookEvent.type == "balance.low"
                    )
                ).all()
            )

    try:
        # One small node and 10 GB: about 1 credit an hour, so 24 hours are about 24 credits.
        assert check(1000) == 0
        assert check(10) == 1
        assert check(9) == 1  # still low: not told again
        assert check(5) == 1
        assert check(1000) == 1  # back above
        assert check(0) == 2  # below again (nothing left at all)
        with db.sessions() as session:
            event = session.scalars(
                select(WebhookEvent)
                .where(WebhookEvent.tenant_id == uuid.UUID(tenant.id))
                .order_by(WebhookEvent.occurred_at)
            ).first()
            assert event.data["balance"] == 10 and event.data["thresholdHours"] == 24
            assert 0 < event.data["runwayHours"] < 24 and event.data["ratePerHour"] > 0
    finally:
        with transaction(db.sessions) as session:
            session.get_one(type(cluster), cluster.id).status = "deleted"


def test_balance_low_arrives_from_metering(api, stack, receiver):
    tenant = make_tenant(stack.db.sessions)
    hook = register(api, tenant, receiver.url, ["balance.low"])
    cluster_id = create_cluster(api, tenant.cad, tenant.provider_id)["id"]
    # Spent elsewhere, all but 1 credit: at about 2 credits an hour, half an hour of runway (under 24).
    with transaction(stack.db.sessions) as session:
        session.execute(
            update(Tenant).where(Tenant.id == uuid.UUID(tenant.id)).values(credit_balance=credits.as_units(1))
        )
    try:
        # The next collection (at once when metering starts, else at the next minute) tells it.
        low = receiver.wait_for("balance.low", timeout=90)
        assert_signed(low, hook["secret"])
        data = low.event["data"]
        assert data["balance"] <= 1 and data["thresholdHours"] == 24 and data["runwayHours"] < 24
    finally:
        api.delete(f"/clusters/{cluster_id}", headers=tenant.cad.headers)


def _box() -> CredentialBox:
    from core.credentials import new_key

    return CredentialBox([new_key()])


# --- the API ---------------------------------------------------------------------------------------

BAD = [
    ({"url": "ftp://hooks.example.com/x", "events": ["request.filed"]}, "http:// or https://"),
    ({"url": "hooks.example.com/x", "events": ["request.filed"]}, "http:// or https://"),
    ({"url": "https://", "events": ["request.filed"]}, "host"),
    ({"url": "https://user:pw@hooks.example.com/x", "events": ["request.filed"]}, "password"),
    ({"url": "https://hooks.example.com:99999/x", "events": ["request.filed"]}, "port"),
    ({"url": "https://hooks.example.com/a b", "events": ["request.filed"]}, "spaces"),
    ({"url": "https://hooks.example.com/x", "events": []}, "events"),
    ({"url": "https://hooks.example.com/x", "events": ["cluster.exploded"]}, "cluster.available"),
    ({"url": "https://hooks.example.com/x"}, "events"),
    ({"events": ["request.filed"]}, "url"),
    # Outside the stack's allowed networks (only 127.0.0.0/8, tests/conftest.py).
    ({"url": "http://169.254.169.254/latest/meta-data/", "events": ["request.filed"]}, "link-local"),
    ({"url": "http://[::1]:5432/", "events": ["request.filed"]}, "loopback"),
    ({"url": "http://10.0.0.1/hooks", "events": ["request.filed"]}, "HPCINFRA_WEBHOOK_ALLOWED_NETWORKS"),
]


@pytest.mark.parametrize(("body", "mentions"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_webhooks_are_refused_and_change_nothing(api, tenant, body, mentions):
    response = api.post(f"/tenants/{tenant.id}/webhooks", json=body, headers=tenant.it.headers)
    problem = assert_problem(response, 422, f"POST webhooks {body}")
    assert mentions in problem["detail"], problem
    assert api.get(f"/tenants/{tenant.id}/webhooks", headers=tenant.it.headers).json() == []


def test_who_may_manage_webhooks(api, stack, tenant, other_tenant):
    url = "https://hooks.invalid/hpcinfra"
    path = f"/tenants/{tenant.id}/webhooks"
    body = {"url": url, "events": ["cluster.failed"]}
    for cad in (tenant.cad, tenant.cad2):
        assert_problem(api.post(path, json=body, headers=cad.headers), 403, "a CAD manager registers")
        assert_problem(api.get(path, headers=cad.headers), 403, "a CAD manager lists")
    hook = register(api, tenant, url, ["cluster.failed", "cluster.failed"])
    assert hook["events"] == ["cluster.failed"]
    one = f"{path}/{hook['id']}"
    for who in (other_tenant.it, other_tenant.cad):
        assert_problem(api.post(path, json=body, headers=who.headers), 404, "another tenant registers")
        assert_problem(api.get(path, headers=who.headers), 404, "another tenant lists")
        assert_problem(api.delete(one, headers=who.headers), 404, "another tenant deletes")
        assert_problem(api.get(f"{one}/deliveries", headers=who.headers), 404, "another tenant reads deliveries")
    # A webhook of another tenant, named under one's own tenant: not found either.
    assert_problem(
        api.delete(f"/tenants/{other_tenant.id}/webhooks/{hook['id']}", headers=other_tenant.it.headers), 404, "x"
    )
    admin = make_admin(stack.db.sessions)
    by_admin = register(api, tenant, url, ["balance.low"], who=admin)
    assert {w["id"] for w in api.get(path, headers=tenant.it.headers).json()} == {hook["id"], by_admin["id"]}

    assert api.delete(one, headers=tenant.it.headers).status_code == 204
    assert_problem(api.delete(one, headers=tenant.it.headers), 404, "deleted twice")
    assert_problem(api.get(f"{one}/deliveries", headers=tenant.it.headers), 404, "deliveries of a deleted webhook")
    assert [w["id"] for w in api.get(path, headers=tenant.it.headers).json()] == [by_admin["id"]]
    assert api.delete(f"{path}/{by_admin['id']}", headers=admin.headers).status_code == 204

    audit = api.get("/audit", headers=tenant.it.headers, params={"limit": 500}).json()
    acts = [(e["action"], e["target"], e["actorId"]) for e in audit if e["action"].startswith("webhook.")]
    assert sorted(acts) == sorted(
        [
            ("webhook.create", f"webhook {hook['id']}", tenant.it.id),
            ("webhook.create", f"webhook {by_admin['id']}", admin.id),
            ("webhook.delete", f"webhook {hook['id']}", tenant.it.id),
            ("webhook.delete", f"webhook {by_admin['id']}", admin.id),
        ]
    )
    assert hook["secret"] not in json.dumps(audit)


def test_a_create_sent_again_with_its_idempotency_key_keeps_the_secret_encrypted(api, stack, tenant):
    path = f"/tenants/{tenant.id}/webhooks"
    body = {"url": "https://hooks.invalid/again", "events": ["request.filed"]}
    headers = {**tenant.it.headers, "Idempotency-Key": f"k-{uuid.uuid4()}"}
    first = api.post(path, json=body, headers=headers)
    again = api.post(path, json=body, headers=headers)
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.headers["idempotent-replayed"] == "true" and again.json() == first.json()
    assert first.headers["cache-control"] == again.headers["cache-control"] == "no-store"
    assert len(api.get(path, headers=tenant.it.headers).json()) == 1
    stored = database_text(stack)
    assert body["url"] in stored and first.json()["secret"] not in stored


def test_a_deleted_webhook_gets_nothing_more(api, tenant, receiver):
    hook = register(api, tenant, receiver.url, ["request.filed"])
    file_request(api, tenant.cad, tenant.provider_id)
    receiver.wait_for("request.filed")
    assert api.delete(f"/tenants/{tenant.id}/webhooks/{hook['id']}", headers=tenant.it.headers).status_code == 204
    file_request(api, tenant.cad, tenant.provider_id)
    time.sleep(2)
    assert len(receiver.received) == 1


def test_the_signature_scheme_as_documented():
    """What the README tells a receiver to compute, by hand: HMAC-SHA256 over "<timestamp>.<body>"."""
    import hashlib
    import hmac

    secret, timestamp, body = "s3cr3t-for-tests", 1_700_000_000, b'{"id":"e"}'
    expected = hmac.new(secret.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert webhooks.signature(secret, timestamp, body) == f"v1={expected}"
    assert webhooks.verify(secret, str(timestamp), body, f"v1={expected}", now=timestamp + 10)
    assert not webhooks.verify(secret, str(timestamp), body, f"v1={expected}", now=timestamp + 3600)  # too old
    assert not webhooks.verify(secret, str(timestamp), body + b" ", f"v1={expected}", now=timestamp)
    assert timedelta(seconds=webhooks.TOLERANCE_SECONDS) == timedelta(minutes=5)


def test_rotating_the_credential_keys_reencrypts_webhook_secrets(fresh_db):
    """`hpcinfra credentials rotate` re-encrypts webhook secrets too, so the old key can be dropped."""
    from core.credentials import CredentialBox, new_key
    from core.models import Webhook
    from tests.test_credentials import rotate

    old, new = new_key(), new_key()
    tenant = make_tenant(fresh_db.sessions)
    with transaction(fresh_db.sessions) as session:
        webhook, secret = outbox.create_webhook(
            session, CredentialBox([old]), uuid.UUID(tenant.id), "https://hooks.example.com/x", ["balance.low"], None
        )
    result = rotate(fresh_db, [new, old])
    assert result.returncode == 0, result.stderr
    assert "1 webhook secret(s)" in result.stdout
    with fresh_db.sessions() as session:
        stored = session.get_one(Webhook, webhook.id).secret_encrypted
    assert outbox.open_secret(CredentialBox([new]), stored) == secret


# --- where webhooks may go -------------------------------------------------------------------------
# The stack allows 127.0.0.0/8 (its receivers listen there); these tests run the API and the delivery
# activity in this process with settings that allow no internal network at all.

INTERNAL = [
    ("http://127.0.0.1:7233/", "loopback"),
    ("http://[::1]:5432/", "loopback"),
    ("http://localhost/hooks", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://2130706433/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://10.0.0.1/", "private"),
    ("http://[fd00::1]/", "private"),
    ("http://0.0.0.0:8000/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://0177.0.0.1/", "url"),  # httpx refuses to parse it: not a valid URL
]


@pytest.fixture(scope="module")
def strict_api(db, tmp_path_factory) -> Iterator[TestClient]:
    """The API in this process, allowing webhooks to public addresses only."""
    settings = Settings(
        database_url=db.url,
        data_dir=tmp_path_factory.mktemp("strict-api"),
        temporal_address="127.0.0.1:1",
        rate_limit_per_minute=0,
        webhook_allowed_networks=[],
    )
    with TestClient(create_app(settings), base_url="http://testserver/api/v1") as client:
        yield client


@pytest.mark.parametrize(("url", "mentions"), INTERNAL, ids=[u for u, _ in INTERNAL])
def test_registering_an_internal_receiver_is_refused_and_stores_nothing(strict_api, db, url, mentions):
    tenant = make_tenant(db.sessions)
    path = f"/tenants/{tenant.id}/webhooks"
    response = strict_api.post(path, json={"url": url, "events": ["request.filed"]}, headers=tenant.it.headers)
    problem = assert_problem(response, 422, f"POST webhooks {url}")
    assert problem["detail"].startswith("url: ") and mentions in problem["detail"], problem
    if mentions != "url":
        assert "HPCINFRA_WEBHOOK_ALLOWED_NETWORKS" in problem["detail"], problem
    assert strict_api.get(path, headers=tenant.it.headers).json() == []
    with db.sessions() as session:
        assert session.scalars(select(Webhook).where(Webhook.tenant_id == uuid.UUID(tenant.id))).all() == []


@dataclass
class Delivery:
    id: str
    box: CredentialBox
    database: object

    def run(self, allowed: list[str], timeout: float = 5) -> DeliveryOutcome | ApplicationError:
        """One attempt by the delivery activity, with these allowed networks."""
        activities = WebhookActivities(self.database.sessions, self.box, timeout, allowed)
        try:
            return asyncio.run(ActivityEnvironment().run(activities.deliver, DeliveryRef(self.id)))
        except ApplicationError as e:
            return e

    def row(self) -> WebhookDelivery:
        with self.database.sessions() as session:
            return session.get_one(WebhookDelivery, uuid.UUID(self.id))


def delivery_to(database, url: str) -> Delivery:
    """A pending delivery to `url`, written as the outbox writes it (the webhook stored as it is, as one
    registered before its address was refused, or whose name resolved elsewhere then)."""
    box = _box()
    tenant = make_tenant(database.sessions)
    with transaction(database.sessions) as session:
        outbox.create_webhook(session, box, uuid.UUID(tenant.id), url, ["cluster.failed"], None)
        [delivery_id] = outbox.Outbox(None, min_runway_hours=24).emit(
            session, uuid.UUID(tenant.id), "cluster.failed", {"clusterId": "c", "reason": "r"}
        )
    return Delivery(str(delivery_id), box, database)


@contextmanager
def listener() -> Iterator[socket.socket]:
    """A TCP socket listening on 127.0.0.1 that never accepts: the kernel completes any connection made
    to it, and `connections` counts them."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        yield server


def connections(server: socket.socket) -> int:
    count = 0
    while True:
        try:
            connection, _ = server.accept()
        except BlockingIOError:
            return count
        connection.close()
        count += 1


def test_a_delivery_to_a_refused_address_connects_nowhere(fresh_db):
    with listener() as server:
        port = server.getsockname()[1]
        for url in (f"http://127.0.0.1:{port}/hook", f"http://localhost:{port}/hook", f"http://0x7f000001:{port}/"):
            delivery = delivery_to(fresh_db, url)
            failed = delivery.run(allowed=[])
            assert isinstance(failed, ApplicationError) and failed.type == "WebhookNotAccepted", failed
            row = delivery.row()
            assert row.last_error == "the receiver's address is not allowed" == failed.message
            assert row.attempts == 1 and row.last_status_code is None and row.status == "pending"
        assert connections(server) == 0
        # The same receiver, once its network is allowed, is connected to.
        delivery_to(fresh_db, f"http://127.0.0.1:{port}/hook").run(allowed=["127.0.0.0/8"], timeout=0.5)
        assert connections(server) == 1


def test_a_failed_delivery_is_recorded_in_general_words(fresh_db):
    """What a delivery records of a failure says what happened, not the connection's error text."""
    closed = delivery_to(fresh_db, f"http://127.0.0.1:{free_port()}/hook")
    failed = closed.run(allowed=["127.0.0.0/8"])
    assert isinstance(failed, ApplicationError)
    assert closed.row().last_error == "could not connect to the receiver" == failed.message
    with listener() as server:
        silent = delivery_to(fresh_db, f"http://127.0.0.1:{server.getsockname()[1]}/hook")
        failed = silent.run(allowed=["127.0.0.0/8"], timeout=0.5)
        assert isinstance(failed, ApplicationError)
        assert silent.row().last_error == "the receiver did not answer in time" == failed.message
    unresolved = delivery_to(fresh_db, "http://hooks.invalid/hook")
    unresolved.run(allowed=["127.0.0.0/8"])
    assert unresolved.row().last_error == "the receiver's host name could not be resolved"


def test_a_redirect_is_not_followed(fresh_db):
    with listener() as elsewhere:
        redirecting = Receiver(
            answer=lambda request, earlier: 307,
            answer_headers={"Location": f"http://127.0.0.1:{elsewhere.getsockname()[1]}/internal"},
        )
        try:
            delivery = delivery_to(fresh_db, redirecting.url)
            failed = delivery.run(allowed=["127.0.0.0/8"])
            assert isinstance(failed, ApplicationError) and len(redirecting.received) == 1
            row = delivery.row()
            assert row.last_status_code == 307 and row.last_error == "the receiver answered 307 Temporary Redirect"
            assert connections(elsewhere) == 0
        finally:
            redirecting.stop()
