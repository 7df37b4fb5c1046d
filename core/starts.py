"""How each workflow starts, written once: its type name, id, input and search attributes.

Every starter goes through here: the API (a new request or cluster), the resume (what should run and
may not), the outbox (webhook deliveries), and the workflows themselves for their children (a request
starts its cluster, a cluster its metering: `start_child`).
The type names are the ones the workflow classes are registered under (`@workflow.defn(name=...)`),
so running workflows keep working whatever the classes are called.

`start(..., repair=True)` is the resume's way: a workflow that runs is left alone (USE_EXISTING), and
one that ended without finishing its work (an operator terminated it) is started again. Otherwise a
start is a new row's first: a workflow already running counts as started (the resume was first), and
one that ended is never started again (REJECT_DUPLICATE, raising WorkflowAlreadyStartedError, which
counts as started too).
"""

from dataclasses import dataclass
from typing import Any

from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.common import TypedSearchAttributes, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from core import search_attributes
from core.enums import ClusterStatus, RequestStatus
from core.messages import (
    ClusterInput,
    MeteringInput,
    RequestInput,
    cluster_workflow_id,
    metering_workflow_id,
    request_workflow_id,
)
from core.webhooks import DeliveryInput, delivery_workflow_id

REQUEST_WORKFLOW = "ClusterRequest"
CLUSTER_WORKFLOW = "Cluster"
METERING_WORKFLOW = "ClusterMetering"
DELIVERY_WORKFLOW = "WebhookDelivery"


@dataclass(frozen=True)
class Start:
    """One workflow's start, whoever starts it."""

    workflow: str
    arg: Any
    id: str
    search_attributes: TypedSearchAttributes


def request(request_id: str, tenant_id: str, expires_after_seconds: float) -> Start:
    """The approval workflow of a pending request, which expires it `expires_after_seconds` from now."""
    return Start(
        REQUEST_WORKFLOW,
        RequestInput(request_id, expires_after_seconds, tenant_id),
        request_workflow_id(request_id),
        search_attributes.labels(search_attributes.REQUEST, tenant_id, status=RequestStatus.PENDING),
    )


def cluster(cluster_id: str, tenant_id: str) -> Start:
    """The workflow of a pending cluster: started by the API (made without approval) or by its request's
    workflow (after the approval)."""
    return Start(
        CLUSTER_WORKFLOW,
        ClusterInput(cluster_id, tenant_id=tenant_id),
        cluster_workflow_id(cluster_id),
        search_attributes.labels(search_attributes.CLUSTER, tenant_id, cluster_id, ClusterStatus.PENDING),
    )


def metering(cluster_id: str, tenant_id: str) -> Start:
    """The metering of an available cluster (its cluster's workflow starts it; the resume repairs it)."""
    return Start(
        METERING_WORKFLOW,
        MeteringInput(cluster_id),
        metering_workflow_id(cluster_id),
        search_attributes.labels(search_attributes.METERING, tenant_id, cluster_id),
    )


def delivery(delivery_id: str, retry_initial: float, retry_maximum: float, give_up_after: float) -> Start:
    """The delivery of one webhook event to one webhook, with the retry policy it keeps to the end
    (seconds: the first wait, the longest wait, and how long it tries at all)."""
    return Start(
        DELIVERY_WORKFLOW,
        DeliveryInput(delivery_id, retry_initial, retry_maximum, give_up_after),
        delivery_workflow_id(delivery_id),
        TypedSearchAttributes.empty,
    )


async def start_child(start: Start, *, labelled: bool) -> None:
    """From inside a workflow: start `start` as a child that outlives its parent (ABANDON: a cluster outlives
    its request, a metering its cluster's run). One already running counts as started (the resume was
    first, or it still runs from earlier). `labelled`: whether the parent's run gives its child search
    attributes (not a run replayed from before they existed)."""
    try:
        await workflow.start_child_workflow(
            start.workflow,
            start.arg,
            id=start.id,
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            search_attributes=start.search_attributes if labelled else None,
        )
    except WorkflowAlreadyStartedError:
        pass


async def start(client: Client, task_queue: str, what: Start, *, repair: bool) -> WorkflowHandle:
    policies: dict[str, Any] = {"id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING}
    if not repair:
        policies["id_reuse_policy"] = WorkflowIDReusePolicy.REJECT_DUPLICATE
    return await client.start_workflow(
        what.workflow,
        what.arg,
        id=what.id,
        task_queue=task_queue,
        search_attributes=what.search_attributes,
        **policies,
    )
