"""Clusters: listed and read from the database; created directly within the self-service limit;
deleted and retried through their workflow."""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.orm import Session
from temporalio.client import Client

from api import schemas
from api.access import NO_STORE, cluster_for
from api.deps import (
    CredentialsDep,
    CurrentUser,
    SessionDep,
    SettingsDep,
    TemporalDep,
    ask_of,
    read_then_release,
    require_role,
    source_of,
)
from api.errors import Problem, problems
from api.estimates import Estimates
from api.pagination import Page
from api.params import ClusterId
from api.workflow_calls import create_and_start, update
from core import starts
from core.enums import ClusterStatus, Role, ServiceStatus
from core.messages import LeaseExtension, ResizeAsk, cluster_workflow_id
from core.models import Cluster, ClusterEvent, User, utcnow
from core.providers import Scaling
from services import audit, clusters
from services.permissions import clusters_visible_to, may_see_credentials
from workflows.cluster import ClusterWorkflow

router = APIRouter(prefix="/clusters", tags=["clusters"])


@router.get("", response_model=list[schemas.Cluster], operation_id="listClusters", summary="List clusters")
def list_clusters(
    session: SessionDep,
    user: CurrentUser,
    page: Page,
    status: schemas.ClusterStatus | None = None,
    cloud_provider_id: Annotated[uuid.UUID | None, Query(alias="cloudProviderId")] = None,
) -> list[schemas.Cluster]:
    """The caller's clusters, newest first: a CAD manager those it created, an IT manager all of its
    tenant's. Filter by `status` and `cloudProviderId`; page with `limit` and `offset`."""
    query = clusters_visible_to(user)
    if status is not None:
        query = query.where(Cluster.status == status)
    if cloud_provider_id is not None:
        query = query.where(Cluster.cloud_provider_id == cloud_provider_id)
    rows = session.scalars(page.apply(query.order_by(Cluster.created_at.desc(), Cluster.id.desc())))
    estimates = Estimates(session)
    return [schemas.Cluster.from_row(c, estimates.of_cluster(c)) for c in rows]


@router.post(
    "",
    status_code=201,
    response_model=schemas.Cluster,
    responses=problems(403, 409),
    operation_id="createCluster",
    summary="Create a cluster within the self-service limit",
)
async def create_cluster(
    body: schemas.ClusterIn,
    session: SessionDep,
    user: CurrentUser,
    temporal: TemporalDep,
    settings: SettingsDep,
    http_request: Request,
) -> schemas.Cluster:
    """Create a cluster without approval (CAD managers), within the tenant's self-service limit; above it
    the answer is a 403 that says to file a request. The cluster starts `pending` and is provisioned
    in the background: poll `GET /clusters/{clusterId}` until it is `available` (or `error`). A
    tenant whose credits would not last is refused with a 409."""
    require_role(user, Role.CAD_MANAGER, action="create clusters")
    ask = ask_of(body)
    # Before anything else, so that the retry of a call that made its cluster is held to the limit of now too.
    clusters.require_self_service(ask.number_of_nodes, ask.node_type, settings)
    cluster = await create_and_start(
        "cluster", session, user, http_request, temporal, settings,
        create=lambda: (clusters.create_cluster(session, user, ask, settings, source_of(http_request)), []),
        find=cluster_for,
        workflow=lambda cluster: starts.cluster(str(cluster.id), str(cluster.tenant_id)),
    )  # fmt: skip
    return await run_in_threadpool(lambda: schemas.Cluster.from_row(cluster, Estimates(session).of_cluster(cluster)))


@router.get("/{clusterId}", response_model=schemas.Cluster, operation_id="getCluster", summary="Get a cluster")
def get_cluster(
    cluster_id: ClusterId,
    session: SessionDep,
    user: CurrentUser,
    credentials: CredentialsDep,
    http_request: Request,
    response: Response,
) -> schemas.Cluster:
    """The cluster, for its creator and the tenant's IT managers, with its services' credentials once
    they run. `status` moves `pending`, `provisioning`, `available`, or `error` with a
    `statusReason`."""
    cluster = cluster_for(session, user, cluster_id)
    secrets = {}
    if may_see_credentials(user, cluster):
        secrets = {s.id: credentials.open(s.credentials_encrypted) for s in cluster.services if s.credentials_encrypted}
        shown = [s.name for s in cluster.services if s.id in secrets and s.status == ServiceStatus.RUNNING]
        if shown:
            audit.credentials_read(session, user, cluster, shown, source_of(http_request))
            session.commit()
            response.headers["Cache-Control"] = NO_STORE
    return schemas.Cluster.from_row(cluster, Estimates(session).of_cluster(cluster), secrets)


@router.delete(
    "/{clusterId}",
    status_code=202,
    response_model=schemas.Cluster,
    responses=problems(409),
    operation_id="deleteCluster",
    summary="Delete a cluster",
)
async def delete_cluster(
    cluster_id: ClusterId, session: SessionDep, user: CurrentUser, temporal: TemporalDep, http_request: Request
) -> schemas.Cluster:
    """Tear the cluster down (its creator, IT managers): `deleting`, then `deleted` with its services
    `stopped`. Deleting a cluster that is already going away changes nothing."""
    cluster = await read_then_release(session, cluster_for, user, cluster_id)
    if cluster.status not in (ClusterStatus.DELETING, ClusterStatus.DELETED):
        await _ask_workflow(temporal, cluster_id, ClusterWorkflow.delete, refused="the cluster cannot be deleted now")

        def note() -> None:
            audit.record(
                session, cluster.tenant_id, user.id, "cluster.delete", f"cluster {cluster_id}", source_of(http_request)
            )
            session.commit()

        await run_in_threadpool(note)
    return await run_in_threadpool(_reloaded, session, user, cluster_id)


@router.post(
    "/{clusterId}/retry",
    status_code=202,
    response_model=schemas.Cluster,
    responses=problems(409),
    operation_id="retryCluster",
    summary="Provision a cluster in error again",
)
async def retry_cluster(
    cluster_id: ClusterId, session: SessionDep, user: CurrentUser, temporal: TemporalDep
) -> schemas.Cluster:
    """Provision a cluster in `error` again, without a new approval (extension); any other status is
    a 409."""
    cluster = await read_then_release(session, cluster_for, user, cluster_id)
    if cluster.status != ClusterStatus.ERROR:
        raise Problem(409, f"the cluster is {cluster.status}; only a cluster in error can be retried")
    await _ask_workflow(temporal, cluster_id, ClusterWorkflow.retry, refused="the cluster cannot be retried")
    return await run_in_threadpool(_reloaded, session, user, cluster_id)


@router.post(
    "/{clusterId}/extend",
    response_model=schemas.Cluster,
    responses=problems(403, 409, 422),
    operation_id="extendCluster",
    summary="Extend a cluster's lease",
)
async def extend_cluster(
    cluster_id: ClusterId,
    body: schemas.ExtendIn,
    session: SessionDep,
    user: CurrentUser,
    temporal: TemporalDep,
    http_request: Request,
) -> schemas.Cluster:
    """Move the end of an available cluster's lease later (extension): its creator, within the longest
    lease the operator allows (beyond it, a 403 that says to ask an IT manager); the tenant's IT managers,
    to any time. Its warning (`cluster.expiring`) is given again before the new end."""
    cluster = await read_then_release(session, cluster_for, user, cluster_id)  # a CAD manager sees only its own
    if cluster.status != ClusterStatus.AVAILABLE:
        raise Problem(409, f"the cluster is {cluster.status}; only an available cluster's lease can be extended")
    extension = LeaseExtension(
        str(cluster_id), body.until, str(user.id), source_of(http_request), str(uuid.uuid4()), utcnow()
    )
    await _ask_workflow(
        temporal, cluster_id, ClusterWorkflow.extend, extension, refused="the lease cannot be extended now"
    )
    return await run_in_threadpool(_reloaded, session, user, cluster_id)


@router.patch(
    "/{clusterId}",
    response_model=schemas.Cluster,
    responses=problems(403, 409, 422),
    operation_id="resizeCluster",
    summary="Resize a running cluster",
)
async def resize_cluster(
    cluster_id: ClusterId,
    body: schemas.ResizeIn,
    session: SessionDep,
    user: CurrentUser,
    temporal: TemporalDep,
    settings: SettingsDep,
    http_request: Request,
) -> schemas.Cluster:
    """Change an available cluster's most nodes and its scaling (extension): its creator, within the
    self-service limit (beyond it, a 403 that says to file a request naming `resizesClusterId`); the
    tenant's IT managers, to any size. Growth is held to the tenant's credits (409). Nodes a shrink removes
    take no new jobs and go once their jobs have finished; the step log (`/events`) shows the resize."""
    cluster = await read_then_release(session, cluster_for, user, cluster_id)  # a CAD manager sees only its own
    if cluster.status != ClusterStatus.AVAILABLE:
        raise Problem(409, f"the cluster is {cluster.status}; only an available cluster can be resized")
    scaling = ... if "scaling" not in body.model_fields_set else body.scaling and Scaling(**body.scaling.model_dump())
    to = clusters.resize_of(cluster, body.size.number_of_nodes, scaling)
    if user.role == Role.CAD_MANAGER:
        clusters.require_self_service(to.number_of_nodes, cluster.node_type, settings, resizes=cluster.id)
    ask = ResizeAsk(str(cluster_id), to, str(user.id), source_of(http_request), str(uuid.uuid4()), utcnow())
    await _ask_workflow(temporal, cluster_id, ClusterWorkflow.resize, ask, refused="the cluster cannot be resized now")
    return await run_in_threadpool(_reloaded, session, user, cluster_id)


async def _ask_workflow(temporal: Client, cluster_id: uuid.UUID, method, *args: Any, refused: str) -> None:
    """An update of the cluster's workflow (api/workflow_calls.py `update`: its refusals as answers)."""
    await update(
        temporal.get_workflow_handle(cluster_workflow_id(str(cluster_id))),
        method,
        *args,
        refused=refused,
        ended=f"the workflow of this cluster is no longer running (see cluster-{cluster_id} in the Temporal UI)",
    )


def _reloaded(session: Session, user: User, cluster_id: uuid.UUID) -> schemas.Cluster:
    """The cluster as the workflow left it, without credentials (answers to changes carry none)."""
    session.expire_all()
    cluster = cluster_for(session, user, cluster_id)
    return schemas.Cluster.from_row(cluster, Estimates(session).of_cluster(cluster))


@router.get(
    "/{clusterId}/events",
    response_model=list[schemas.ClusterEvent],
    operation_id="listClusterEvents",
    summary="List a cluster's provisioning steps",
)
def list_events(
    cluster_id: ClusterId, session: SessionDep, user: CurrentUser, page: Page
) -> list[schemas.ClusterEvent]:
    """The durable step log of the cluster: provisioning, installs and teardown, oldest first."""
    cluster = cluster_for(session, user, cluster_id)
    query = select(ClusterEvent).where(ClusterEvent.cluster_id == cluster.id).order_by(ClusterEvent.id)
    return [schemas.ClusterEvent.model_validate(e) for e in session.scalars(page.apply(query))]
