"""Service credentials: the generated password is stored only encrypted and appears nowhere else
(database, logs, workflow history); keys rotate without losing a credential."""

import os
import subprocess
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from core.credentials import SEALED_ANSWER, CredentialBox, new_key
from core.db import transaction
from core.models import Base, ClusterService, IdempotencyKey
from harness.servers import executable
from harness.world import insert_cluster, make_tenant, request_body, wait_for_cluster
from tests.test_tools_services import wait_for_item


def database_text(db) -> str:
    """Everything the application database holds, as text."""
    if db.kind == "sqlite":
        path = Path(db.url.removeprefix("sqlite:///"))
        return "".join(p.read_bytes().decode("latin-1") for p in path.parent.glob(path.name + "*"))
    with db.engine.connect() as connection:
        return "\n".join(
            str(row) for table in Base.metadata.sorted_tables for row in connection.execute(sa.select(table))
        )


def test_the_generated_password_is_nowhere_but_on_the_detail(api, tenant, stack):
    body = request_body(tenant.provider_id, services=[{"name": "postgresql", "version": "15", "config": {}}])
    cluster = api.post("/clusters", json=body, headers=tenant.cad.headers).json()
    wait_for_cluster(api, cluster["id"], tenant.cad.headers, "available")
    service = wait_for_item(api, tenant, cluster["id"], "services", "postgresql", ("running",))
    detail = api.get(f"/clusters/{cluster['id']}/services/{service['id']}", headers=tenant.cad.headers)
    password = detail.json()["credentials"]["password"]
    # No cache may keep an answer that shows it: the service's detail nor the cluster's.
    assert detail.headers["cache-control"] == "no-store"
    assert api.get(f"/clusters/{cluster['id']}", headers=tenant.cad.headers).headers["cache-control"] == "no-store"
    assert "cache-control" not in api.get(f"/clusters/{cluster['id']}/services", headers=tenant.cad.headers).headers
    # An error about the service, too, must not carry it.
    conflict = api.post(
        f"/clusters/{cluster['id']}/services", json={"name": "postgresql", "version": "16"}, headers=tenant.cad.headers
    )
    assert conflict.status_code == 409 and password not in conflict.text

    with stack.db.sessions() as session:
        sealed = session.get_one(ClusterService, uuid.UUID(service["id"])).credentials_encrypted
    assert sealed and password not in sealed
    assert sealed[:20] in database_text(stack.db)  # the encrypted form is there, so the search below is real
    assert password not in database_text(stack.db)

    logs = "".join(log.read_text(errors="replace") for log in stack.worker.log.parent.glob("*.log"))
    assert "worker polling" in logs and password not in logs  # every worker's and the API's log

    history = subprocess.run(
        [executable("temporal"), "workflow", "show", "--address", stack.temporal_address,
         "--workflow-id", f"cluster-{cluster['id']}", "--output", "json"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert "StartService" in history  # the activity that made the password ran in this history
    assert password not in history
    left = (Path(stack.env["HPCINFRA_DATA_DIR"]) / "sim" / f"{cluster['id']}.json").read_text()
    assert password not in left


def test_a_sealed_credential_opens_with_any_configured_key_and_rotates_to_the_first():
    old, new = new_key(), new_key()
    sealed = CredentialBox([old]).seal({"username": "hpcinfra", "password": "s3cret"})
    assert CredentialBox([new, old]).open(sealed)["password"] == "s3cret"
    resealed = CredentialBox([new, old]).reseal(sealed)
    assert CredentialBox([new]).open(resealed)["password"] == "s3cret"
    with pytest.raises(ValueError, match="cannot be decrypted"):
        CredentialBox([new]).open(sealed)


def store_service_credential(db, secret: dict, key: str) -> uuid.UUID:
    sealed = CredentialBox([key]).seal(secret)
    service = ClusterService(name="redis", version="7.2", credentials_encrypted=sealed)
    insert_cluster(db.sessions, make_tenant(db.sessions), "rotating", services=[service])
    return service.id


def rotate(db, keys: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HPCINFRA_DATABASE_URL": db.url, "HPCINFRA_CREDENTIAL_KEYS": ",".join(keys)}
    return subprocess.run(
        [executable("hpcinfra"), "credentials", "rotate"], env=env, capture_output=True, text=True, timeout=60
    )


def test_rotate_command_reencrypts_stored_credentials_with_the_new_key(fresh_db):
    old, new = new_key(), new_key()
    secret = {"username": "hpcinfra", "password": "kept"}
    service_id = store_service_credential(fresh_db, secret, old)

    result = rotate(fresh_db, [new, old])
    assert result.returncode == 0, result.stderr
    assert "re-encrypted 1 service credential(s)" in result.stdout
    with fresh_db.sessions() as session:
        stored = session.get_one(ClusterService, service_id).credentials_encrypted
    assert CredentialBox([new]).open(stored) == secret


def test_rotate_changes_nothing_when_a_credential_cannot_be_read(fresh_db):
    lost, old, new = new_key(), new_key(), new_key()
    readable = store_service_credential(fresh_db, {"username": "a", "password": "b"}, old)
    store_service_credential(fresh_db, {"username": "c", "password": "d"}, lost)
    with fresh_db.sessions() as session:
        before = session.get_one(ClusterService, readable).credentials_encrypted

    result = rotate(fresh_db, [new, old])
    assert result.returncode == 1
    assert "1 of 2 stored secret(s) cannot be decrypted" in result.stderr
    with fresh_db.sessions() as session:
        assert session.get_one(ClusterService, readable).credentials_encrypted == before


def store_sealed_answer(db, answer: str, key: str) -> int:
    """An Idempotency-Key whose kept answer showed a secret once, so is kept encrypted with `key`."""
    tenant = make_tenant(db.sessions)
    with transaction(db.sessions) as session:
        row = IdempotencyKey(
            user_id=uuid.UUID(tenant.it.id),
            key=f"key-{uuid.uuid4()}",
            fingerprint="0" * 64,
            status_code=201,
            content_type="application/json",
            body=SEALED_ANSWER + CredentialBox([key]).seal({"body": answer}),
        )
        session.add(row)
    return row.id


def test_rotate_command_reencrypts_kept_idempotency_answers_with_the_new_key(fresh_db):
    old, new = new_key(), new_key()
    answer = '{"id": "w-1", "secret": "whsec_shown_once"}'
    key_id = store_sealed_answer(fresh_db, answer, old)

    result = rotate(fresh_db, [new, old])
    assert result.returncode == 0, result.stderr
    assert "1 kept Idempotency-Key answer(s)" in result.stdout
    with fresh_db.sessions() as session:
        stored = session.get_one(IdempotencyKey, key_id).body
    # Still marked as sealed, so a retry of the call still gets its answer, now readable without the old key.
    assert stored.startswith(SEALED_ANSWER) and "whsec_shown_once" not in stored
    assert CredentialBox([new]).open(stored.removeprefix(SEALED_ANSWER)) == {"body": answer}


def test_rotate_changes_nothing_when_a_kept_idempotency_answer_cannot_be_read(fresh_db):
    lost, old, new = new_key(), new_key(), new_key()
    service = store_service_credential(fresh_db, {"username": "a", "password": "b"}, old)
    readable = store_sealed_answer(fresh_db, '{"secret": "one"}', old)
    store_sealed_answer(fresh_db, '{"secret": "two"}', lost)
    with fresh_db.sessions() as session:
        before = (
            session.get_one(ClusterService, service).credentials_encrypted,
            session.get_one(IdempotencyKey, readable).body,
        )

    result = rotate(fresh_db, [new, old])
    assert result.returncode == 1
    assert "1 of 3 stored secret(s) cannot be decrypted" in result.stderr
    assert "1 kept Idempotency-Key answer(s)" in result.stderr and "Nothing was changed" in result.stderr
    with fresh_db.sessions() as session:
        after = (
            session.get_one(ClusterService, service).credentials_encrypted,
            session.get_one(IdempotencyKey, readable).body,
        )
    assert after == before
