"""Who may see and do what, for the API and the activities alike: the queries that scope rows to a user,
and the per-role checks.

Nothing here speaks HTTP: the API turns a row that is not visible into a 404 (never a 403, so that nobody
learns that it exists; api/access.py) and a refusal (core.refusals.Refused) into the status of its kind.
"""

import uuid

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from core import catalog
from core.enums import Role
from core.models import CloudProvider, Cluster, ClusterRequest, Tenant, User
from core.refusals import Refused


def parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None


def find_user(session: Session, tenant_id: uuid.UUID, who: str) -> User | None:
    """A user named by id or e-mail address, as people signalling from the Temporal UI do.
    An admin acts in every tenant, so an admin's id is found whatever the tenant."""
    user_id = parse_uuid(who)
    if user_id is not None:
        user = session.get(User, user_id)
        if user is not None and (user.tenant_id == tenant_id or user.role == Role.ADMIN):
            return user
        return None
    return session.scalar(select(User).where(User.tenant_id == tenant_id, User.email == who.strip().lower()))


# --- what a user may see -------------------------------------------------------------------------


def may_see_tenant(user: User, tenant_id: uuid.UUID) -> bool:
    """Admins see every tenant, others only their own."""
    return user.role == Role.ADMIN or tenant_id == user.tenant_id


def _visible(model, owner, user: User) -> Select:
    """The tenant's rows (every tenant's, for admins); a CAD manager only those it owns (`owner`)."""
    query = select(model)
    if user.role == Role.ADMIN:
        return query
    query = query.where(model.tenant_id == user.tenant_id)
    return query.where(owner == user.id) if user.role == Role.CAD_MANAGER and owner is not None else query


def requests_visible_to(user: User) -> Select[tuple[ClusterRequest]]:
    return _visible(ClusterRequest, ClusterRequest.requested_by_id, user)


def clusters_visible_to(user: User) -> Select[tuple[Cluster]]:
    return _visible(Cluster, Cluster.created_by_id, user)


def providers_visible_to(user: User) -> Select[tuple[CloudProvider]]:
    return _visible(CloudProvider, None, user)


def visible_tenant(session: Session, user: User, tenant_id: uuid.UUID) -> Tenant | None:
    tenant = session.get(Tenant, tenant_id)
    return tenant if tenant is not None and may_see_tenant(user, tenant.id) else None


def visible_request(session: Session, user: User, request_id: uuid.UUID) -> ClusterRequest | None:
    request = session.get(ClusterRequest, request_id)
    return request if request is not None and may_see_request(user, request) else None


def visible_cluster(session: Session, user: User, cluster_id: uuid.UUID) -> Cluster | None:
    return session.scalar(clusters_visible_to(user).where(Cluster.id == cluster_id))


# --- what a user may do --------------------------------------------------------------------------


def may_decide(user: User, request: ClusterRequest) -> bool:
    return user.role == Role.ADMIN or (user.role == Role.IT_MANAGER and user.tenant_id == request.tenant_id)


def may_see_request(user: User, request: ClusterRequest) -> bool:
    return may_decide(user, request) or request.requested_by_id == user.id


def is_creator(user: User, cluster: Cluster) -> bool:
    return cluster.created_by_id == user.id


def may_see_credentials(user: User, cluster: Cluster) -> bool:
    """Service credentials are for the cluster's creator and its tenant's IT managers, nobody else."""
    return is_creator(user, cluster) or (user.role == Role.IT_MANAGER and user.tenant_id == cluster.tenant_id)


def provider_for_new_cluster(
    session: Session,
    user: User,
    provider_id: uuid.UUID,
    tools: list[tuple[str, str]],
    services: list[tuple[str, str]],
) -> CloudProvider:
    """The cloud provider a new request or cluster names, which must belong to the user's tenant and
    offer the versions of the tools and services it asks for."""
    provider = session.get(CloudProvider, provider_id)
    if provider is None or provider.tenant_id != user.tenant_id:
        raise Refused(
            "Invalid",
            f"cloudProviderId {provider_id} is not a cloud provider of your tenant; "
            "GET /api/v1/cloud-providers lists them",
        )
    require_offered(provider, tools, services)
    return provider


def require_offered(provider: CloudProvider, tools: list[tuple[str, str]], services: list[tuple[str, str]]) -> None:
    """Refuse a tool or service version that the provider's kind does not install (the catalog's
    versionsByProvider), naming the versions it does."""
    try:
        catalog.check_offered(provider.kind, tools, services)
    except ValueError as e:
        raise Refused("Invalid", f"{e} (GET /api/v1/catalog lists versionsByProvider)") from None
