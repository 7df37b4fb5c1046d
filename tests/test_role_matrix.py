"""The role x route matrix: every operation of the API, called by every role, against the real stack.

`RULES` below is the authorization contract of the README's "The API" table and API.md, written
down as one line per operation of the app's OpenAPI document ("METHOD /path", the keys
tests/test_access.py gives operations). Each line says what happens, past authentication, when the
operation is called on tenant A's objects by:

- `owner`: a CAD manager of tenant A, the one who filed the request / created the cluster the call
  names (for operations without such an object: just a CAD manager of A);
- `cad_other`: another CAD manager of tenant A, who owns none of those objects;
- `it_manager`: tenant A's IT manager;
- `admin`: a platform admin (in a tenant of its own: admins act in every tenant).

and the outcome is one of three classes:

- `A` allowed: the call got past authorization, whatever it then answered (`200`, `201`, `202`, but
  also a `409` for a cluster that is not in error, a `422`...): any status but 401, 403, 404 and 5xx;
- `F` forbidden: `403`, the caller sees the object but its role may not do this;
- `N` not visible: `404`, the caller may not even learn that the object exists.

The tests:

1. `test_every_operation_has_a_rule`: the table names every operation of the OpenAPI document (the
   public health probes aside) and nothing else. A new route fails here until it has a line in
   `RULES`, so no route ships without someone deciding who may call it.
2. `test_role_matrix`: operation x role, over real HTTP, with tenant A's ids (from test_access's
   `world`: a pending request and an approved one filed by A's CAD manager, its available cluster with
   a service), a valid body (test_access's `body_for`) and the required query values. Operations that
   would change or destroy the shared objects (deciding a request, deleting a cluster) get a fresh
   object of the owner's for every call (`FRESH`), and so does retry (a cluster in `error`, so that
   an allowed retry is a real `202`, not a `409` that could come before authorization); the others
   are harmless to repeat (a note, a tool or service posted again is the same one, a grant of 100
   credits, a new cloud provider).

To extend it: add the new operation's line to `RULES` (what the README/API.md say about who may
call it); if it takes a path parameter, a body or a required query value that test_access does not
know yet, add them there (`World.ids_of`, `BODIES`, `QUERY_VALUES`); if calling it changes or
destroys the object it names, give it a fresh one in `FRESH`.
"""

import enum
import functools
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from harness.world import Person, file_request, make_admin, wait_for_cluster
from tests.test_access import (  # noqa: F401 - `world` is a fixture
    BODIES,
    PROTECTED,
    Operation,
    World,
    body_for,
    create_cluster,
    query_for,
    server_root,
    world,
)


class Outcome(enum.Enum):
    ALLOWED = "allowed"
    FORBIDDEN = "forbidden (403)"
    NOT_VISIBLE = "not visible (404)"


A, F, N = Outcome.ALLOWED, Outcome.FORBIDDEN, Outcome.NOT_VISIBLE


@dataclass(frozen=True)
class Rule:
    owner: Outcome
    cad_other: Outcome
    it_manager: Outcome
    admin: Outcome

    def for_role(self, role: str) -> Outcome:
        return getattr(self, role)


ROLES = ("owner", "cad_other", "it_manager", "admin")

# fmt: off
RULES: dict[str, Rule] = {
    #                                                         owner  cad_other  it_manager  admin
    "GET /me":                                           Rule(A,     A,         A,          A),
    "GET /catalog":                                      Rule(A,     A,         A,          A),
    # Requests: lists are filtered by role; a request is for its requester, the tenant's IT managers
    # and admins; only IT managers and admins decide (the requester sees it, so 403; another CAD
    # manager does not, so 404); only CAD managers file.
    "GET /requests":                                     Rule(A,     A,         A,          A),
    "POST /requests":                                    Rule(A,     A,         F,          F),
    "GET /requests/{requestId}":                         Rule(A,     N,         A,          A),
    "PATCH /requests/{requestId}":                       Rule(F,     N,         A,          A),
    "GET /requests/{requestId}/notes":                   Rule(A,     N,         A,          A),
    "POST /requests/{requestId}/notes":                  Rule(A,     N,         A,          A),
    # Clusters: for their creator, the tenant's IT managers and admins; only CAD managers create
    # directly; only the creator adds tools and services.
    "GET /clusters":                                     Rule(A,     A,         A,          A),
    "POST /clusters":                                    Rule(A,     A,         F,          F),
    "GET /clusters/{clusterId}":                         Rule(A,     N,         A,          A),
    "DELETE /clusters/{clusterId}":                      Rule(A,     N,         A,          A),
    "POST /clusters/{clusterId}/retry":                  Rule(A,     N,         A,          A),
    "POST /clusters/{clusterId}/extend":                 Rule(A,     N,         A,          A),
    "PATCH /clusters/{clusterId}":                       Rule(A,     N,         A,          A),
    "GET /clusters/{clusterId}/events":                  Rule(A,     N,         A,          A),
    "GET /clusters/{clusterId}/tools":                   Rule(A,     N,         A,          A),
    "POST /clusters/{clusterId}/tools":                  Rule(A,     N,         F,          F),
    "GET /clusters/{clusterId}/services":                Rule(A,     N,         A,          A),
    "POST /clusters/{clusterId}/services":               Rule(A,     N,         F,          F),
    "GET /clusters/{clusterId}/services/{serviceId}":    Rule(A,     N,         A,          A),
    "GET /clusters/{clusterId}/metrics":                 Rule(A,     N,         A,          A),
    "GET /clusters/{clusterId}/metrics/summary":         Rule(A,     N,         A,          A),
    # Supporting resources: all read providers, IT managers and admins register them.
    "GET /cloud-providers":                              Rule(A,     A,         A,          A),
    "POST /cloud-providers":                             Rule(F,     F,         A,          A),
    # A tenant's figures: its IT managers and admins read, admins grant (CAD managers see their own
    # tenant, so 403; another tenant is 404 for everyone but admins, see test_access).
    "GET /tenants/{tenantId}/analytics":                 Rule(F,     F,         A,          A),
    "GET /tenants/{tenantId}/credits":                   Rule(F,     F,         A,          A),
    "POST /tenants/{tenantId}/credits":                  Rule(F,     F,         F,          A),
    "GET /audit":                                        Rule(F,     F,         A,          A),
    # A tenant's webhooks: its IT managers and admins register, list, delete them and read their deliveries.
    "GET /tenants/{tenantId}/webhooks":                  Rule(F,     F,         A,          A),
    "POST /tenants/{tenantId}/webhooks":                 Rule(F,     F,         A,          A),
    "DELETE /tenants/{tenantId}/webhooks/{webhookId}":   Rule(F,     F,         A,          A),
    "GET /tenants/{tenantId}/webhooks/{webhookId}/deliveries": Rule(F, F,       A,          A),
}
# fmt: on


def test_every_operation_has_a_rule():
    """The table and the app's route table name the same operations (the public probes aside)."""
    served = {op.key for op in PROTECTED}
    missing = sorted(served - RULES.keys())
    stale = sorted(RULES.keys() - served)
    assert not missing, (
        f"operations without an authorization rule: {missing}. Add each to RULES in {__name__} "
        "with the outcome for the owner, another CAD manager, the IT manager and an admin"
    )
    assert not stale, f"RULES names operations the API no longer has: {stale}; remove them from RULES"


# --- the callers and the objects they call on --------------------------------------------------


@dataclass
class Matrix:
    world: World
    admin: Person

    def caller(self, role: str) -> Person:
        a = self.world.a
        return {"owner": a.cad, "cad_other": a.cad2, "it_manager": a.it, "admin": self.admin}[role]

    def shared_ids(self, op: Operation) -> dict[str, str]:
        """Tenant A's first id for each path parameter: the pending request, the cluster, its service."""
        return {param: self.world.ids_of(param)[0] for param in op.path_params}

    def fresh_request(self) -> str:
        return file_request(self.world.client, self.world.a.cad, self.world.a.provider_id)["id"]

    def fresh_cluster(self) -> str:
        return create_cluster(self.world.client, self.world.a.cad, self.world.a.provider_id)["id"]

    @functools.cached_property
    def broken_provider(self) -> str:
        """A sim provider of tenant A whose provisioning always fails (at the storage step)."""
        body = {**BODIES["POST /cloud-providers"](""), "config": {"failAt": "storage"}}
        response = self.world.client.post("/cloud-providers", json=body, headers=self.world.a.it.headers)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def fresh_error_cluster(self) -> str:
        """A cluster of the owner's in `error`, which is what a retry is for."""
        cluster_id = create_cluster(self.world.client, self.world.a.cad, self.broken_provider)["id"]
        wait_for_cluster(self.world.client, cluster_id, self.world.a.cad.headers, "error")
        return cluster_id

    def tidy_request(self, request_id: str) -> None:
        """A fresh request left pending: reject it, so that its workflow ends."""
        self.world.client.patch(
            f"/requests/{request_id}",
            json={"status": "rejected", "rejectionReason": "left over by the role matrix"},
            headers=self.world.a.it.headers,
        )

    def fresh_webhook(self) -> str:
        body = BODIES["POST /tenants/{tenantId}/webhooks"]("")
        response = self.world.client.post(
            f"/tenants/{self.world.a.id}/webhooks", json=body, headers=self.world.a.it.headers
        )
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def tidy_webhook(self, webhook_id: str) -> None:
        self.world.client.delete(f"/tenants/{self.world.a.id}/webhooks/{webhook_id}", headers=self.world.a.it.headers)

    def tidy_cluster(self, cluster_id: str) -> None:
        """A fresh cluster left standing: delete it (deleting twice changes nothing)."""
        self.world.client.delete(f"/clusters/{cluster_id}", headers=self.world.a.cad.headers)


@dataclass(frozen=True)
class Fresh:
    make: Callable[[Matrix], dict[str, str]]
    tidy: Callable[[Matrix, dict[str, str]], None]


# Operations that change or destroy the object they name: each call gets a new one of the owner's.
FRESH: dict[str, Fresh] = {
    "PATCH /requests/{requestId}": Fresh(
        lambda m: {"requestId": m.fresh_request()}, lambda m, ids: m.tidy_request(ids["requestId"])
    ),
    "DELETE /clusters/{clusterId}": Fresh(
        lambda m: {"clusterId": m.fresh_cluster()}, lambda m, ids: m.tidy_cluster(ids["clusterId"])
    ),
    # Not to protect anything: a retry of an available cluster is a 409, which would count as allowed
    # whether or not authorization came first. A cluster in error makes an allowed retry a 202.
    "POST /clusters/{clusterId}/retry": Fresh(
        lambda m: {"clusterId": m.fresh_error_cluster()}, lambda m, ids: m.tidy_cluster(ids["clusterId"])
    ),
    "DELETE /tenants/{tenantId}/webhooks/{webhookId}": Fresh(
        lambda m: {"tenantId": m.world.a.id, "webhookId": m.fresh_webhook()},
        lambda m, ids: m.tidy_webhook(ids["webhookId"]),
    ),
}

# The decision is a rejection: as valid as test_access's approval and as much a decision, but it
# provisions no cluster.
BODY_OVERRIDES = {
    "PATCH /requests/{requestId}": {"status": "rejected", "rejectionReason": "checked by the role matrix"},
}
assert BODY_OVERRIDES.keys() <= BODIES.keys()


@pytest.fixture(scope="module")
def matrix(request, stack) -> Matrix:
    return Matrix(request.getfixturevalue("world"), make_admin(stack.db.sessions))


def outcome_of(response: httpx.Response) -> Outcome:
    if response.status_code == 403:
        return Outcome.FORBIDDEN
    if response.status_code == 404:
        return Outcome.NOT_VISIBLE
    if response.status_code == 401 or response.status_code >= 500:
        pytest.fail(f"neither past authorization nor refused by it: {response.status_code} {response.text[:500]}")
    return Outcome.ALLOWED


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("op", PROTECTED, ids=lambda op: op.key)
def test_role_matrix(matrix, op, role):
    rule = RULES.get(op.key)
    if rule is None:
        pytest.fail(f"{op.key} has no authorization rule: add it to RULES in {__name__}")
    who = matrix.caller(role)
    fresh = FRESH.get(op.key)
    path_ids = fresh.make(matrix) if fresh else matrix.shared_ids(op)
    body = BODY_OVERRIDES.get(op.key) or body_for(op, matrix.world.a.provider_id)
    try:
        response = matrix.world.client.request(
            op.method,
            server_root(matrix.world.client) + op.url(path_ids),
            params=query_for(op),
            json=body,
            headers=who.headers,
            timeout=120,  # a decision or a deletion waits for the workflow
        )
    finally:
        if fresh:
            fresh.tidy(matrix, path_ids)
    what = f"{op.method} {op.url(path_ids)} as {role} ({who.role})"
    got = outcome_of(response)
    assert got == rule.for_role(role), (
        f"{what}: expected {rule.for_role(role).value}, got {got.value}: {response.status_code} {response.text[:500]}"
    )
    if got is not Outcome.ALLOWED:
        assert response.headers["content-type"].startswith("application/problem+json"), f"{what}: {response.headers}"
        assert response.json()["detail"], f"{what}: {response.text}"
