"""Examples of the API's JSON shapes, for the OpenAPI document (api/schemas.py puts each on its schema).

They follow the user's API reference: its ids, times and field names, with values a real tenant
would see (node types, tools and services from the catalog). tests/test_openapi.py checks that each
one is valid for its model, so an example that drifts from the code fails a test rather than misleads
a reader.
"""

from typing import Any

# Ids and times of the API reference's examples, and a few more in the same style.
REQUEST_ID = "497f6eca-6276-4993-bfeb-53cbbbba6f08"
PROVIDER_ID = "1a2278cb-eaa1-4ddc-b267-06e7b99f872d"
CLUSTER_ID = "a3d24843-7014-4490-bdd3-b7cb39b400c8"
CAD_ID = "2c4a230c-5085-4924-a3e1-25fb4fc5965b"
IT_ID = "6d1f9e2a-4b7c-4e0d-9a35-8c2b1f0e7d64"
ADMIN_ID = "0e5b8c7d-2f3a-4d19-b6e4-7a9c1d2e3f40"
TENANT_ID = "3c9e1a5b-7d2f-4b8e-a1c6-5f4d3e2b1a09"
TOOL_ID = "8f14e45f-ceea-467f-a0e6-4c2b1d3e5f70"
SERVICE_ID = "c9f0f895-fb98-4b91-8f2e-1d3c5b7a9e12"
REQUESTED_AT = "2019-08-24T14:15:22Z"
APPROVED_AT = "2019-08-24T15:02:10Z"
AVAILABLE_AT = "2019-08-24T15:09:41Z"

CAD_MANAGER = {"id": CAD_ID, "name": "CAD manager", "email": "cad@chips.example", "role": "cad_manager"}
IT_MANAGER = {"id": IT_ID, "name": "IT manager", "email": "it@chips.example", "role": "it_manager"}
ME = {**CAD_MANAGER, "tenantId": TENANT_ID}

# --- what a client sends -------------------------------------------------------------------------

TOOL_IN = {"name": "iverilog", "version": "12.0"}
SERVICE_IN = {"name": "postgresql", "version": "16", "config": {"databaseName": "regressions"}}
SIZE_IN = {"numberOfNodes": 4, "nodeType": "medium"}
REQUEST_IN = {
    "name": "rtl-regression",
    "cloudProviderId": PROVIDER_ID,
    "size": SIZE_IN,
    "tools": [TOOL_IN],
    "services": [SERVICE_IN],
}
# Within the default self-service limit (at most 2 nodes, small or medium).
CLUSTER_IN = {
    "name": "lint-sandbox",
    "cloudProviderId": PROVIDER_ID,
    "type": "slurm",
    "size": {"numberOfNodes": 1, "nodeType": "small", "storage": 10},
    "tools": [{"name": "verilator", "version": "5.024"}],
    "services": [],
}
APPROVAL = {"status": "approved"}
REJECTION = {"status": "rejected", "rejectionReason": "Four medium nodes are over this quarter's budget; two will do."}
NOTE_IN = {"note": "Needed for the full regression before the tape-out review."}
CLOUD_PROVIDER_IN = {"name": "aws-eu", "kind": "aws", "region": "eu-west-1", "config": {"sshCidr": "198.51.100.0/24"}}
GRANT_IN = {"amount": 5000, "note": "budget for the next quarter"}

# --- what the API answers ------------------------------------------------------------------------

SIZE = {**SIZE_IN, "storage": 10}
CLUSTER_SIZE = {**SIZE, "nodesUp": 4}
SCALING = {"minNodes": 1, "idleSeconds": 600}
EXTEND_IN = {"until": "2019-09-24T14:40:03Z"}
RESIZE_IN = {"size": {"numberOfNodes": 4}, "scaling": {"minNodes": 0, "idleSeconds": 600}}
NOTE = {"time": "2019-08-24T14:40:03Z", "by": IT_MANAGER, "note": NOTE_IN["note"]}
CREDIT_ESTIMATE = {"ratePerHour": 8.502, "runwayDaysBefore": 34.7, "runwayDaysAfter": 20.3}
REQUESTED_TOOL = {"id": TOOL_ID, **TOOL_IN}
REQUESTED_SERVICE = {"id": SERVICE_ID, **SERVICE_IN, "status": "pending", "credentials": {}}
CLUSTER_REQUEST = {
    "id": REQUEST_ID,
    "name": "rtl-regression",
    "cloudProviderId": PROVIDER_ID,
    "size": SIZE,
    "tools": [REQUESTED_TOOL],
    "services": [REQUESTED_SERVICE],
    "status": "approved",
    "requestedBy": CAD_MANAGER,
    "approvedBy": IT_MANAGER,
    "requestedAt": REQUESTED_AT,
    "approvedAt": APPROVED_AT,
    "notes": [NOTE],
    "clusterId": CLUSTER_ID,
    "estimatedCredits": CREDIT_ESTIMATE,
}
TOOL = {"id": TOOL_ID, **TOOL_IN, "status": "installed"}
# Credentials are shown to the cluster's creator and IT managers, once the service runs (these are fake).
SERVICE = {
    "id": SERVICE_ID,
    **SERVICE_IN,
    "status": "running",
    "credentials": {
        "host": "rtl-regression-head.sim.internal",
        "port": 5432,
        "username": "hpcinfra",
        "password": "example-password",
        "database": "regressions",
    },
}
CLUSTER = {
    "id": CLUSTER_ID,
    "name": "rtl-regression",
    "cloudProviderId": PROVIDER_ID,
    "type": "slurm",
    "size": CLUSTER_SIZE,
    "nodes": [{"name": f"node-{i}", "state": "up"} for i in range(4)],
    "status": "available",
    "tools": [TOOL],
    "services": [SERVICE],
    "createdAt": APPROVED_AT,
    "createdBy": CAD_MANAGER,
    "requestId": REQUEST_ID,
    "outputs": {
        "headNode": "rtl-regression-head.sim.internal",
        "nodeIds": ["node-0", "node-1", "node-2", "node-3"],
        "storageId": "rtl-regression-storage",
    },
    "estimatedCredits": CREDIT_ESTIMATE,
}
CLUSTER_EVENT = {"step": "status", "status": "available", "time": AVAILABLE_AT, "message": "cluster is available"}
CLOUD_PROVIDER = {"id": PROVIDER_ID, **CLOUD_PROVIDER_IN}

_CPU = {"utilizationPercent": 62.5, "allocatedCores": 16}
_MEMORY = {"utilizationPercent": 40.0, "allocatedGB": 64}
_STORAGE = {"utilizationPercent": 12.5, "allocatedGB": 10}
METRICS = {
    "timeRange": {"start": "2019-08-24T14:00:00Z", "end": "2019-08-24T16:00:00Z", "interval": "hour"},
    "metrics": [
        {
            "timestamp": "2019-08-24T14:00:00Z",
            "cpu": _CPU,
            "memory": _MEMORY,
            "storage": _STORAGE,
            "credits": {"consumed": 8.502, "rate": 8.502},
        },
        {
            "timestamp": "2019-08-24T15:00:00Z",
            "cpu": {**_CPU, "utilizationPercent": 87.5},
            "memory": {**_MEMORY, "utilizationPercent": 55.0},
            "storage": _STORAGE,
            "credits": {"consumed": 8.502, "rate": 8.502},
        },
    ],
}
METRICS_SUMMARY = {
    "current": {"cpu": _CPU, "memory": _MEMORY, "storage": _STORAGE},
    "credits": {"totalConsumed": 17.004, "currentRate": 8.502, "estimatedDaily": 204.048, "estimatedMonthly": 6121.44},
    "budget": {"balance": 9982.996, "policy": "flag", "overBudget": False},
}
ANALYTICS = {
    "overview": {"totalClusters": 3, "activeClusters": 2, "totalUsers": 4, "activeUsers": 2},
    "resources": {
        "totalCores": 18,
        "totalMemoryGB": 72,
        "totalStorageGB": 20,
        "averageUtilization": {"cpu": 58.3, "memory": 41.2, "storage": 12.5},
    },
    "credits": {
        "balance": 9982.996,
        "consumed": {"daily": 204.05, "weekly": 1428.34, "monthly": 6121.44},
        "forecast": {"nextWeek": 1428.34, "nextMonth": 6121.44},
        "policy": "flag",
        "exhausted": False,
    },
    "breakdown": {
        "byCluster": [
            {
                "clusterId": CLUSTER_ID,
                "name": "rtl-regression",
                "creditsConsumed": 17.004,
                "utilizationPercent": 75.0,
                "overBudget": False,
            }
        ],
        "byUser": [{"userId": CAD_ID, "name": "CAD manager", "creditsConsumed": 17.004}],
    },
}
LEDGER_ENTRY = {
    "id": 42,
    "kind": "grant",
    "amount": 5000.0,
    "note": GRANT_IN["note"],
    "byId": ADMIN_ID,
    "time": REQUESTED_AT,
}
CREDIT_ACCOUNT = {
    "tenantId": TENANT_ID,
    "balance": 9982.996,
    "policy": "flag",
    "entries": [
        {
            "id": 43,
            "kind": "consumption",
            "amount": -8.502,
            "clusterId": CLUSTER_ID,
            "periodStart": "2019-08-24T15:00:00Z",
            "periodEnd": "2019-08-24T16:00:00Z",
            "time": "2019-08-24T16:00:05Z",
        },
        LEDGER_ENTRY,
    ],
}
AUDIT_EVENT = {
    "id": 7,
    "tenantId": TENANT_ID,
    "actorId": IT_ID,
    "action": "request.approve",
    "target": f"request {REQUEST_ID}",
    "source": "api 192.0.2.10",
    "detail": {"cluster": CLUSTER_ID},
    "time": APPROVED_AT,
}

# One of each (GET /catalog lists them all).
CATALOG = {
    "nodeTypes": [
        {
            "name": "small",
            "vcpus": 2,
            "memoryGb": 8,
            "creditsPerHour": 1.0,
            "instanceTypes": {"aws": "m6i.large", "gcp": "n2-standard-2", "azure": "Standard_D2s_v5"},
        }
    ],
    "tools": [
        {
            "name": "iverilog",
            "description": "Icarus Verilog simulator",
            "versions": ["12.0", "11.0"],
            "versionsByProvider": {"sim": ["12.0", "11.0"], "aws": ["12.0", "11.0"], "local": ["11.0"]},
            "creditsPerHour": 0.0,
        }
    ],
    "services": [
        {
            "name": "postgresql",
            "description": "PostgreSQL database",
            "versions": ["16", "15", "14"],
            "versionsByProvider": {"sim": ["16", "15", "14"], "aws": ["16", "15", "14"], "local": ["15"]},
            "creditsPerHour": 0.5,
            "port": 5432,
            "configKeys": [
                {
                    "name": "databaseName",
                    "description": "the database to create (default postgres)",
                    "pattern": "[a-z_][a-z0-9_]{0,62}",
                }
            ],
        }
    ],
    "storageCreditsPerGbHour": 0.0002,
    "providerNotes": {"sim": "a simulation: nothing is created anywhere"},
    "nodes": {"min": 1, "max": 64},
    "storageGb": {"min": 10, "max": 65536, "default": 10},
}
READY = {"status": "ok", "checks": {"database": "ok", "temporal": "ok"}}
NOT_READY = {"status": "unavailable", "checks": {"database": "ok", "temporal": "unavailable: RuntimeError"}}


# --- webhooks ------------------------------------------------------------------------------------------

WEBHOOK_ID = "5b7c9d1e-3f5a-4c8e-9d2b-6a4f8e0c1b37"
# .invalid never resolves (RFC 2606): an example copied as it is delivers nowhere.
WEBHOOK_IN = {"url": "https://hooks.invalid/hpcinfra", "events": ["cluster.available", "cluster.failed", "balance.low"]}
WEBHOOK = {
    "id": WEBHOOK_ID,
    "tenantId": TENANT_ID,
    **WEBHOOK_IN,
    "createdBy": IT_ID,
    "createdAt": APPROVED_AT,
}
WEBHOOK_CREATED = {**WEBHOOK, "secret": "example-signing-secret-shown-once"}
WEBHOOK_DELIVERY = {
    "id": "7e2a4c6b-8d0f-4a1c-b3e5-9f7d1c3a5e80",
    "eventId": "1d3f5b7a-9c2e-4f6a-8b0d-2e4c6a8f0b13",
    "eventType": "cluster.available",
    "occurredAt": AVAILABLE_AT,
    "status": "delivered",
    "attempts": 2,
    "lastStatusCode": 200,
    "lastError": None,
    "lastAttemptAt": "2019-08-24T15:09:53Z",
    "finishedAt": "2019-08-24T15:09:53Z",
}


def examples(*values: dict[str, Any]) -> dict[str, Any]:
    """`json_schema_extra` for a model: its examples, as JSON Schema's `examples` keyword."""
    return {"examples": list(values)}
