"""Who sees what, as the API answers it: the rules are the domain's (services/permissions.py); here a row the
caller may not see becomes a 404, and a caller in the wrong role a 403.

Objects of another tenant, or ones the caller may not see, are answered with 404, never 403,
so that nobody learns that they exist.
"""

import uuid

from sqlalchemy.orm import Session

from api.deps import require_role
from api.errors import Problem
from core.models import Cluster, ClusterRequest, Tenant, User
from services import permissions


def tenant_for(session: Session, user: User, tenant_id: uuid.UUID, *roles: str, action: str) -> Tenant:
    """The tenant, for callers of `roles` (to do `action`). Another tenant is not found (404) whatever the
    role, so nobody learns which tenants exist; a caller of it in another role is refused (403)."""
    tenant = permissions.visible_tenant(session, user, tenant_id)
    if tenant is None:
        raise Problem(404, f"there is no tenant {tenant_id} that you can see")
    require_role(user, *roles, action=action)
    return tenant


def request_for(session: Session, user: User, request_id: uuid.UUID) -> ClusterRequest:
    request = permissions.visible_request(session, user, request_id)
    if request is None:
        raise Problem(404, f"there is no request {request_id} that you can see")
    return request


def cluster_for(session: Session, user: User, cluster_id: uuid.UUID) -> Cluster:
    cluster = permissions.visible_cluster(session, user, cluster_id)
    if cluster is None:
        raise Problem(404, f"there is no cluster {cluster_id} that you can see")
    return cluster


def require_creator(user: User, cluster: Cluster, action: str) -> None:
    if not permissions.is_creator(user, cluster):
        raise Problem(403, f"only the cluster's creator may {action}")


# An answer that shows credentials: no cache (a browser's, a proxy's) may keep it.
NO_STORE = "no-store"
