"""The whole HTTP contract, fuzzed by schemathesis against the real stack (on SQLite and on PostgreSQL).

Every operation of `GET /openapi.json` is called with generated data, valid and invalid, as a caller
who may call it (see ROLES), with the default checks of schemathesis: no 5xx; the status code, content
type and body of every answer as the document says; invalid data refused with a 4xx. Path ids are
most often real objects of the tenant (a pending request, an available cluster with a running
service, a cluster in error, the tenant itself), and so is the cloud provider of a new request or
cluster, so that the fuzzing reaches past the 404s and 422s; the rest of the time they are whatever
schemathesis makes up.

The error statuses every operation may answer (401, 404, 413, 422, 429, 503, ...) are documented by
api/errors.py, those of one route by its `responses=problems(...)`. Where a route in a file this test's
authors may not edit does not document a status it answers, KNOWN_GAPS lists it (and says which file).
"""

import json
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import status_code_conformance

from api.main import create_app
from api.webhook_schemas import WebhookIn
from harness.servers import wait_until
from harness.world import Person, TenantWorld, make_admin, make_tenant, request_body, wait_for_cluster

PREFIX = "/api/v1"
# Fuzzed cases per operation (the coverage phase adds its own boundary cases on top).
MAX_EXAMPLES = 150

# Who calls each operation (default: the tenant's CAD manager, who creates the clusters and files the
# requests, and so may read and change them): the role the README's API table gives it.
ROLES = {
    ("PATCH", "/requests/{requestId}"): "it",
    ("POST", "/cloud-providers"): "it",
    ("GET", "/tenants/{tenantId}/analytics"): "it",
    ("GET", "/tenants/{tenantId}/credits"): "it",
    ("POST", "/tenants/{tenantId}/credits"): "admin",
    ("GET", "/audit"): "it",
    ("POST", "/tenants/{tenantId}/webhooks"): "it",
    ("GET", "/tenants/{tenantId}/webhooks"): "it",
    ("DELETE", "/tenants/{tenantId}/webhooks/{webhookId}"): "it",
    ("GET", "/tenants/{tenantId}/webhooks/{webhookId}/deliveries"): "it",
}


# Statuses some operations answer without documenting them, in files this test's authors may not edit:
# accepted here (with a warning) so that the rest of each operation is still checked, and reported. Each
# entry goes once its route says `responses=problems(...)` (test_every_known_gap_is_still_one fails then).
KNOWN_GAPS: dict[tuple[str, str], dict[int, str]] = {}


@dataclass
class Contract:
    """The tenant the fuzzing runs as, and the real objects its path ids point at."""

    root: str
    tenant: TenantWorld
    admin: Person
    request_id: str  # a pending request, read and annotated
    decided_request_id: str  # a pending request for PATCH, decided by the first valid decision
    cluster_id: str  # an available cluster with a running postgresql service
    service_id: str
    doomed_cluster_id: str  # an available cluster for DELETE
    error_cluster_id: str  # a cluster in error, for retry

    def who(self, method: str, path: str) -> Person:
        role = ROLES.get((method, path.removeprefix(PREFIX)), "cad")
        return self.admin if role == "admin" else getattr(self.tenant, role)

    def real_ids(self, method: str, path: str) -> dict[str, str]:
        path = path.removeprefix(PREFIX)
        cluster = {"DELETE": self.doomed_cluster_id}.get(method, self.cluster_id)
        if path.endswith("/retry"):
            cluster = self.error_cluster_id
        return {
            "requestId": self.decided_request_id if method == "PATCH" else self.request_id,
            "clusterId": cluster,
            "serviceId": self.service_id,
            "tenantId": self.tenant.id,
        }


def _create_cluster(api: httpx.Client, who: Person, provider_id: str, **overrides) -> str:
    body = request_body(provider_id, **{"size": {"numberOfNodes": 1, "nodeType": "small"}, **overrides})
    r = api.post("/clusters", json=body, headers=who.headers)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _file_request(api: httpx.Client, who: Person, provider_id: str) -> str:
    r = api.post("/requests", json=request_body(provider_id), headers=who.headers)
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.fixture(scope="session")
def contract_world(stack) -> Contract:
    """Made once per database: a tenant with the objects the path ids point at."""
    tenant = make_tenant(
        stack.db.sessions,
        extra_providers={"broken": {"kind": "sim", "config": {"failAt": "network", "failWith": "quota"}}},
    )
    cad = tenant.cad
    with httpx.Client(base_url=stack.base_url, timeout=30) as api:
        cluster_id = _create_cluster(
            api, cad, tenant.provider_id, services=[{"name": "postgresql", "version": "16", "config": {}}]
        )
        doomed = _create_cluster(api, cad, tenant.provider_id)
        broken = _create_cluster(api, cad, tenant.providers["broken"])
        wait_for_cluster(api, cluster_id, cad.headers, "available")
        wait_for_cluster(api, doomed, cad.headers, "available")
        wait_for_cluster(api, broken, cad.headers, "error")

        def service_running():
            services = api.get(f"/clusters/{cluster_id}/services", headers=cad.headers).json()
            return services[0]["id"] if services and services[0]["status"] == "running" else None

        return Contract(
            root=stack.base_url.removesuffix(PREFIX),
            tenant=tenant,
            admin=make_admin(stack.db.sessions),
            request_id=_file_request(api, cad, tenant.provider_id),
            decided_request_id=_file_request(api, cad, tenant.provider_id),
            cluster_id=cluster_id,
            service_id=wait_until(service_running, what="the postgresql service to run"),
            doomed_cluster_id=doomed,
            error_cluster_id=broken,
        )


# The contract of the test running now, for the hook below (which runs while schemathesis generates a case).
_current: dict[str, Contract] = {}


@pytest.fixture
def contract(contract_world: Contract) -> Iterator[Contract]:
    _current["contract"] = contract_world
    yield contract_world
    _current.clear()


# The document the API serves at /openapi.json, built by the same code (test_the_fuzzed_document_is_the_served_one
# checks that they are the same); loaded now because schemathesis makes one test per operation at collection.
schema = schemathesis.openapi.from_dict(create_app().openapi())
# Every call carries the token of a caller who may make it (see ROLES), so the bearer header is not
# generated (a missing or wrong token is what the `ignored_auth` check tries: it must be a 401).
schema.config.generation.update(with_security_parameters=False)
# Data the document's JSON Schema allows may still be refused with 422 where the API checks what a
# schema cannot say (a tool's versions in the catalog, a tool or service named once, the tenant's own
# cloud provider, a time range within 2000-2200 with start before end, a grant with at most 6
# decimals, ...: tests/test_bad_input.py). So 422 is an expected answer to valid data too; anything else
# outside 2xx/401/403/404/409/429 still fails the check.
schema.config.checks.positive_data_acceptance.expected_statuses = [
    *schema.config.checks.positive_data_acceptance.expected_statuses,
    "422",
]


@schema.hook("flatmap_path_parameters")
def real_ids(ctx, path_parameters):
    """Three times in four a real id of the tenant (only where schemathesis made a valid id: an invalid
    one must stay invalid), else the id schemathesis made. The document's examples are made into cases
    at collection, before any contract exists: those keep the ids schemathesis made."""
    contract = _current.get("contract")
    if contract is None or not path_parameters or not all(_is_uuid(v) for v in path_parameters.values()):
        return st.just(path_parameters)
    real = contract.real_ids(ctx.operation.method.upper(), ctx.operation.path)
    replaced = {name: real.get(name, value) for name, value in path_parameters.items()}
    return st.sampled_from([replaced, replaced, replaced, path_parameters])


@schema.hook("flatmap_body")
def real_provider(ctx, body):
    """Likewise, the tenant's own cloud provider in a new request's or cluster's body, three times in four.
    A valid webhook's URL names a host in `.invalid` instead of the one made up: the API resolves a
    receiver's name, and a test sends no query to a name server (a `.invalid` name is never looked up;
    an invalid webhook, left as it is, is refused before any name is looked up)."""
    if isinstance(body, dict) and isinstance(body.get("url"), str) and _valid(WebhookIn, body):
        return st.just({**body, "url": _never_looked_up(body["url"])})
    contract = _current.get("contract")
    if contract is None or not isinstance(body, dict) or not _is_uuid(body.get("cloudProviderId")):
        return st.just(body)
    replaced = {**body, "cloudProviderId": contract.tenant.provider_id}
    return st.sampled_from([replaced, replaced, replaced, body])


def _valid(model, body: dict) -> bool:
    try:
        model.model_validate(body)
    except ValueError:
        return False
    return True


def _never_looked_up(url: str) -> str:
    """A URL like `url` whose host is in `.invalid`: the same scheme, port, path and query."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port is not None else ""
    return urlunsplit(parts._replace(netloc=f"receiver.invalid{port}"))


def _is_uuid(value) -> bool:
    try:
        uuid.UUID(str(value))
    except (TypeError, ValueError):
        return False
    return True


@pytest.fixture(scope="session")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def test_the_fuzzed_document_is_the_served_one(stack):
    served = httpx.get(stack.base_url.removesuffix(PREFIX) + "/openapi.json", timeout=30)
    assert served.status_code == 200, served.text
    assert served.json() == json.loads(json.dumps(schema.raw_schema))


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    # No shrinking: each example is real HTTP against a real stack; the failing case is reported as found.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_the_api_keeps_its_contract(case, contract, http):
    method, path = case.operation.method.upper(), case.operation.path.removeprefix(PREFIX)
    who = contract.who(method, path)
    transport = {"base_url": contract.root, "session": http, "headers": who.headers, "timeout": 30}
    response = case.call(**transport)
    gap = KNOWN_GAPS.get((method, path), {}).get(response.status_code)
    excluded = []
    if gap is not None:
        warnings.warn(f"{method} {path} answered {response.status_code}, undocumented: {gap}", stacklevel=1)
        excluded = [status_code_conformance]
    case.validate_response(response, excluded_checks=excluded, headers=who.headers, transport_kwargs=transport)


def test_every_known_gap_is_still_one():
    """Once a route documents a status of KNOWN_GAPS, its entry must go, so the check applies again."""
    for (method, path), statuses in KNOWN_GAPS.items():
        documented = schema.raw_schema["paths"][PREFIX + path][method.lower()]["responses"]
        assert not set(map(str, statuses)) & set(documented), (
            f"{method} {path} documents it now: drop it from KNOWN_GAPS"
        )


# --- what the fuzzing found, pinned -------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("OPTIONS", "/requests", "GET, POST"), ("PUT", "/clusters/{id}", "DELETE, GET, PATCH"), ("DELETE", "/me", "GET")],
)
def test_a_method_not_allowed_names_every_allowed_one(contract_world, http, method, path, allowed):
    """Starlette's Allow named the methods of one route of the path (`GET` for /requests, not POST)."""
    url = contract_world.root + PREFIX + path.replace("{id}", contract_world.cluster_id)
    response = http.request(method, url, headers=contract_world.tenant.cad.headers, timeout=30)
    assert response.status_code == 405, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["allow"] == allowed
    assert allowed in response.json()["detail"]


def test_a_provider_name_with_a_leading_separator_is_the_same_name(contract_world, http):
    """U+001C to U+001F are white space to Python (which strips them before storing) but not to pydantic:
    such a name was looked up unstripped, stored stripped, and collided with the name it became (500)."""
    url = contract_world.root + PREFIX + "/cloud-providers"
    name = f"p-{uuid.uuid4().hex[:8]}"
    headers = contract_world.tenant.it.headers
    first = http.post(url, json={"name": name, "kind": "sim", "region": "r-1"}, headers=headers, timeout=30)
    assert first.status_code == 201, first.text
    again = http.post(url, json={"name": "\x1c" + name, "kind": "sim", "region": "r-1"}, headers=headers, timeout=30)
    assert again.status_code == 409, again.text
    assert name in again.json()["detail"]
