"""Who sees what: tenant scoping and the per-role rules of the API contract.

Objects of another tenant, or ones the caller may not see, are answered with 404, never 403,
so that nobody learns that they exist.
"""

import uuid

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from api.errors import Problem
from api.schemas import ClusterIn, RequestIn
from core import catalog
from core.models import CloudProvider, Cluster, ClusterRequest, User
from services import audit
from services.store import may_see_request


def _visible(model, owner, user: User) -> Select:
    """Admins see everything; others their tenant's; a CAD manager only what it owns (`owner`)."""
    query = select(model)
    if user.role == "admin":
        return query
    query = query.where(model.tenant_id == user.tenant_id)
    return query.where(owner == user.id) if user.role == "cad_manager" and owner is not None else query


def requests_visible_to(user: User) -> Select[tuple[ClusterRequest]]:
    return _visible(ClusterRequest, ClusterRequest.requested_by_id, user)


def clusters_visible_to(user: User) -> Select[tuple[Cluster]]:
    return _visible(Cluster, Cluster.created_by_id, user)


def providers_visible_to(user: User) -> Select[tuple[CloudProvider]]:
    return _visible(CloudProvider, None, user)


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


def provider_for_new_cluster(session: Session, user: User, body: RequestIn | ClusterIn) -> CloudProvider:
    """The cloud provider a new request or cluster names, which must belong to the caller's tenant and
    offer the versions of the tools and services it asks for."""
    provider = session.get(CloudProvider, body.cloud_provider_id)
    if provider is None or provider.tenant_id != user.tenant_id:
        raise Problem(
            422,
            f"cloudProviderId {body.cloud_provider_id} is not a cloud provider of your tenant; "
            "GET /api/v1/cloud-providers lists them",
        )
    require_offered(provider, [(t.name, t.version) for t in body.tools], [(s.name, s.version) for s in body.services])
    return provider


def require_offered(provider: CloudProvider, tools: list[tuple[str, str]], services: list[tuple[str, str]]) -> None:
    """A 422 for a tool or service version that the provider's kind does not install (the catalog's
    versionsByProvider), naming the versions it does."""
    try:
        catalog.check_offered(provider.kind, tools, services)
    except ValueError as e:
        raise Problem(422, f"{e} (GET /api/v1/catalog lists versionsByProvider)") from None


def require_creator(user: User, cluster: Cluster, action: str) -> None:
    if cluster.created_by_id != user.id:
        raise Problem(403, f"only the cluster's creator may {action}")


def audit_credentials_read(session: Session, user: User, cluster: Cluster, services: list[str], source: str) -> None:
    """Service credentials were shown to `user`: the audit log says so (which services, never the secrets)."""
    audit.record(
        session, cluster.tenant_id, user.id, "credentials.read", f"cluster {cluster.id}", source, services=services
    )
    session.commit()


# An answer that shows credentials: no cache (a browser's, a proxy's) may keep it.
NO_STORE = "no-store"


def may_see_credentials(user: User, cluster: Cluster) -> bool:
    """Service credentials are for the cluster's creator and its tenant's IT managers, nobody else."""
    return cluster.created_by_id == user.id or (user.role == "it_manager" and user.tenant_id == cluster.tenant_id)
