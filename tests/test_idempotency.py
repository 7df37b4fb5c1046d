"""`Idempotency-Key` on POST, against the real API: the same call twice is done once."""

import hashlib
import json
import uuid

from sqlalchemy import func, select

from hpcinfra.db import transaction
from hpcinfra.models import ClusterRequest, IdempotencyKey
from tests.utils.world import request_body


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
