"""The OpenAPI document as the source of generated clients: names, tags, errors and examples.

These read the document the app builds (the same one it serves, see tests/test_schemathesis.py);
tests/test_generated_client.py generates a client from the served one and uses it.

- Every operation has an `operationId` (a client's function name: camelCase, unique), a summary, a
  description and one tag the document declares and describes. The ids of `OPERATION_IDS` never
  change: renaming one breaks every client generated before.
- Every error an operation can answer is documented, as a problem document: 401 for every call
  that needs a token, 404 for every path with an id, 422 for every operation that takes input, and
  403 and 404 wherever the role matrix (tests/test_role_matrix.py) says a role gets them.
- Every request body and every successful answer has an example, and each example is valid for its
  model: what a person copies from the documentation is accepted (bodies) or could be answered.
"""

import re
from typing import Any

import pytest
from pydantic import BaseModel

from api import schemas, webhook_schemas
from api.main import API_PREFIX, create_app
from tests.test_role_matrix import RULES, F, N

DOCUMENT = create_app().openapi()
OPERATIONS = [
    (f"{method.upper()} {path.removeprefix(API_PREFIX)}", operation)
    for path, item in DOCUMENT["paths"].items()
    for method, operation in item.items()
]
PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}

# The operationIds clients are generated with ("METHOD /path" below /api/v1 -> operationId). A new
# operation adds its line; an existing line never changes.
OPERATION_IDS = {
    "GET /me": "getMe",
    "POST /tenants/{tenantId}/webhooks": "createWebhook",
    "GET /tenants/{tenantId}/webhooks": "listWebhooks",
    "DELETE /tenants/{tenantId}/webhooks/{webhookId}": "deleteWebhook",
    "GET /tenants/{tenantId}/webhooks/{webhookId}/deliveries": "listWebhookDeliveries",
    "GET /catalog": "getCatalog",
    "GET /healthz": "checkLiveness",
    "GET /readyz": "checkReadiness",
    "GET /requests": "listRequests",
    "POST /requests": "createRequest",
    "GET /requests/{requestId}": "getRequest",
    "PATCH /requests/{requestId}": "decideRequest",
    "GET /requests/{requestId}/notes": "listRequestNotes",
    "POST /requests/{requestId}/notes": "addRequestNote",
    "GET /clusters": "listClusters",
    "POST /clusters": "createCluster",
    "GET /clusters/{clusterId}": "getCluster",
    "DELETE /clusters/{clusterId}": "deleteCluster",
    "POST /clusters/{clusterId}/retry": "retryCluster",
    "POST /clusters/{clusterId}/extend": "extendCluster",
    "PATCH /clusters/{clusterId}": "resizeCluster",
    "GET /clusters/{clusterId}/events": "listClusterEvents",
    "GET /clusters/{clusterId}/tools": "listClusterTools",
    "POST /clusters/{clusterId}/tools": "addClusterTool",
    "GET /clusters/{clusterId}/services": "listClusterServices",
    "POST /clusters/{clusterId}/services": "addClusterService",
    "GET /clusters/{clusterId}/services/{serviceId}": "getClusterService",
    "GET /clusters/{clusterId}/metrics": "getClusterMetrics",
    "GET /clusters/{clusterId}/metrics/summary": "getClusterMetricsSummary",
    "GET /cloud-providers": "listCloudProviders",
    "POST /cloud-providers": "createCloudProvider",
    "GET /tenants/{tenantId}/analytics": "getTenantAnalytics",
    "GET /tenants/{tenantId}/credits": "getTenantCredits",
    "POST /tenants/{tenantId}/credits": "grantTenantCredits",
    "GET /audit": "listAuditEvents",
}


def test_every_operation_has_a_readable_unique_id_a_summary_and_a_declared_tag():
    declared = {tag["name"]: tag.get("description", "") for tag in DOCUMENT["tags"]}
    assert all(declared.values()), f"tags without a description: {[t for t, d in declared.items() if not d]}"
    ids = [operation.get("operationId") for _, operation in OPERATIONS]
    assert len(ids) == len(set(ids)), (
        f"operationIds used more than once: {sorted({i for i in ids if ids.count(i) > 1})}"
    )
    for key, operation in OPERATIONS:
        assert re.fullmatch(r"[a-z]+(?:[A-Z][a-z0-9]*)*", operation.get("operationId", "")), (
            f"{key}: operationId {operation.get('operationId')!r} is not a camelCase verb phrase; "
            "set operation_id= on its route"
        )
        assert operation.get("summary") and operation.get("description"), f"{key}: no summary or no description"
        tags = operation.get("tags", [])
        assert len(tags) == 1 and tags[0] in declared, f"{key}: tags {tags}; one of {sorted(declared)}"


def test_the_operation_ids_clients_use_do_not_change():
    served = {key: operation["operationId"] for key, operation in OPERATIONS}
    changed = {key: (wanted, served.get(key)) for key, wanted in OPERATION_IDS.items() if served.get(key) != wanted}
    assert not changed, f"operations gone or renamed ((pinned, served) by operation): {changed}"
    new = sorted(served.keys() - OPERATION_IDS.keys())
    assert not new, f"new operations: add their operationIds to OPERATION_IDS: {new}"


def test_every_error_an_operation_can_answer_is_a_documented_problem():
    for key, operation in OPERATIONS:
        responses = operation["responses"]
        expected: set[str] = set()
        if operation.get("security"):
            expected |= {"401", "429", "503"}
        if "{" in key:
            expected.add("404")
        if operation.get("parameters") or operation.get("requestBody"):
            expected.add("422")
        rule = RULES.get(key)
        if rule is not None:
            outcomes = {rule.for_role(role) for role in ("owner", "cad_other", "it_manager", "admin")}
            expected |= {"403"} if F in outcomes else set()
            expected |= {"404"} if N in outcomes else set()
        missing = expected - responses.keys()
        assert not missing, f"{key} does not document {sorted(missing)}"
        for status, response in responses.items():
            if status.startswith("4") or (status == "503" and key != "GET /readyz"):
                assert response.get("content") == PROBLEM, f"{key} {status} is not a problem document"


def _component(ref: str) -> dict[str, Any]:
    return DOCUMENT["components"]["schemas"][ref.removeprefix("#/components/schemas/")]


def _schema_names(schema: dict[str, Any]) -> list[str]:
    """The components a body or answer is (or is a list of)."""
    if "$ref" in schema:
        return [schema["$ref"].removeprefix("#/components/schemas/")]
    if schema.get("type") == "array":
        return _schema_names(schema["items"])
    return []


def test_every_body_and_answer_has_an_example():
    for key, operation in OPERATIONS:
        schemas_used = []
        if "requestBody" in operation:
            schemas_used += _schema_names(operation["requestBody"]["content"]["application/json"]["schema"])
        for status, response in operation["responses"].items():
            if status.startswith("2") and status != "204":
                schemas_used += _schema_names(response["content"]["application/json"]["schema"])
        no_content = "204" in operation["responses"] and "requestBody" not in operation
        assert schemas_used or no_content, f"{key}: neither its body nor its answer is a documented schema"
        for name in schemas_used:
            assert DOCUMENT["components"]["schemas"][name].get("examples"), f"{key}: {name} has no example"


EXAMPLES = [
    (name, index, example)
    for name, component in DOCUMENT["components"]["schemas"].items()
    for index, example in enumerate(component.get("examples", []))
]


def test_there_are_examples():
    assert len(EXAMPLES) >= 25


@pytest.mark.parametrize(("name", "index", "example"), EXAMPLES, ids=[f"{n}-{i}" for n, i, _ in EXAMPLES])
def test_each_example_is_valid_for_its_model(name, index, example):
    """Validated by the model the schema was made from (bodies: as the API validates them, catalog
    included), and unchanged by a round trip: no field the model does not have, none misspelt."""
    model: type[BaseModel] = getattr(schemas, name, None) or getattr(webhook_schemas, name)
    again = model.model_validate(example).model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert again == example
