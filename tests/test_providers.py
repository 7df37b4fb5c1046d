"""Who may register which cloud provider (POST /cloud-providers): `local` runs clusters as root processes
on the platform's own machine, so only admins register it; cloud providers may name only the accounts
the operator allows (HPCINFRA_ALLOWED_CLOUD_ACCOUNTS); and an SSH range is never a slice of the internet."""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from api.main import create_app
from hpcinfra.settings import Settings
from tests.utils.world import TenantWorld, make_admin, make_tenant

SSH = "198.51.100.0/24"
ACCOUNT, SUBSCRIPTION = "123456789012", "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"
ALLOWED = [f"aws:{ACCOUNT}", "gcp:chip-lab-eu", f"azure:{SUBSCRIPTION}"]


@contextmanager
def api_with(db, tmp_path, **settings) -> Iterator[TestClient]:
    # Registering a provider needs no workflow: no Temporal behind this API.
    app = create_app(Settings(database_url=db.url, data_dir=tmp_path, temporal_address="127.0.0.1:1", **settings))
    with TestClient(app, base_url="http://testserver/api/v1") as client:
        yield client


@pytest.fixture
def tenant(db) -> TenantWorld:
    return make_tenant(db.sessions)


def provider(kind: str, config: dict | None = None) -> dict:
    return {"name": f"{kind}-{uuid.uuid4().hex[:8]}", "kind": kind, "region": "r-1", "config": config or {}}


def names(client: TestClient, who) -> set[str]:
    return {p["name"] for p in client.get("/cloud-providers", headers=who.headers).json()}


def test_only_admins_register_a_local_provider_and_it_managers_keep_sim(db, tmp_path, tenant):
    with api_with(db, tmp_path) as client:
        local = provider("local")
        refused = client.post("/cloud-providers", json=local, headers=tenant.it.headers)
        assert refused.status_code == 403, refused.text
        assert "only admins may register local providers" in refused.json()["detail"]
        assert local["name"] not in names(client, tenant.it)

        # sim creates nothing but a file per cluster in the data folder: IT managers register it still.
        assert client.post("/cloud-providers", json=provider("sim"), headers=tenant.it.headers).status_code == 201

        admin = make_admin(db.sessions)
        created = client.post("/cloud-providers", json={**local, "tenantId": tenant.id}, headers=admin.headers)
        assert created.status_code == 201, created.text
        assert local["name"] in names(client, tenant.cad)


ACCEPTED = [
    ("aws", {"sshCidr": SSH, "accountId": ACCOUNT}),
    ("gcp", {"sshCidr": SSH, "project": "chip-lab-eu"}),
    ("azure", {"sshCidr": SSH, "subscriptionId": SUBSCRIPTION.upper()}),
]
REFUSED = [
    ("aws", {"sshCidr": SSH, "accountId": "210987654321"}, "accountId '210987654321'"),
    ("aws", {"sshCidr": SSH}, "must name its accountId"),
    ("gcp", {"sshCidr": SSH, "project": "someone-elses"}, "project 'someone-elses'"),
    ("gcp", {"sshCidr": SSH}, "must name its project"),
    ("azure", {"sshCidr": SSH, "subscriptionId": "ffffffff-4f50-4a6b-8c7d-9e0f1a2b3c4d"}, "subscriptionId 'ffffffff"),
    ("azure", {"sshCidr": SSH}, "must name its subscriptionId"),
]


def test_with_an_allow_list_a_cloud_provider_names_an_allowed_account(db, tmp_path, tenant):
    admin = make_admin(db.sessions)
    with api_with(db, tmp_path, allowed_cloud_accounts=ALLOWED) as client:
        for kind, config in ACCEPTED:
            created = client.post("/cloud-providers", json=provider(kind, config), headers=tenant.it.headers)
            assert created.status_code == 201, created.text
        for kind, config, says in REFUSED:
            body = provider(kind, config)
            # The operator's list binds admins too.
            for who, sent in ((tenant.it, body), (admin, {**body, "tenantId": tenant.id})):
                refused = client.post("/cloud-providers", json=sent, headers=who.headers)
                assert refused.status_code == 422, (kind, config, refused.text)
                detail = refused.json()["detail"]
                assert "HPCINFRA_ALLOWED_CLOUD_ACCOUNTS" in detail and says in detail, detail
                # What the list allows is the operator's business, not shown to tenants.
                assert not [entry for entry in ALLOWED if entry.split(":", 1)[1] in detail], detail
            assert body["name"] not in names(client, tenant.it)
        # Kinds that name no cloud account are not concerned.
        assert client.post("/cloud-providers", json=provider("sim"), headers=tenant.it.headers).status_code == 201


def test_without_an_allow_list_any_account_will_do(db, tmp_path, tenant):
    with api_with(db, tmp_path) as client:
        for kind, config, _ in REFUSED:
            created = client.post("/cloud-providers", json=provider(kind, config), headers=tenant.it.headers)
            assert created.status_code == 201, created.text


@pytest.mark.parametrize(
    "config, says",
    [
        ({"sshCidr": "0.0.0.0/1"}, "wider than a /8"),
        ({"sshCidr": "0.0.0.0/0"}, "wider than a /8"),
        ({"sshCidr": "2001:db8::/32"}, "IPv4"),
        ({"sshCidr": SSH, "accountId": "12345"}, "accountId"),
        ({"sshCidr": SSH, "project": "chip-lab-eu"}, "project: a gcp setting"),
    ],
)
def test_an_aws_provider_config_it_cannot_use_is_refused_at_registration(db, tmp_path, tenant, config, says):
    with api_with(db, tmp_path) as client:
        refused = client.post("/cloud-providers", json=provider("aws", config), headers=tenant.it.headers)
        assert refused.status_code == 422, refused.text
        assert says in refused.json()["detail"]
        wide_enough = client.post(
            "/cloud-providers", json=provider("aws", {"sshCidr": "10.0.0.0/8"}), headers=tenant.it.headers
        )
        assert wide_enough.status_code == 201, wide_enough.text


@pytest.mark.parametrize(
    "entry", ["aws:1234", "aws:", "gcp:Not_A_Project", "azure:not-a-uuid", "sim:anything", "123456789012"]
)
def test_an_allow_list_entry_that_names_no_account_stops_the_platform_at_start(entry):
    with pytest.raises(ValidationError, match="HPCINFRA_ALLOWED_CLOUD_ACCOUNTS"):
        Settings(allowed_cloud_accounts=[entry])
    assert Settings(allowed_cloud_accounts=ALLOWED).allowed_cloud_accounts == ALLOWED
