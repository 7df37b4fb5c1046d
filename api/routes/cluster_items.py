"""Tools and services of a cluster: listed from the database, added through the cluster's workflow."""

import uuid

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from api import schemas
from api.access import (
    NO_STORE,
    cluster_for,
    require_creator,
)
from api.deps import CredentialsDep, CurrentUser, SessionDep, TemporalDep, read_then_release, source_of
from api.errors import Problem, problems
from api.params import ClusterId, ServiceId
from api.workflow_calls import update
from core.enums import ClusterStatus, ServiceStatus
from core.messages import Registration, ServiceRequest, ToolRequest, cluster_workflow_id
from core.models import CloudProvider, Cluster, ClusterService, ClusterTool, User
from services import audit, permissions
from workflows.cluster import ClusterWorkflow

router = APIRouter(prefix="/clusters/{clusterId}", tags=["clusters"])


@router.get(
    "/tools", response_model=list[schemas.Tool], operation_id="listClusterTools", summary="List a cluster's tools"
)
def list_tools(cluster_id: ClusterId, session: SessionDep, user: CurrentUser) -> list[schemas.Tool]:
    """The cluster's tools and where their installs stand."""
    return [schemas.Tool.model_validate(t) for t in cluster_for(session, user, cluster_id).tools]


@router.post(
    "/tools",
    status_code=202,
    response_model=schemas.Tool,
    responses=problems(403, 409),
    operation_id="addClusterTool",
    summary="Install a tool on a cluster",
)
async def add_tool(
    cluster_id: ClusterId, body: schemas.ToolIn, session: SessionDep, user: CurrentUser, temporal: TemporalDep
) -> schemas.Tool:
    """Install a tool on an available cluster (its creator); the install runs in the cluster's workflow
    and the tool's `status` moves `pending`, `installing`, `installed` (or `failed`). The same tool
    again is the same tool (no second install); a failed one is tried again. A cluster that is not
    available is a 409."""
    cluster = await _available_for_creator(session, user, cluster_id, [(body.name, body.version)], [])
    registration = await _register(temporal, cluster, ClusterWorkflow.add_tool, ToolRequest(body.name, body.version))
    return await run_in_threadpool(_reload, session, ClusterTool, registration, schemas.Tool.model_validate)


@router.get(
    "/services",
    response_model=list[schemas.Service],
    operation_id="listClusterServices",
    summary="List a cluster's services",
)
def list_services(cluster_id: ClusterId, session: SessionDep, user: CurrentUser) -> list[schemas.Service]:
    """The cluster's services, without credentials (those are on the service's own detail)."""
    return [schemas.Service.from_row(s) for s in cluster_for(session, user, cluster_id).services]


@router.post(
    "/services",
    status_code=202,
    response_model=schemas.Service,
    responses=problems(403, 409),
    operation_id="addClusterService",
    summary="Start a service on a cluster",
)
async def add_service(
    cluster_id: ClusterId, body: schemas.ServiceIn, session: SessionDep, user: CurrentUser, temporal: TemporalDep
) -> schemas.Service:
    """Start a service on an available cluster (its creator), with credentials the platform generates:
    `GET /clusters/{clusterId}/services/{serviceId}` shows them once the service is `running`. A
    cluster that is not available is a 409."""
    cluster = await _available_for_creator(session, user, cluster_id, [], [(body.name, body.version)])
    wanted = ServiceRequest(body.name, body.version, body.config)
    registration = await _register(temporal, cluster, ClusterWorkflow.add_service, wanted)
    return await run_in_threadpool(_reload, session, ClusterService, registration, schemas.Service.from_row)


@router.get(
    "/services/{serviceId}",
    response_model=schemas.Service,
    operation_id="getClusterService",
    summary="Get a service, with its credentials",
)
def get_service(
    cluster_id: ClusterId,
    service_id: ServiceId,
    session: SessionDep,
    user: CurrentUser,
    credentials: CredentialsDep,
    http_request: Request,
    response: Response,
) -> schemas.Service:
    """One service, with its credentials for the cluster's creator and IT managers once it is running."""
    cluster = cluster_for(session, user, cluster_id)
    service = next((s for s in cluster.services if s.id == service_id), None)
    if service is None:
        raise Problem(404, f"cluster {cluster_id} has no service {service_id}")
    secret = None
    if permissions.may_see_credentials(user, cluster) and service.credentials_encrypted:
        secret = credentials.open(service.credentials_encrypted)
        if service.status == ServiceStatus.RUNNING:
            audit.credentials_read(session, user, cluster, [service.name], source_of(http_request))
            session.commit()
            response.headers["Cache-Control"] = NO_STORE
    return schemas.Service.from_row(service, secret)


async def _available_for_creator(
    session: Session, user: User, cluster_id: uuid.UUID, tools: list[tuple[str, str]], services: list[tuple[str, str]]
) -> Cluster:
    """The cluster, for its creator, if it is available and its provider offers the versions asked for."""
    what = "tools" if tools else "services"

    def read(session: Session) -> Cluster:
        cluster = cluster_for(session, user, cluster_id)
        require_creator(user, cluster, f"add {what}")
        permissions.require_offered(session.get_one(CloudProvider, cluster.cloud_provider_id), tools, services)
        return cluster

    cluster = await read_then_release(session, read)
    if cluster.status != ClusterStatus.AVAILABLE:
        raise Problem(409, f"the cluster is {cluster.status}; {what} can be added only to an available cluster")
    return cluster


async def _register(temporal, cluster: Cluster, method, wanted) -> Registration:
    handle = temporal.get_workflow_handle(cluster_workflow_id(str(cluster.id)))
    return await update(
        handle,
        method,
        wanted,
        refused="refused",
        ended=f"the workflow of this cluster is no longer running (see cluster-{cluster.id} in the Temporal UI)",
    )


def _reload(session: Session, model, registration: Registration, view):
    session.expire_all()
    return view(session.get_one(model, uuid.UUID(registration.item_id)))
