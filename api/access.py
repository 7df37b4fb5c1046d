"""Who sees what: tenant scoping and the per-role rules of the API contract.

Objects of another tenant, or ones the caller may not see, are answered with 404, never 403,
so that nobody learns that they exist.
"""

import uuid

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from api.errors import Problem
from hpcinfra.models import CloudProvider, Cluster, ClusterRequest, User
from hpcinfra.store import may_see_request


def requests_visible_to(user: User) -> Select[tuple[ClusterRequest]]:
    query = select(ClusterRequest)
    if user.role == "admin":
        return query
    query = query.where(ClusterRequest.tenant_id == user.tenant_id)
    if user.role == "cad_manager":
        query = query.where(ClusterRequest.requested_by_id == user.id)
    return query


def clusters_visible_to(user: User) -> Select[tuple[Cluster]]:
    query = select(Cluster)
    if user.role == "admin":
        return query
    query = query.where(Cluster.tenant_id == user.tenant_id)
    if user.role == "cad_manager":
        query = query.where(Cluster.created_by_id == user.id)
    return query


def providers_visible_to(user: User) -> Select[tuple[CloudProvider]]:
    query = select(CloudProvider)
    return query if user.role == "admin" else query.where(CloudProvider.tenant_id == user.tenant_id)


def request_for(session: Session, user: User, request_id: uuid.UUID) -> ClusterRequest:
    request = session.get(ClusterRequest, request_id)
    if request is None or not may_see_request(user, request):
        raise Problem(404, f"there is no request {request_id} that you can see")
    return request


def cluster_for(session: Session, user: User, cluster_id: uuid.UUID) -> Cluster:
    cluster = session.scalar(clusters_visible_to(user).where(Cluster.id == cluster_id))
    if cluster is None:
        raise Problem(404, f"there is no cluster {cluster_id} that you can see")
    return cluster


def provider_for_new_cluster(session: Session, user: User, provider_id: uuid.UUID) -> CloudProvider:
    """The cloud provider a new request or cluster names, which must belong to the caller's tenant."""
    provider = session.get(CloudProvider, provider_id)
    if provider is None or provider.tenant_id != user.tenant_id:
        raise Problem(
            422,
            f"cloudProviderId {provider_id} is not a cloud provider of your tenant; GET /api/v1/cloud-providers lists them",
        )
    return provider
