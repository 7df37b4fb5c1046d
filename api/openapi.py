"""What the OpenAPI document says about the API as a whole: its tags, and how operations are named.

Clients are generated from the document (tests/test_generated_client.py), so the names in it are
names in their code: each tag becomes a module, each `operationId` a function. Routes name their
operation explicitly (`operation_id=` on the decorator), so that renaming a Python function never
renames a client's function; `operation_id` below only names a route that forgot to.
"""

from fastapi.routing import APIRoute
from pydantic.alias_generators import to_camel

# One tag per resource, in the order the rendered documentation shows them.
TAGS: list[dict[str, str]] = [
    {
        "name": "requests",
        "description": "Cluster requests: filed by CAD managers, approved or rejected by IT managers. "
        "Approving a request provisions its cluster; the request then names it in `clusterId`.",
    },
    {
        "name": "clusters",
        "description": "Slurm clusters: created by an approved request, or directly within the tenant's "
        "self-service limit. Their tools and services, the step log of their provisioning, teardown and retry.",
    },
    {
        "name": "metrics",
        "description": "A cluster's use of CPU, memory and storage, and what it costs in credits.",
    },
    {
        "name": "tenants",
        "description": "A tenant's analytics across its clusters and users, and its credits: balance, "
        "budget policy, ledger and grants.",
    },
    {
        "name": "webhooks",
        "description": "A tenant's outbound webhooks: the events posted to its endpoints, signed with HMAC-SHA256, "
        "and each delivery's attempts.",
    },
    {
        "name": "providers",
        "description": "The cloud providers a tenant provisions on: `cloudProviderId` points here.",
    },
    {
        "name": "audit",
        "description": "Who did what: decisions, clusters made and deleted, credentials shown, credits granted.",
    },
    {
        "name": "meta",
        "description": "The caller, the catalog of node types, tools and services, and the health probes.",
    },
]


def operation_id(route: APIRoute) -> str:
    """The `operationId` of a route that does not set one: its function's name in camelCase
    (`list_requests` -> `listRequests`), never FastAPI's default of name, path and method."""
    return to_camel(route.name)
