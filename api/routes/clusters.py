"""Clusters: listed and read from the database; created directly within the self-service limit."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from api import schemas
from api.access import cluster_for, clusters_visible_to, provider_for_new_cluster
from api.deps import CurrentUser, SessionDep, SettingsDep, TemporalDep, require_role
from api.errors import Problem
from api.pagination import Page
from api.starting import start_or_take_back
from hpcinfra.messages import ClusterInput, cluster_workflow_id
from hpcinfra.models import Cluster, ClusterEvent, ClusterService, ClusterTool
from workflows.cluster import ClusterWorkflow

ClusterId = Annotated[uuid.UUID, Path(alias="clusterId")]

router = APIRouter(prefix="/clusters", tags=["clusters"])


@router.get("", response_model=list[schemas.Cluster])
def list_clusters(
    session: SessionDep,
    user: CurrentUser,
    page: Page,
    status: schemas.ClusterStatus | None = None,
    cloud_provider_id: Annotated[uuid.UUID | None, Query(alias="cloudProviderId")] = None,
) -> list[schemas.Cluster]:
    """The caller's clusters: a CAD manager those it created, an IT manager all of its tenant's."""
    query = clusters_visible_to(user)
    if status is not None:
        query = query.where(Cluster.status == status)
    if cloud_provider_id is not None:
        query = query.where(Cluster.cloud_provider_id == cloud_provider_id)
    rows = session.scalars(page.apply(query.order_by(Cluster.created_at.desc(), Cluster.id)))
    return [schemas.Cluster.from_row(c) for c in rows]


@router.post("", status_code=201, response_model=schemas.Cluster)
async def create_cluster(
    body: schemas.ClusterIn, session: SessionDep, user: CurrentUser, temporal: TemporalDep, settings: SettingsDep
) -> schemas.Cluster:
    """Create a cluster without approval, within the tenant's self-service limit; above it, file a request."""
    require_role(user, "cad_manager", action="create clusters")
    size = body.size
    if size.number_of_nodes > settings.self_service_max_nodes or size.node_type not in settings.self_service_node_types:
        raise Problem(
            403,
            f"a cluster of {size.number_of_nodes} x {size.node_type} is above the self-service limit "
            f"(at most {settings.self_service_max_nodes} nodes of {', '.join(settings.self_service_node_types)}); "
            "file a request with POST /api/v1/requests for an IT manager to approve",
        )

    def insert() -> Cluster:
        provider_for_new_cluster(session, user, body.cloud_provider_id)
        cluster = Cluster(
            tenant_id=user.tenant_id,
            name=body.name,
            cloud_provider_id=body.cloud_provider_id,
            number_of_nodes=size.number_of_nodes,
            node_type=size.node_type,
            storage_gb=size.storage,
            created_by_id=user.id,
            tools=[ClusterTool(name=t.name, version=t.version) for t in body.tools],
            services=[ClusterService(name=s.name, version=s.version, config=s.config) for s in body.services],
        )
        session.add(cluster)
        session.commit()
        return cluster

    cluster = await run_in_threadpool(insert)
    start = temporal.start_workflow(
        ClusterWorkflow.run,
        ClusterInput(cluster_id=str(cluster.id)),
        id=cluster_workflow_id(str(cluster.id)),
        task_queue=settings.task_queue,
    )
    await start_or_take_back(start, session, cluster, "cluster")
    return await run_in_threadpool(lambda: schemas.Cluster.from_row(cluster))


@router.get("/{clusterId}", response_model=schemas.Cluster)
def get_cluster(cluster_id: ClusterId, session: SessionDep, user: CurrentUser) -> schemas.Cluster:
    return schemas.Cluster.from_row(cluster_for(session, user, cluster_id))


@router.get("/{clusterId}/events", response_model=list[schemas.ClusterEvent])
def list_events(
    cluster_id: ClusterId, session: SessionDep, user: CurrentUser, page: Page
) -> list[schemas.ClusterEvent]:
    """The durable step log of the cluster's provisioning, oldest first."""
    cluster = cluster_for(session, user, cluster_id)
    query = select(ClusterEvent).where(ClusterEvent.cluster_id == cluster.id).order_by(ClusterEvent.id)
    return [schemas.ClusterEvent.model_validate(e) for e in session.scalars(page.apply(query))]


@router.get("/{clusterId}/tools", response_model=list[schemas.Tool])
def list_tools(cluster_id: ClusterId, session: SessionDep, user: CurrentUser) -> list[schemas.Tool]:
    return [schemas.Tool.model_validate(t) for t in cluster_for(session, user, cluster_id).tools]


@router.get("/{clusterId}/services", response_model=list[schemas.Service])
def list_services(cluster_id: ClusterId, session: SessionDep, user: CurrentUser) -> list[schemas.Service]:
    return [schemas.Service.model_validate(s) for s in cluster_for(session, user, cluster_id).services]
