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
from core.db import transaction
from core.providers import ProviderUnavailable
from core.refusals import Refused
from core.settings import Settings
from harness.world import TenantWorld, make_admin, make_tenant
from infra.providers import ProviderSettings, refuse_unallowed_account
from services import accounts
from worker import provider_settings

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
    "entry",
    [
        "aws:1234",
        "aws:",
        "gcp:Not_A_Project",
        "azure:not-a-uuid",
        "sim:anything",
        "123456789012",
        "acme/aws:1234",
        "acme/",
        f"/aws:{ACCOUNT}",
        f" acme/aws:{ACCOUNT}",
        f"acme /aws:{ACCOUNT}",
        f"aws:{ACCOUNT}/acme",
    ],
)
def test_an_allow_list_entry_that_names_no_account_stops_the_platform_at_start(entry):
    with pytest.raises(ValidationError, match="HPCINFRA_ALLOWED_CLOUD_ACCOUNTS"):
        Settings(allowed_cloud_accounts=[entry])
    assert Settings(allowed_cloud_accounts=ALLOWED).allowed_cloud_accounts == ALLOWED
    # A tenant's name may hold spaces, colons and slashes: the last '/' ends it.
    scoped = [f"acme/aws:{ACCOUNT}", "Chip Lab: EU/gcp:chip-lab-eu", f"a/b/azure:{SUBSCRIPTION}"]
    assert Settings(allowed_cloud_accounts=scoped).allowed_cloud_accounts == scoped


def test_an_entry_scoped_to_a_tenant_allows_its_account_to_that_tenant_alone(db, tmp_path):
    own, other = make_tenant(db.sessions), make_tenant(db.sessions)
    admin = make_admin(db.sessions)
    theirs, shared = "210987654321", "111111111111"
    allowed = [f"{own.name}/aws:{ACCOUNT}", f"{other.name}/aws:{theirs}", f"aws:{shared}"]
    with api_with(db, tmp_path, allowed_cloud_accounts=allowed) as client:
        for tenant, account in ((own, ACCOUNT), (other, theirs), (own, shared), (other, shared)):
            body = provider("aws", {"sshCidr": SSH, "accountId": account})
            created = client.post("/cloud-providers", json=body, headers=tenant.it.headers)
            assert created.status_code == 201, created.text
        # Another tenant's account is refused as one nobody allows would be: the message says neither
        # whose it is nor what the list holds.
        for account in (theirs, "999999999999"):
            body = provider("aws", {"sshCidr": SSH, "accountId": account})
            refused = client.post("/cloud-providers", json=body, headers=own.it.headers)
            assert refused.status_code == 422, refused.text
            detail = refused.json()["detail"]
            assert detail == (
                f"aws accountId {account!r} is not one of the accounts HPCINFRA_ALLOWED_CLOUD_ACCOUNTS allows this tenant"
            )
            assert body["name"] not in names(client, own.it)
        # An admin registering for a tenant is held to that tenant's accounts, not to the admin's own.
        body = provider("aws", {"sshCidr": SSH, "accountId": theirs})
        refused = client.post("/cloud-providers", json={**body, "tenantId": own.id}, headers=admin.headers)
        assert refused.status_code == 422, refused.text
        created = client.post("/cloud-providers", json={**body, "tenantId": other.id}, headers=admin.headers)
        assert created.status_code == 201, created.text
        assert body["name"] in names(client, other.it)


def test_the_worker_refuses_a_provider_whose_account_its_tenant_may_not_use(tmp_path):
    def settings(*allowed: str) -> ProviderSettings:
        return provider_settings(Settings(data_dir=tmp_path, allowed_cloud_accounts=list(allowed)))

    aws = {"sshCidr": SSH, "accountId": ACCOUNT}
    assert settings(f"acme/aws:{ACCOUNT}").allowed_cloud_accounts == (f"acme/aws:{ACCOUNT}",)
    # Allowed: no list; a bare entry; an entry for the tenant; kinds with no cloud account.
    refuse_unallowed_account("aws", aws, "acme", settings())
    refuse_unallowed_account("aws", aws, "acme", settings(f"aws:{ACCOUNT}"))
    refuse_unallowed_account("aws", aws, "acme", settings(f"acme/aws:{ACCOUNT}"))
    refuse_unallowed_account("sim", {}, "acme", settings(f"other/aws:{ACCOUNT}"))
    refused = [
        ("aws", aws, settings(f"other/aws:{ACCOUNT}"), f"accountId '{ACCOUNT}'"),
        ("aws", aws, settings(f"Acme/aws:{ACCOUNT}"), f"accountId '{ACCOUNT}'"),  # another tenant's name
        ("aws", {"sshCidr": SSH}, settings(f"acme/aws:{ACCOUNT}"), "must name its accountId"),
        ("gcp", {"sshCidr": SSH, "project": "chip-lab-eu"}, settings(f"acme/aws:{ACCOUNT}"), "project"),
    ]
    for kind, config, allowed, says in refused:
        # ProviderUnavailable: the activities make it a configuration failure that no retry repeats.
        with pytest.raises(ProviderUnavailable, match="HPCINFRA_ALLOWED_CLOUD_ACCOUNTS") as refusal:
            refuse_unallowed_account(kind, config, "acme", allowed)
        assert says in str(refusal.value) and "other" not in str(refusal.value), refusal.value


def test_a_provider_made_by_an_admin_outside_the_api_is_held_to_the_list(db):
    tenant = make_tenant(db.sessions)
    config = {"sshCidr": SSH, "accountId": ACCOUNT}
    with transaction(db.sessions) as session:
        with pytest.raises(Refused, match="allows this tenant"):
            accounts.create_provider(
                session,
                uuid.UUID(tenant.id),
                name="theirs",
                kind="aws",
                region="r-1",
                config=config,
                allowed_accounts=[f"other/aws:{ACCOUNT}"],
            )
        made = accounts.create_provider(
            session,
            uuid.UUID(tenant.id),
            name="ours",
            kind="aws",
            region="r-1",
            config=config,
            allowed_accounts=[f"{tenant.name}/aws:{ACCOUNT}"],
        )
        assert made.config == config


def test_a_cluster_is_not_built_in_an_account_its_tenant_may_no_longer_use_but_can_go(db, tmp_path):
    """A provider registered before the list was set (or narrowed): the worker refuses to provision or
    install in its account (a configuration failure, not retried), and still loads it for teardown,
    health checks and metering, so that the cluster can be deleted."""
    import asyncio

    from temporalio.exceptions import ApplicationError
    from temporalio.testing import ActivityEnvironment

    from activities.clusters import ClusterActivities
    from core.credentials import CredentialBox, new_key
    from core.messages import ClusterRef
    from harness.world import insert_cluster

    config = {"sshCidr": "198.51.100.0/24", "accountId": "222222222222"}
    world = make_tenant(db.sessions, extra_providers={"aws-old": {"kind": "aws", "config": config}})
    cluster = insert_cluster(
        db.sessions, world, "in-old-account", cloud_provider_id=uuid.UUID(world.providers["aws-old"])
    )
    allowed = ProviderSettings(tmp_path, 0, "", "", "", allowed_cloud_accounts=(f"{world.name}/aws:111111111111",))
    activities = ClusterActivities(db.sessions, CredentialBox([new_key()]), allowed)

    with pytest.raises(ApplicationError) as refused:
        asyncio.run(ActivityEnvironment().run(activities.provision, ClusterRef(str(cluster.id))))
    assert refused.value.type == "ProviderFailure" and refused.value.non_retryable
    assert "222222222222" in refused.value.message and "111111111111" not in refused.value.message
    spec, _ = ActivityEnvironment().run(activities.load, str(cluster.id))  # as teardown loads it
    assert spec.provider_config["accountId"] == "222222222222"
