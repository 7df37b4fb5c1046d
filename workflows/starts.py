"""Starting each workflow from outside Temporal (client-side code, as services/resume.py; no workflow
imports it): its id, input, task queue and search attributes in one place, for the API (a new request or
cluster), the resume (what should run and may not) and the worker.

`repair` is the resume's way: a workflow that runs is left alone (USE_EXISTING), and one that ended
without finishing its work (an operator terminated it) is started again. Otherwise a start is a new
row's first: a workflow already running counts as started (the resume was first), and one that ended is
never started again (REJECT_DUPLICATE, raising WorkflowAlreadyStartedError, which counts as started too).
"""

from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from core import search_attributes
from core.messages import (
    ClusterInput,
    MeteringInput,
    RequestInput,
    cluster_workflow_id,
    metering_workflow_id,
    request_workflow_id,
)
from workflows.cluster import ClusterWorkflow
from workflows.metering import MeteringWorkflow
from workflows.request import RequestWorkflow


def _policies(repair: bool) -> dict[str, Any]:
    if repair:
        return {"id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING}
    return {
        "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
        "id_reuse_policy": WorkflowIDReusePolicy.REJECT_DUPLICATE,
    }


async def start_request(
    client: Client, task_queue: str, request_id: str, tenant_id: str, expires_after_seconds: float, *, repair: bool
) -> WorkflowHandle:
    """The approval workflow of a pending request, which expires it `expires_after_seconds` from now."""
    return await client.start_workflow(
        RequestWorkflow.run,
        RequestInput(request_id, expires_after_seconds, tenant_id),
        id=request_workflow_id(request_id),
        task_queue=task_queue,
        search_attributes=search_attributes.labels(search_attributes.REQUEST, tenant_id, status="pending"),
        **_policies(repair),
    )


async def start_cluster(
    client: Client, task_queue: str, cluster_id: str, tenant_id: str, *, repair: bool
) -> WorkflowHandle:
    """The workflow of a pending cluster (an approved one is started by its request's workflow)."""
    return await client.start_workflow(
        ClusterWorkflow.run,
        ClusterInput(cluster_id, tenant_id=tenant_id),
        id=cluster_workflow_id(cluster_id),
        task_queue=task_queue,
        search_attributes=search_attributes.labels(search_attributes.CLUSTER, tenant_id, cluster_id, "pending"),
        **_policies(repair),
    )


async def start_metering(client: Client, task_queue: str, cluster_id: str, tenant_id: str) -> WorkflowHandle:
    """The metering of an available cluster (its cluster's workflow starts it; the resume repairs it)."""
    return await client.start_workflow(
        MeteringWorkflow.run,
        MeteringInput(cluster_id),
        id=metering_workflow_id(cluster_id),
        task_queue=task_queue,
        search_attributes=search_attributes.labels(search_attributes.METERING, tenant_id, cluster_id),
        **_policies(repair=True),
    )
