"""Starting, from the database, the workflows that should be running and may not be (client-side code:
the worker and the API run it when they start; no workflow imports it).

- A request still `pending` whose workflow never started: the API that wrote it stopped before it could
  start the workflow. Its expiry counts from when it was filed.
- A cluster made without approval, still `pending`, likewise (approved clusters are started by their
  request's workflow, which is durable).
- An `available` cluster without metering: available from before metering existed, or its metering
  was terminated by an operator.
- A webhook delivery never attempted: the process that wrote it could not start its workflow
  (hpcinfra/outbox.py).

Each is started with its usual id and `USE_EXISTING`, so a workflow that runs is left alone, and
running this any number of times, from any number of processes, starts each at most once. Each starts
with its search attributes (hpcinfra/search_attributes.py), as when the API starts it.
"""

import asyncio
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from hpcinfra import outbox, search_attributes
from hpcinfra.db import transaction
from hpcinfra.messages import (
    ClusterInput,
    MeteringInput,
    RequestInput,
    cluster_workflow_id,
    metering_workflow_id,
    request_workflow_id,
)
from hpcinfra.models import Cluster, ClusterRequest, utcnow
from hpcinfra.settings import Settings
from workflows.cluster import ClusterWorkflow
from workflows.metering import MeteringWorkflow
from workflows.request import RequestWorkflow


async def resume_workflows(client: Client, sessions: sessionmaker[Session], settings: Settings) -> dict[str, int]:
    """Start what should run; returns how many of each kind were asked for (running ones included)."""
    requests, clusters, metered = await asyncio.to_thread(_what_should_run, sessions, settings.request_expiry)
    start = dict(task_queue=settings.task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
    for request_id, tenant_id, left in requests:
        await client.start_workflow(
            RequestWorkflow.run,
            RequestInput(request_id, left, tenant_id),
            id=request_workflow_id(request_id),
            search_attributes=search_attributes.labels(search_attributes.REQUEST, tenant_id, status="pending"),
            **start,
        )
    for cluster_id, tenant_id in clusters:
        await client.start_workflow(
            ClusterWorkflow.run,
            ClusterInput(cluster_id, tenant_id=tenant_id),
            id=cluster_workflow_id(cluster_id),
            search_attributes=search_attributes.labels(search_attributes.CLUSTER, tenant_id, cluster_id, "pending"),
            **start,
        )
    for cluster_id, tenant_id in metered:
        await client.start_workflow(
            MeteringWorkflow.run,
            MeteringInput(cluster_id),
            id=metering_workflow_id(cluster_id),
            search_attributes=search_attributes.labels(search_attributes.METERING, tenant_id, cluster_id),
            **start,
        )
    deliveries = await asyncio.to_thread(outbox.undelivered, sessions)
    await outbox.start_deliveries(client, settings, deliveries)
    return {
        "requests": len(requests),
        "clusters": len(clusters),
        "metering": len(metered),
        "webhook deliveries": len(deliveries),
    }


def _what_should_run(
    sessions: sessionmaker[Session], expiry: timedelta
) -> tuple[list[tuple[str, str, float]], list[tuple[str, str]], list[tuple[str, str]]]:
    """(request id, tenant id, seconds left before it expires), then (cluster id, tenant id) twice."""
    now = utcnow()
    with transaction(sessions) as session:
        pending = session.execute(
            select(ClusterRequest.id, ClusterRequest.tenant_id, ClusterRequest.requested_at).where(
                ClusterRequest.status == "pending"
            )
        ).all()
        requests = [(str(i), str(t), max(0.0, (expiry - (now - filed)).total_seconds())) for i, t, filed in pending]
        clusters = [
            (str(i), str(t))
            for i, t in session.execute(
                select(Cluster.id, Cluster.tenant_id).where(Cluster.status == "pending", Cluster.request_id.is_(None))
            )
        ]
        session.execute(
            update(Cluster)
            .where(Cluster.status == "available", Cluster.metering_from.is_(None))
            .values(metering_from=now)
        )
        metered = [
            (str(i), str(t))
            for i, t in session.execute(select(Cluster.id, Cluster.tenant_id).where(Cluster.status == "available"))
        ]
    return requests, clusters, metered
