"""Who may do what: authentication, the role rules of API.md, and tenant isolation.

This file proves, against the real API, worker and Temporal (on SQLite and on PostgreSQL):

1. Authentication. Every operation of the app's OpenAPI document, except the health probes,
   answers 401 with `WWW-Authenticate: Bearer` and a problem+json body when the token is missing,
   malformed or unknown, and changes nothing. `/healthz` answers without a token.
2. Roles. Each rule in the "who" column of API.md: who may file requests and create clusters, who
   may decide, who may register cloud providers, what each role sees in lists, and that an object
   the caller may not see is a 404 (never a 403). An admin acts in every tenant.
3. Tenant isolation. For every operation whose path names an id, tenant B's IT manager and CAD
   manager get 404 with tenant A's ids (with a valid body, so no 422 can hide the answer), tenant
   B's lists show nothing of A, and A's objects are unchanged afterwards.

The operations come from the OpenAPI document, so a new route is covered without editing this
file; a new route whose id parameter or request body this file does not know fails the suite
until a rule is added here (`ids_of` and `BODIES`).
"""

import itertools
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from api.main import API_PREFIX, create_app
from harness.servers import wait_until
from harness.world import Person, TenantWorld, file_request, make_admin, make_tenant, request_body

# --- the operations of the OpenAPI document ----------------------------------------------------

HTTP_METHODS = {"get", "put", "post", "patch", "delete", "head", "options", "trace"}
PUBLIC_PATHS = {f"{API_PREFIX}/healthz", f"{API_PREFIX}/readyz"}


def camel(name: str) -> str:
    """`cluster_id` -> `clusterId`: path parameters under the contract's (API.md's) names."""
    return re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), name)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # as the document spells it, from the server root
    path_params: tuple[str, ...]
    required_query: tuple[str, ...]
    has_body: bool
    body_required: bool

    @property
    def template(self) -> str:
        """The path as API.md writes it: below /api/v1, with camelCase parameters."""
        path = self.path.removeprefix(API_PREFIX) or "/"
        return re.sub(r"\{(\w+)\}", lambda m: "{" + camel(m.group(1)) + "}", path)

    @property
    def key(self) -> str:
        return f"{self.method} {self.template}"

    def url(self, ids: dict[str, str]) -> str:
        """The path from the server root, its parameters filled from `ids` (document names)."""
        return re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], self.path)


def operations_of(document: dict[str, Any]) -> list[Operation]:
    found = []
    for path, item in document["paths"].items():
        shared = item.get("parameters", [])
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            params = shared + op.get("parameters", [])
            body = op.get("requestBody")
            found.append(
                Operation(
                    method=method.upper(),
                    path=path,
                    path_params=tuple(p["name"] for p in params if p["in"] == "path"),
                    required_query=tuple(p["name"] for p in params if p["in"] == "query" and p.get("required")),
                    has_body=body is not None,
                    body_required=bool(body and body.get("required")),
                )
            )
    return found


OPENAPI = create_app().openapi()
OPERATIONS = operations_of(OPENAPI)
PROTECTED = [op for op in OPERATIONS if op.path not in PUBLIC_PATHS]
WITH_IDS = [op for op in OPERATIONS if op.path_params]
# GET /clusters/{clusterId} and everything read below it (events, tools, services, metrics, ...).
CLUSTER_READS = [op for op in WITH_IDS if op.method == "GET" and [camel(p) for p in op.path_params] == ["clusterId"]]

# --- valid inputs, so that the answer is about access and not about the input ------------------


# A valid body for each operation that takes one, given the id of a cloud provider of the caller.
BODIES: dict[str, Callable[[str], dict[str, Any]]] = {
    "POST /requests": lambda provider: request_body(provider),
    "POST /clusters": lambda provider: request_body(provider),  # 2 x small: within the self-service limit
    "PATCH /requests/{requestId}": lambda provider: {"status": "approved"},
    "POST /requests/{requestId}/notes": lambda provider: {"note": "a note that must not land"},
    "POST /cloud-providers": lambda provider: {"name": f"p-{uuid.uuid4().hex[:8]}", "kind": "sim", "region": "sim-2"},
    "POST /clusters/{clusterId}/tools": lambda provider: {"name": "yosys", "version": "0.40"},
    "POST /clusters/{clusterId}/services": lambda provider: {
        "name": "postgresql",
        "version": "16",
        "config": {"databaseName": "x"},
    },
    "POST /tenants/{tenantId}/credits": lambda provider: {"amount": 100, "note": "a grant that must not land"},
    # Ten days from now: within the longest lease a CAD manager may set on the shared stack (720 hours).
    "POST /clusters/{clusterId}/extend": lambda provider: {
        "until": (datetime.now(UTC) + timedelta(days=10)).isoformat()
    },
    # One node fewer than request_body's two: within the self-service limit, and never guarded.
    "PATCH /clusters/{clusterId}": lambda provider: {"size": {"numberOfNodes": 1}},
    # An event tenant A never has (its balance lasts years), to an address where nothing listens.
    "POST /tenants/{tenantId}/webhooks": lambda provider: {"url": "http://127.0.0.1:9/hook", "events": ["balance.low"]},
}

QUERY_VALUES = {"start": "2024-01-01T00:00:00Z", "end": "2024-01-02T00:00:00Z", "interval": "hour"}


def body_for(op: Operation, provider_id: str) -> dict[str, Any] | None:
    if op.key in BODIES:
        return BODIES[op.key](provider_id)
    if op.body_required:
        pytest.fail(f"{op.key} takes a body and this file knows no valid one: add it to BODIES")
    return None


def query_for(op: Operation) -> dict[str, str]:
    unknown = [name for name in op.required_query if name not in QUERY_VALUES]
    if unknown:
        pytest.fail(
            f"{op.key} requires query parameters {unknown} this file has no value for: add them to QUERY_VALUES"
        )
    return {name: QUERY_VALUES[name] for name in op.required_query}


def server_root(client: httpx.Client) -> str:
    return str(client.base_url).rstrip("/").removesuffix(API_PREFIX)


def call(
    client: httpx.Client, op: Operation, ids: dict[str, str], provider_id: str, headers: dict[str, str]
) -> httpx.Response:
    """`op` with its path filled from `ids`, its required query parameters and a valid body."""
    url = server_root(client) + op.url(ids)
    return client.request(op.method, url, params=query_for(op), json=body_for(op, provider_id), headers=headers)


def assert_problem(response: httpx.Response, status: int, what: str) -> dict[str, Any]:
    assert response.status_code == status, f"{what}: expected {status}, got {response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith("application/problem+json"), f"{what}: {response.headers}"
    body = response.json()
    assert body["status"] == status and body["detail"], f"{what}: {body}"
    return body


# --- tenant A with one object of every kind, and tenant B -------------------------------------


@dataclass
class World:
    a: TenantWorld
    b: TenantWorld
    pending_id: str  # a pending request of A, with a note
    approved_id: str  # an approved request of A
    cluster_id: str  # the approved request's cluster, available
    b_request_id: str  # B's own request
    client: httpx.Client
    baseline: dict[str, Any] = field(default_factory=dict)
    webhook_id: str = ""  # a webhook of A

    def ids_of(self, param: str) -> list[str]:
        """Every id of tenant A for a path parameter (document name); the test fails for an unknown one."""
        cluster = get_ok(self.client, f"/clusters/{self.cluster_id}", self.a.it)
        known = {
            "requestId": [self.pending_id, self.approved_id],
            "clusterId": [self.cluster_id],
            "tenantId": [self.a.id],
            "cloudProviderId": [self.a.provider_id],
            "providerId": [self.a.provider_id],
            "userId": [self.a.cad.id, self.a.it.id],
            "toolId": [t["id"] for t in cluster["tools"]],
            "serviceId": [s["id"] for s in cluster["services"]],
            "webhookId": [self.webhook_id],
        }
        found = known.get(camel(param))
        if not found:
            pytest.fail(f"no id of tenant A is known for the path parameter {{{param}}}: add one to World.ids_of")
        return found

    def id_combinations(self, op: Operation) -> list[dict[str, str]]:
        choices = [self.ids_of(p) for p in op.path_params]
        return [dict(zip(op.path_params, combo, strict=True)) for combo in itertools.product(*choices)]

    def snapshot(self) -> dict[str, Any]:
        """All of A as its IT manager sees it: what must not change when others poke at it. Metering
        goes on meanwhile (A's approved cluster is running), so what it moves is left out: metrics,
        and the runway every request and cluster shows."""
        seen: dict[str, Any] = {}
        for path in ("/requests", "/clusters", "/cloud-providers"):
            seen[path] = sorted(
                (without_estimates(o) for o in get_ok(self.client, path, self.a.it)), key=lambda o: o["id"]
            )
        for request_id in (self.pending_id, self.approved_id):
            seen[request_id] = without_estimates(get_ok(self.client, f"/requests/{request_id}", self.a.it))
            seen[f"{request_id}/notes"] = get_ok(self.client, f"/requests/{request_id}/notes", self.a.it)
        for op in CLUSTER_READS:
            if "/metrics" in op.path:
                continue
            response = call(
                self.client, op, {op.path_params[0]: self.cluster_id}, self.a.provider_id, self.a.it.headers
            )
            assert response.status_code == 200, response.text
            seen[op.key] = without_estimates(response.json())
        return seen


def without_estimates(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_estimates(v) for k, v in value.items() if k != "estimatedCredits"}
    return value


def get_ok(client: httpx.Client, path: str, who: Person, **params: Any) -> Any:
    response = client.get(path, params=params, headers=who.headers)
    assert response.status_code == 200, f"GET {path} as {who.role}: {response.status_code} {response.text}"
    return response.json()


def ids(items: list[dict[str, Any]]) -> set[str]:
    return {item["id"] for item in items}


def approve(client: httpx.Client, who: Person, request_id: str) -> dict[str, Any]:
    # Generous: the decision waits for the worker, which may still be starting on a busy machine.
    response = client.patch(f"/requests/{request_id}", json={"status": "approved"}, headers=who.headers, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def cluster_of(client: httpx.Client, who: Person, request_id: str) -> str:
    """The id of the cluster an approved request gained."""
    return wait_until(
        lambda: get_ok(client, f"/requests/{request_id}", who).get("clusterId"),
        timeout=30,
        what=f"request {request_id} to gain a cluster",
    )


def wait_available(client: httpx.Client, who: Person, cluster_id: str) -> dict[str, Any]:
    """The cluster once it is available and its tools and services have settled (nothing still installing)."""

    def available() -> dict[str, Any] | None:
        cluster = get_ok(client, f"/clusters/{cluster_id}", who)
        assert cluster["status"] != "error", cluster
        busy = [
            i
            for i in cluster["tools"] + cluster["services"]
            if i["status"] in ("pending", "installing", "provisioning")
        ]
        return cluster if cluster["status"] == "available" and not busy else None

    return wait_until(available, timeout=60, what=f"cluster {cluster_id} to be available")


def create_cluster(client: httpx.Client, who: Person, provider_id: str) -> dict[str, Any]:
    response = client.post("/clusters", json=request_body(provider_id), headers=who.headers)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="module")
def world(stack):
    a, b = make_tenant(stack.db.sessions), make_tenant(stack.db.sessions)
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        pending = file_request(client, a.cad, a.provider_id)
        note = client.post(f"/requests/{pending['id']}/notes", json={"note": "please size it up"}, headers=a.it.headers)
        assert note.status_code == 201, note.text
        approved = file_request(
            client, a.cad, a.provider_id, services=[{"name": "redis", "version": "7.2", "config": {}}]
        )
        approve(client, a.it, approved["id"])
        cluster_id = cluster_of(client, a.it, approved["id"])
        wait_available(client, a.it, cluster_id)
        b_request = file_request(client, b.cad, b.provider_id)
        webhook = client.post(
            f"/tenants/{a.id}/webhooks", json=BODIES["POST /tenants/{tenantId}/webhooks"](""), headers=a.it.headers
        )
        assert webhook.status_code == 201, webhook.text
        w = World(a, b, pending["id"], approved["id"], cluster_id, b_request["id"], client)
        w.webhook_id = webhook.json()["id"]
        w.baseline = w.snapshot()
        yield w


def assert_a_unchanged(world: World, after: str) -> None:
    now = world.snapshot()
    changed = sorted(k for k in set(now) | set(world.baseline) if now.get(k) != world.baseline.get(k))
    assert not changed, (
        f"tenant A changed after {after}: {changed}\nbefore: {[world.baseline.get(k) for k in changed]}\nafter: {[now.get(k) for k in changed]}"
    )
    assert now[world.pending_id]["status"] == "pending"


# --- 1. authentication -------------------------------------------------------------------------

BAD_CREDENTIALS = {
    "no Authorization": {},
    "malformed Authorization": {"Authorization": "Basic xyz"},
    "unknown bearer token": {"Authorization": f"Bearer hpci_{uuid.uuid4().hex}"},
}


def test_the_served_openapi_document_is_the_one_tested(stack):
    """The operations below are collected from create_app(); the running server must list the same."""
    served = httpx.get(stack.base_url.removesuffix(API_PREFIX) + "/openapi.json", timeout=30)
    assert served.status_code == 200
    assert {op.key for op in operations_of(served.json())} == {op.key for op in OPERATIONS}
    assert PROTECTED and WITH_IDS and CLUSTER_READS


@pytest.mark.parametrize("credentials", BAD_CREDENTIALS.values(), ids=BAD_CREDENTIALS.keys())
@pytest.mark.parametrize("op", PROTECTED, ids=lambda op: op.key)
def test_every_operation_needs_a_valid_token(world, op, credentials):
    path_ids = world.id_combinations(op)[0] if op.path_params else {}
    response = call(world.client, op, path_ids, world.a.provider_id, credentials)
    assert_problem(response, 401, op.key)
    assert response.headers.get("www-authenticate", "").lower().startswith("bearer"), response.headers
    if op.method != "GET":
        assert_a_unchanged(world, f"{op.key} without a valid token")


@pytest.mark.parametrize("op", [op for op in PROTECTED if op.has_body], ids=lambda op: op.key)
def test_authentication_comes_before_reading_the_body(world, op):
    """No token is a 401 whatever the body is, even one that is not JSON: a caller who is not
    authenticated learns nothing about the input an operation expects."""
    path_ids = world.id_combinations(op)[0] if op.path_params else {}
    response = world.client.request(
        op.method,
        server_root(world.client) + op.url(path_ids),
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert_problem(response, 401, f"{op.key} without a token and with a body that is not JSON")


def test_health_needs_no_token(api):
    assert api.get("/healthz").status_code == 200
    assert api.get("/readyz").status_code in (200, 503)


# --- 2. roles ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/requests", "/clusters"])
def test_only_cad_managers_create_requests_and_clusters(api, tenant, path):
    created = api.post(path, json=request_body(tenant.provider_id), headers=tenant.cad.headers)
    assert created.status_code == 201, created.text
    refused = api.post(path, json=request_body(tenant.provider_id), headers=tenant.it.headers)
    problem = assert_problem(refused, 403, f"POST {path} as it_manager")
    assert "cad_manager" in problem["detail"]
    assert ids(get_ok(api, path, tenant.it)) == {created.json()["id"]}, (
        "the refused create must not have created anything"
    )


def test_only_it_managers_decide_requests(api, tenant):
    request_id = file_request(api, tenant.cad, tenant.provider_id)["id"]

    problem = assert_problem(
        api.patch(f"/requests/{request_id}", json={"status": "approved"}, headers=tenant.cad.headers),
        403,
        "requester approves",
    )
    assert "it_manager" in problem["detail"]
    # cad2 cannot even see the request: not found, not forbidden.
    assert_problem(
        api.patch(f"/requests/{request_id}", json={"status": "approved"}, headers=tenant.cad2.headers),
        404,
        "cad2 approves",
    )
    assert get_ok(api, f"/requests/{request_id}", tenant.it)["status"] == "pending"

    decided = approve(api, tenant.it, request_id)
    assert decided["status"] == "approved"
    assert decided["approvedBy"]["id"] == tenant.it.id and decided["approvedAt"]


def test_only_it_managers_and_admins_register_cloud_providers(api, tenant, stack):
    body = BODIES["POST /cloud-providers"]
    problem = assert_problem(
        api.post("/cloud-providers", json=body(""), headers=tenant.cad.headers), 403, "cad registers a provider"
    )
    assert "it_manager" in problem["detail"]
    assert ids(get_ok(api, "/cloud-providers", tenant.it)) == {tenant.provider_id}

    by_it = api.post("/cloud-providers", json=body(""), headers=tenant.it.headers)
    assert by_it.status_code == 201, by_it.text
    assert by_it.json()["id"] in ids(get_ok(api, "/cloud-providers", tenant.cad))

    admin = make_admin(stack.db.sessions)
    by_admin = api.post("/cloud-providers", json=body(""), headers=admin.headers)
    assert by_admin.status_code == 201, by_admin.text


def test_request_lists_by_role(api, tenant, other_tenant):
    mine = file_request(api, tenant.cad, tenant.provider_id)["id"]
    colleagues = file_request(api, tenant.cad2, tenant.provider_id)["id"]
    file_request(api, other_tenant.cad, other_tenant.provider_id)

    assert ids(get_ok(api, "/requests", tenant.cad)) == {mine}
    assert ids(get_ok(api, "/requests", tenant.cad2)) == {colleagues}
    assert ids(get_ok(api, "/requests", tenant.it)) == {mine, colleagues}
    # A filter narrows what the caller may see; it never widens it.
    assert get_ok(api, "/requests", tenant.cad, requestedBy=tenant.cad2.id) == []
    assert ids(get_ok(api, "/requests", tenant.it, requestedBy=tenant.cad2.id)) == {colleagues}


def test_a_request_and_its_notes_are_for_the_requester_and_it_managers(api, tenant):
    request_id = file_request(api, tenant.cad, tenant.provider_id)["id"]

    for who in (tenant.cad, tenant.it):
        assert get_ok(api, f"/requests/{request_id}", who)["id"] == request_id
        added = api.post(f"/requests/{request_id}/notes", json={"note": f"from {who.role}"}, headers=who.headers)
        assert added.status_code == 201, added.text
        assert added.json()["by"]["id"] == who.id
    assert [n["by"]["id"] for n in get_ok(api, f"/requests/{request_id}/notes", tenant.it)] == [
        tenant.cad.id,
        tenant.it.id,
    ]

    cad2 = tenant.cad2.headers
    assert_problem(api.get(f"/requests/{request_id}", headers=cad2), 404, "cad2 reads the request")
    assert_problem(api.get(f"/requests/{request_id}/notes", headers=cad2), 404, "cad2 reads the notes")
    assert_problem(
        api.post(f"/requests/{request_id}/notes", json={"note": "hi"}, headers=cad2), 404, "cad2 adds a note"
    )
    assert len(get_ok(api, f"/requests/{request_id}/notes", tenant.cad)) == 2


def test_cluster_lists_by_role(api, tenant, other_tenant):
    mine = create_cluster(api, tenant.cad, tenant.provider_id)["id"]
    colleagues = create_cluster(api, tenant.cad2, tenant.provider_id)["id"]
    create_cluster(api, other_tenant.cad, other_tenant.provider_id)

    assert ids(get_ok(api, "/clusters", tenant.cad)) == {mine}
    assert ids(get_ok(api, "/clusters", tenant.cad2)) == {colleagues}
    assert ids(get_ok(api, "/clusters", tenant.it)) == {mine, colleagues}
    assert ids(get_ok(api, "/clusters", tenant.cad, cloudProviderId=tenant.provider_id)) == {mine}


@pytest.mark.parametrize("op", CLUSTER_READS, ids=lambda op: op.key)
def test_cluster_reads_are_for_the_creator_and_it_managers(api, tenant, op):
    cluster_id = create_cluster(api, tenant.cad, tenant.provider_id)["id"]
    wait_available(api, tenant.cad, cluster_id)
    path_ids = {op.path_params[0]: cluster_id}
    for who in (tenant.cad, tenant.it):
        response = call(api, op, path_ids, tenant.provider_id, who.headers)
        assert response.status_code == 200, f"{op.key} as {who.role}: {response.text}"
    assert_problem(call(api, op, path_ids, tenant.provider_id, tenant.cad2.headers), 404, f"{op.key} as cad2")


def test_an_admin_sees_every_tenant(api, tenant, other_tenant, stack):
    admin = make_admin(stack.db.sessions)
    for t in (tenant, other_tenant):
        request_id = file_request(api, t.cad, t.provider_id)["id"]
        cluster_id = create_cluster(api, t.cad, t.provider_id)["id"]
        assert ids(get_ok(api, "/requests", admin, requestedBy=t.cad.id)) == {request_id}
        assert get_ok(api, f"/requests/{request_id}", admin)["id"] == request_id
        assert get_ok(api, f"/requests/{request_id}/notes", admin) == []
        assert ids(get_ok(api, "/clusters", admin, cloudProviderId=t.provider_id)) == {cluster_id}
        assert get_ok(api, f"/clusters/{cluster_id}", admin)["id"] == cluster_id


def test_an_admin_approves_a_request_of_another_tenant(api, tenant, stack):
    admin = make_admin(stack.db.sessions)
    request_id = file_request(api, tenant.cad, tenant.provider_id)["id"]

    decided = approve(api, admin, request_id)
    assert decided["status"] == "approved" and decided["approvedBy"]["id"] == admin.id
    cluster_id = cluster_of(api, tenant.it, request_id)
    cluster = wait_available(api, tenant.cad, cluster_id)
    assert cluster["requestId"] == request_id


# --- 3. tenant isolation ---------------------------------------------------------------------------

B_CALLERS = {"it_manager": lambda w: w.b.it, "cad_manager": lambda w: w.b.cad}


@pytest.mark.parametrize("caller", B_CALLERS.keys())
@pytest.mark.parametrize("op", WITH_IDS, ids=lambda op: op.key)
def test_another_tenant_gets_404_for_every_id(world, op, caller):
    who = B_CALLERS[caller](world)
    wrong = []
    for path_ids in world.id_combinations(op):
        response = call(world.client, op, path_ids, world.b.provider_id, who.headers)
        if response.status_code != 404 or not response.headers["content-type"].startswith("application/problem+json"):
            wrong.append(f"{op.method} {op.url(path_ids)} -> {response.status_code} {response.text[:300]}")
    assert not wrong, f"tenant B's {caller} must get 404 with tenant A's ids:\n" + "\n".join(wrong)
    assert_a_unchanged(world, f"{op.key} by tenant B's {caller}")


@pytest.mark.parametrize("path", ["/requests", "/clusters"])
def test_another_tenant_cannot_build_on_a_cloud_provider_of_a(world, path):
    """Bad input (API.md): refused as invalid or not found, never as forbidden, and nothing is made."""
    response = world.client.post(path, json=request_body(world.a.provider_id), headers=world.b.cad.headers)
    assert response.status_code in (404, 422), response.text
    assert ids(get_ok(world.client, "/requests", world.b.it)) == {world.b_request_id}
    assert get_ok(world.client, "/clusters", world.b.it) == []
    assert_a_unchanged(world, f"POST {path} by tenant B naming A's cloud provider")


@pytest.mark.parametrize("caller", B_CALLERS.keys())
def test_another_tenants_lists_show_nothing_of_a(world, caller):
    who = B_CALLERS[caller](world)
    a_ids = {world.pending_id, world.approved_id, world.cluster_id, world.a.provider_id}

    assert ids(get_ok(world.client, "/requests", who)) == {world.b_request_id}
    assert get_ok(world.client, "/clusters", who) == []
    assert ids(get_ok(world.client, "/cloud-providers", who)) == {world.b.provider_id}
    # Not even by asking for A's people or providers by id.
    assert get_ok(world.client, "/requests", who, requestedBy=world.a.cad.id) == []
    assert get_ok(world.client, "/clusters", who, cloudProviderId=world.a.provider_id) == []
    for status in ("pending", "approved"):
        assert not ids(get_ok(world.client, "/requests", who, status=status)) & a_ids
    assert_a_unchanged(world, f"tenant B's {caller} listing")
