"""`Idempotency-Key` on POST, against the real API: the same call twice is done once."""

import asyncio
import hashlib
import json
import sqlite3
import uuid
from contextlib import contextmanager
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api import idempotency
from api.deps import get_temporal
from api.main import create_app
from core.credentials import SEALED_ANSWER, CredentialBox, new_key
from core.db import make_engine, make_session_factory, transaction
from core.models import Cluster, ClusterRequest, ClusterService, CreditEntry, IdempotencyKey, utcnow
from core.settings import Settings
from harness.world import insert_cluster, insert_request, make_admin, make_tenant, request_body
from services import credits
from services.credits import keep_standing_rates
from services.migrations import upgrade


def post(api, path: str, who, body: dict, key: str | None):
    headers = {**who.headers, "Content-Type": "application/json", **({"Idempotency-Key": key} if key else {})}
    return api.post(path, content=json.dumps(body), headers=headers)


def requests_of(stack, tenant) -> int:
    with stack.db.sessions() as session:
        return session.scalar(select(func.count()).where(ClusterRequest.tenant_id == uuid.UUID(tenant.id)))


def test_the_same_post_with_the_same_key_is_done_once_and_answered_the_same(api, stack, tenant):
    body = request_body(tenant.provider_id)
    first = post(api, "/requests", tenant.cad, body, "file-rtl-1")
    again = post(api, "/requests", tenant.cad, body, "file-rtl-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert requests_of(stack, tenant) == 1

    # Without a key, or with another one, it is another request.
    assert post(api, "/requests", tenant.cad, body, None).status_code == 201
    assert post(api, "/requests", tenant.cad, body, "file-rtl-2").json()["id"] != first.json()["id"]
    assert requests_of(stack, tenant) == 3


def test_a_key_used_for_another_request_is_refused_and_changes_nothing(api, stack, tenant):
    post(api, "/requests", tenant.cad, request_body(tenant.provider_id), "k-1")
    other = post(api, "/requests", tenant.cad, request_body(tenant.provider_id, name="another"), "k-1")
    assert other.status_code == 422 and "used for another request" in other.json()["detail"]
    elsewhere = post(api, "/clusters", tenant.cad, request_body(tenant.provider_id), "k-1")
    assert elsewhere.status_code == 422
    assert requests_of(stack, tenant) == 1


def test_keys_belong_to_their_caller(api, stack, tenant, other_tenant):
    body = request_body(tenant.provider_id)
    mine = post(api, "/requests", tenant.cad, body, "shared-key")
    colleague = post(api, "/requests", tenant.cad2, body, "shared-key")
    assert colleague.status_code == 201 and colleague.json()["id"] != mine.json()["id"]
    stranger = post(api, "/requests", other_tenant.cad, request_body(other_tenant.provider_id), "shared-key")
    assert stranger.status_code == 201


def test_a_call_while_the_first_is_being_answered_is_409(api, stack, tenant):
    body = request_body(tenant.provider_id)
    raw = json.dumps(body).encode()
    fingerprint = hashlib.sha256(b"\n".join([b"POST", b"/api/v1/requests", b"", raw])).hexdigest()
    with transaction(stack.db.sessions) as session:  # the first call has the key and has not answered yet
        session.add(IdempotencyKey(user_id=uuid.UUID(tenant.cad.id), key="busy", fingerprint=fingerprint))
    response = post(api, "/requests", tenant.cad, body, "busy")
    assert response.status_code == 409 and "still being answered" in response.json()["detail"]
    assert requests_of(stack, tenant) == 0


def test_a_refusal_is_kept_like_any_answer_and_bad_keys_are_422(api, stack, tenant):
    body = request_body(tenant.provider_id)
    refused = post(api, "/requests", tenant.it, body, "by-it")  # only CAD managers file requests
    assert refused.status_code == 403
    assert post(api, "/requests", tenant.it, body, "by-it").json() == refused.json()
    for key in ("x" * 256, "tab\there"):
        assert post(api, "/requests", tenant.cad, request_body(tenant.provider_id), key).status_code == 422
    assert requests_of(stack, tenant) == 0


# --- a call that fails after its commit ----------------------------------------------------------------
# In-process, on SQLite and the session's Temporal dev server (with no worker: these calls only start
# workflows), with the failure put where it happens in production: after the request or cluster is committed.


class StartedFirst:
    """The API's Temporal client, except that each start meets a workflow already started a moment before
    (by the resume, or by an earlier try), as `WorkflowAlreadyStartedError`."""

    def __init__(self, client) -> None:
        self.client = client

    def __getattr__(self, name: str):
        return getattr(self.client, name)

    async def start_workflow(self, *args, **kwargs):
        await self.client.start_workflow(*args, **kwargs)
        raise WorkflowAlreadyStartedError(kwargs["id"], "started by the resume")


def failing_once(status: RPCStatusCode):
    """The API's Temporal client, except that the first start (of any call) fails with `status`."""

    class FailingOnce(StartedFirst):
        failed = False

        async def start_workflow(self, *args, **kwargs):
            if not FailingOnce.failed:
                FailingOnce.failed = True
                raise RPCError(status.name.lower(), status, b"")
            return await self.client.start_workflow(*args, **kwargs)

    return FailingOnce


def client_of(kind, temporal_address: str):
    """The API's Temporal client dependency, as `kind` (made in the app's loop, as the app makes its own)."""

    async def dependency():
        return kind(await Client.connect(temporal_address))

    return dependency


@contextmanager
def api_in_process(tmp_path, temporal_address: str, **settings):
    url = f"sqlite:///{tmp_path / 'hpcinfra.db'}"
    upgrade(url)
    sessions = make_session_factory(make_engine(url), hooks=[keep_standing_rates])
    tenant = make_tenant(sessions)
    app = create_app(
        Settings(
            database_url=url, data_dir=tmp_path, temporal_address=temporal_address, task_queue=f"tq-{uuid.uuid4()}"
        )
    )
    with TestClient(app, base_url="http://testserver/api/v1") as client:
        yield client, app, sessions, tenant


def count(sessions, model, tenant) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(model).where(model.tenant_id == uuid.UUID(tenant.id)))


async def workflow_running(temporal_address: str, workflow_id: str) -> bool:
    client = await Client.connect(temporal_address)
    description = await client.get_workflow_handle(workflow_id).describe()
    return description.status == WorkflowExecutionStatus.RUNNING


@pytest.mark.parametrize(
    ("path", "model", "prefix"), [("/requests", ClusterRequest, "request"), ("/clusters", Cluster, "cluster")]
)
def test_a_workflow_already_started_counts_as_started(tmp_path, temporal_address, path, model, prefix):
    """The resume (or an earlier try) may start a new row's workflow before the call that made the row
    does: that start failing with WorkflowAlreadyStartedError was a 500, which let the key go, and its
    retry made a second request or cluster."""
    with api_in_process(tmp_path, temporal_address) as (client, app, sessions, tenant):
        app.dependency_overrides[get_temporal] = client_of(StartedFirst, temporal_address)
        first = post(client, path, tenant.cad, request_body(tenant.provider_id), f"{prefix}-1")
        assert first.status_code == 201, first.text
        assert count(sessions, model, tenant) == 1
        assert asyncio.run(workflow_running(temporal_address, f"{prefix}-{first.json()['id']}"))


@pytest.mark.parametrize(
    ("path", "model", "prefix"), [("/requests", ClusterRequest, "request"), ("/clusters", Cluster, "cluster")]
)
def test_a_call_that_fails_after_its_commit_is_finished_by_its_retry_not_made_twice(
    tmp_path, temporal_address, monkeypatch, path, model, prefix
):
    """The request (or cluster) is committed, then the call fails: here reading the answer back meets a busy
    database (a 503). The key keeps what the call created; its retry starts the workflow if it has none and
    answers with the same object (the key was let go, and the retry made a second one)."""
    from api.routes import clusters, requests

    module, view = (requests, "_view") if prefix == "request" else (clusters, "Estimates")
    real, failures = getattr(module, view), []

    def busy_once(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise OperationalError("SELECT ...", {}, sqlite3.OperationalError("database is locked"))
        return real(*args, **kwargs)

    with api_in_process(tmp_path, temporal_address) as (client, app, sessions, tenant):
        monkeypatch.setattr(module, view, busy_once)
        body = request_body(tenant.provider_id)
        first = post(client, path, tenant.cad, body, f"{prefix}-key")
        assert first.status_code == 503, first.text
        assert count(sessions, model, tenant) == 1  # it was made

        again = post(client, path, tenant.cad, body, f"{prefix}-key")
        assert again.status_code == 201, again.text
        assert count(sessions, model, tenant) == 1  # and not made again
        made = again.json()["id"]
        with sessions() as session:
            assert session.get(model, uuid.UUID(made)) is not None
        assert asyncio.run(workflow_running(temporal_address, f"{prefix}-{made}"))
        # From now on the key answers as for any call: the same answer, replayed.
        third = post(client, path, tenant.cad, body, f"{prefix}-key")
        assert third.status_code == 201 and third.headers["idempotent-replayed"] == "true"
        assert third.json()["id"] == made


def test_a_call_whose_workflow_start_is_refused_takes_its_row_back_and_lets_the_key_go(tmp_path, temporal_address):
    """The one failure after the commit that keeps nothing: the workflow engine refused the start, the
    request is deleted again and the caller told that nothing was made; the same key then makes it."""

    with api_in_process(tmp_path, temporal_address) as (client, app, sessions, tenant):
        app.dependency_overrides[get_temporal] = client_of(failing_once(RPCStatusCode.UNAVAILABLE), temporal_address)
        body = request_body(tenant.provider_id)
        refused = post(client, "/requests", tenant.cad, body, "refused-once")
        assert refused.status_code == 503 and "nothing was created" in refused.json()["detail"]
        assert count(sessions, ClusterRequest, tenant) == 0
        made = post(client, "/requests", tenant.cad, body, "refused-once")
        assert made.status_code == 201, made.text
        assert count(sessions, ClusterRequest, tenant) == 1


def test_a_kept_answer_no_key_can_open_is_a_503_for_operators_not_a_500(tmp_path, temporal_address):
    """An answer kept encrypted (it showed a secret once) and encrypted with a key the API no longer has
    (HPCINFRA_CREDENTIAL_KEYS lost it) cannot be replayed: the caller is told it is the server's problem,
    for operators to mend, and nothing is made."""
    with api_in_process(tmp_path, temporal_address) as (client, app, sessions, tenant):
        body = request_body(tenant.provider_id)
        raw = json.dumps(body).encode()
        fingerprint = hashlib.sha256(b"\n".join([b"POST", b"/api/v1/requests", b"", raw])).hexdigest()
        lost_key = CredentialBox([new_key()])
        with transaction(sessions) as session:
            session.add(
                IdempotencyKey(
                    user_id=uuid.UUID(tenant.cad.id), key="sealed-by-a-lost-key", fingerprint=fingerprint,
                    status_code=201, content_type="application/json",
                    body=SEALED_ANSWER + lost_key.seal({"body": "{}"}),
                )
            )  # fmt: skip
        answer = post(client, "/requests", tenant.cad, body, "sealed-by-a-lost-key")
        assert answer.status_code == 503, answer.text
        assert "HPCINFRA_CREDENTIAL_KEYS" in answer.json()["detail"]
        assert count(sessions, ClusterRequest, tenant) == 0


def test_service_credentials_no_key_can_open_are_a_503_too(tmp_path, temporal_address):
    """The same for a service's stored credentials, on the cluster's and the service's detail."""
    with api_in_process(tmp_path, temporal_address) as (client, app, sessions, tenant):
        cluster = insert_cluster(sessions, tenant, "kept-secrets", status="available")
        with transaction(sessions) as session:
            service = ClusterService(
                cluster_id=cluster.id, name="postgresql", version="16", status="running",
                credentials_encrypted=CredentialBox([new_key()]).seal({"username": "u", "password": "p"}),
            )  # fmt: skip
            session.add(service)
        for path in (f"/clusters/{cluster.id}", f"/clusters/{cluster.id}/services/{service.id}"):
            answer = client.get(path, headers=tenant.cad.headers)
            assert answer.status_code == 503, answer.text
            assert "HPCINFRA_CREDENTIAL_KEYS" in answer.json()["detail"]


def test_a_key_whose_call_died_is_taken_up_after_a_while(tmp_path, temporal_address):
    """A call whose process died (killed between its commit and its answer) leaves its key claimed and
    unanswered: retries were refused with 409 for a day. Past ABANDONED_AFTER the key is let go, or, if
    the call had created its request, the retry finishes the call and answers with that request."""
    with api_in_process(tmp_path, temporal_address) as (client, app, sessions, tenant):
        body = request_body(tenant.provider_id)
        raw = json.dumps(body).encode()
        fingerprint = hashlib.sha256(b"\n".join([b"POST", b"/api/v1/requests", b"", raw])).hexdigest()
        made = insert_request(sessions, tenant, "made-then-died")
        died = utcnow() - idempotency.ABANDONED_AFTER - timedelta(seconds=1)
        user = uuid.UUID(tenant.cad.id)
        with transaction(sessions) as session:
            session.add_all(
                [
                    IdempotencyKey(user_id=user, key="died-after", fingerprint=fingerprint, resource=f"request {made}", created_at=died),
                    IdempotencyKey(user_id=user, key="died-before", fingerprint=fingerprint, created_at=died),
                    IdempotencyKey(user_id=user, key="still-answering", fingerprint=fingerprint, resource=f"request {made}"),
                ]
            )  # fmt: skip
        assert post(client, "/requests", tenant.cad, body, "still-answering").status_code == 409
        finished = post(client, "/requests", tenant.cad, body, "died-after")
        assert finished.status_code == 201 and finished.json()["id"] == str(made), finished.text
        assert asyncio.run(workflow_running(temporal_address, f"request-{made}"))
        released = post(client, "/requests", tenant.cad, body, "died-before")
        assert released.status_code == 201 and released.json()["id"] != str(made), released.text
        assert count(sessions, ClusterRequest, tenant) == 2


def test_a_grant_that_fails_after_its_commit_is_never_made_twice(tmp_path, temporal_address, monkeypatch):
    """Not only requests and clusters: a grant committed, then answered with a server error (here the
    answer met a busy database), keeps its key; the retry is told it was made (409), and the credits are
    granted once."""
    from api.routes import tenants

    real, failures = tenants._columns, []

    def busy_once(entry):
        if not failures:
            failures.append(1)
            raise OperationalError("SELECT ...", {}, sqlite3.OperationalError("database is locked"))
        return real(entry)

    with api_in_process(tmp_path, temporal_address) as (client, app, sessions, tenant):
        monkeypatch.setattr(tenants, "_columns", busy_once)
        admin = make_admin(sessions)
        grant = {"amount": 5, "note": "once"}
        first = post(client, f"/tenants/{tenant.id}/credits", admin, grant, "grant-1")
        assert first.status_code == 503, first.text
        again = post(client, f"/tenants/{tenant.id}/credits", admin, grant, "grant-1")
        assert again.status_code == 409 and "was made" in again.json()["detail"], again.text
        with sessions() as session:
            grants = session.scalars(
                select(CreditEntry).where(CreditEntry.tenant_id == uuid.UUID(tenant.id), CreditEntry.kind == "grant")
            ).all()
        assert [credits.as_credits(g.amount) for g in grants] == [10_000, 5]  # the opening grant, and this one


def test_a_start_that_may_have_happened_keeps_its_row_for_the_retry(tmp_path, temporal_address):
    """A start answered with a deadline exceeded may have reached the server: the request is not taken
    back (its workflow may be running), the caller is told so, and the retry with the key finishes it."""

    with api_in_process(tmp_path, temporal_address) as (client, app, sessions, tenant):
        app.dependency_overrides[get_temporal] = client_of(
            failing_once(RPCStatusCode.DEADLINE_EXCEEDED), temporal_address
        )
        body = request_body(tenant.provider_id)
        uncertain = post(client, "/requests", tenant.cad, body, "timed-out")
        assert uncertain.status_code == 503 and "did not confirm" in uncertain.json()["detail"], uncertain.text
        assert count(sessions, ClusterRequest, tenant) == 1
        finished = post(client, "/requests", tenant.cad, body, "timed-out")
        assert finished.status_code == 201, finished.text
        assert count(sessions, ClusterRequest, tenant) == 1
        assert asyncio.run(workflow_running(temporal_address, f"request-{finished.json()['id']}"))
