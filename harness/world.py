"""Builders of data for the tests and the benchmarks: tenants with their users, tokens and providers, made straight in the database."""

import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

from core.db import transaction
from core.models import Cluster, ClusterRequest
from harness.servers import wait_until
from services import accounts

# What a tenant made by these builders starts with: the platform's default opening grant.
OPENING_CREDITS = Decimal(10_000)


@dataclass
class Person:
    id: str
    email: str
    role: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class TenantWorld:
    id: str
    name: str
    cad: Person
    cad2: Person
    it: Person
    provider_id: str
    providers: dict[str, str] = field(default_factory=dict)


def make_tenant(
    sessions,
    *,
    extra_providers: dict[str, dict[str, Any]] | None = None,
    opening_credits: Decimal = OPENING_CREDITS,
    budget_policy: str = "flag",
) -> TenantWorld:
    """A tenant with two CAD managers, an IT manager and a sim provider (plus any `extra_providers`,
    name -> {"kind": ..., "config": ...})."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    with transaction(sessions) as session:
        tenant = accounts.create_tenant(session, name, opening_credits=opening_credits, budget_policy=budget_policy)

        def person(local: str, role: str) -> Person:
            user = accounts.create_user(session, tenant, email=f"{local}@{name}.example", name=local, role=role)
            return Person(str(user.id), user.email, role, accounts.issue_token(session, user))

        cad, cad2, it = person("cad", "cad_manager"), person("cad2", "cad_manager"), person("it", "it_manager")
        sim = accounts.create_provider(session, tenant.id, name="sim", kind="sim", region="sim-1")
        providers = {"sim": str(sim.id)}
        for pname, spec in (extra_providers or {}).items():
            p = accounts.create_provider(
                session, tenant.id, name=pname, kind=spec["kind"], region="r-1", config=spec.get("config", {})
            )
            providers[pname] = str(p.id)
    return TenantWorld(str(tenant.id), name, cad, cad2, it, str(sim.id), providers)


def insert_cluster(sessions, tenant: TenantWorld, name: str, **fields: Any) -> Cluster:
    """A 1-node cluster row of `tenant` (unless `fields` say otherwise), made by its CAD manager, written straight to the database
    (for tests that drive the cluster workflow or the database themselves)."""
    with transaction(sessions) as session:
        cluster = Cluster(
            **{
                "tenant_id": uuid.UUID(tenant.id),
                "name": name,
                "cloud_provider_id": uuid.UUID(tenant.provider_id),
                "number_of_nodes": 1,
                "node_type": "small",
                "storage_gb": 10,
                "created_by_id": uuid.UUID(tenant.cad.id),
                **fields,
            }
        )
        session.add(cluster)
    return cluster


def insert_request(sessions, tenant: TenantWorld, name: str = "inserted") -> uuid.UUID:
    """A pending 1-node request of `tenant`'s CAD manager, written straight to the database (no workflow)."""
    with transaction(sessions) as session:
        request = ClusterRequest(
            tenant_id=uuid.UUID(tenant.id),
            name=name,
            cloud_provider_id=uuid.UUID(tenant.provider_id),
            number_of_nodes=1,
            node_type="small",
            storage_gb=10,
            requested_by_id=uuid.UUID(tenant.cad.id),
        )
        session.add(request)
    return request.id


def make_admin(sessions) -> Person:
    name = f"ops-{uuid.uuid4().hex[:10]}"
    with transaction(sessions) as session:
        tenant = accounts.create_tenant(session, name, opening_credits=Decimal(0))
        user = accounts.create_user(session, tenant, email=f"admin@{name}.example", name="admin", role="admin")
        return Person(str(user.id), user.email, "admin", accounts.issue_token(session, user))


def request_body(provider_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": f"c-{uuid.uuid4().hex[:8]}",
        "cloudProviderId": provider_id,
        "size": {"numberOfNodes": 2, "nodeType": "small"},
        "tools": [{"name": "iverilog", "version": "12.0"}],
        "services": [],
    }
    body.update(overrides)
    return body


def file_request(api: httpx.Client, who: Person, provider_id: str, **overrides: Any) -> dict[str, Any]:
    response = api.post("/requests", json=request_body(provider_id, **overrides), headers=who.headers)
    assert response.status_code == 201, response.text
    return response.json()


def wait_for_cluster(api: httpx.Client, cluster_id: str, headers: dict, status: str, timeout: float = 30) -> dict:
    def reached():
        cluster = api.get(f"/clusters/{cluster_id}", headers=headers).json()
        return cluster if cluster["status"] == status else None

    return wait_until(reached, timeout=timeout, what=f"cluster {cluster_id} to be {status}")


def wait_for_request(api: httpx.Client, request_id: str, headers: dict, status: str) -> dict:
    def reached():
        request = api.get(f"/requests/{request_id}", headers=headers).json()
        return request if request["status"] == status else None

    return wait_until(reached, timeout=30, what=f"request {request_id} to be {status}")
