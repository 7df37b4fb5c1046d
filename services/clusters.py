"""New clusters. Every Cluster row the platform makes is built here (`new_cluster`), whether it comes from a CAD manager
creating one within the self-service limit (`create_cluster`) or from an approved request
(`create_approved_cluster`). The callers commit, and start the cluster's workflow once they have."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from types import EllipsisType
from typing import Any

from sqlalchemy.orm import Session

from core.enums import ClusterStatus, Role
from core.messages import Resize
from core.models import CloudProvider, Cluster, ClusterRequest, ClusterService, ClusterTool, Tenant, User
from core.providers import CLOUDS, Scaling
from core.refusals import Refused
from core.settings import Settings
from services import audit, credits, nodes
from services.leases import LeasePolicy
from services.permissions import provider_for_new_cluster


@dataclass(frozen=True)
class ClusterAsk:
    """What a new cluster, or the request for one, asks for. Tools are {"name", "version"} and services
    {"name", "version", "config"}, as a request keeps them; an "id" given earlier (by the request) is kept
    on the cluster's tool or service."""

    name: str
    cloud_provider_id: uuid.UUID
    number_of_nodes: int
    node_type: str
    storage_gb: int
    tools: list[dict[str, Any]]
    services: list[dict[str, Any]]
    # Elastic scaling (both or neither; services/nodes.py): None for a static cluster.
    min_nodes: int | None = None
    idle_seconds: int | None = None
    # The end of the lease asked for (services/leases.py); None: the default lease, if any.
    expires_at: datetime | None = None
    # A request may resize a running cluster instead (its size and scaling only).
    resizes_cluster_id: uuid.UUID | None = None

    @classmethod
    def of_request(cls, request: ClusterRequest) -> "ClusterAsk":
        return cls(
            name=request.name,
            cloud_provider_id=request.cloud_provider_id,
            number_of_nodes=request.number_of_nodes,
            node_type=request.node_type,
            storage_gb=request.storage_gb,
            tools=request.tools,
            services=request.services,
            min_nodes=request.min_nodes,
            idle_seconds=request.idle_seconds,
            expires_at=request.expires_at,
            resizes_cluster_id=request.resizes_cluster_id,
        )

    def provider_for(self, session: Session, user: User) -> CloudProvider:
        """The cloud provider it names, which must be the user's tenant's and offer what it asks for."""
        tools = [(t["name"], t["version"]) for t in self.tools]
        services = [(s["name"], s["version"]) for s in self.services]
        return provider_for_new_cluster(session, user, self.cloud_provider_id, tools, services)


def new_cluster(
    ask: ClusterAsk,
    tenant_id: uuid.UUID,
    created_by_id: uuid.UUID,
    *,
    cluster_id: uuid.UUID | None = None,
    request_id: uuid.UUID | None = None,
) -> Cluster:
    """A `pending` cluster as `ask` says, not yet added to any session."""
    return Cluster(
        **_given_id(cluster_id),
        tenant_id=tenant_id,
        name=ask.name,
        cloud_provider_id=ask.cloud_provider_id,
        number_of_nodes=ask.number_of_nodes,
        node_type=ask.node_type,
        storage_gb=ask.storage_gb,
        min_nodes=ask.min_nodes,
        idle_seconds=ask.idle_seconds,
        expires_at=ask.expires_at,
        created_by_id=created_by_id,
        request_id=request_id,
        tools=[ClusterTool(**_given_id(t.get("id")), name=t["name"], version=t["version"]) for t in ask.tools],
        services=[
            ClusterService(**_given_id(s.get("id")), name=s["name"], version=s["version"], config=s["config"])
            for s in ask.services
        ],
    )


def _given_id(given: uuid.UUID | str | None) -> dict[str, uuid.UUID]:
    # Without one, the model's default makes it at the flush.
    if given is None:
        return {}
    return {"id": given if isinstance(given, uuid.UUID) else uuid.UUID(given)}


def create_cluster(session: Session, user: User, ask: ClusterAsk, settings: Settings, source: str) -> Cluster:
    """A cluster the user creates without approval, audited, in the session's transaction, once the caller has
    held it to the self-service limit (require_self_service: the API checks it first, for a retried call
    too). Refused for a provider that is not the tenant's or lacks what it asks for, for a lease beyond the
    longest a CAD manager may set, and when the tenant's credits would not keep it running."""
    ask.provider_for(session, user)
    LeasePolicy.of(settings).of_tenant(session.get_one(Tenant, user.tenant_id)).require_asked(ask.expires_at)
    refusal = credits.shortfall(session, user.tenant_id, credits.rate_of_request(ask), settings.budget_min_runway_hours)
    if refusal is not None:
        raise Refused("Conflict", f"the cluster was not created: {refusal}")
    cluster = new_cluster(ask, user.tenant_id, user.id)
    session.add(cluster)
    session.flush()
    audit.record(
        session, user.tenant_id, user.id, "cluster.create", f"cluster {cluster.id}", source,
        name=cluster.name, nodes=cluster.number_of_nodes, node_type=cluster.node_type,
    )  # fmt: skip
    return cluster


def require_self_service(
    number_of_nodes: int, node_type: str, settings: Settings, resizes: uuid.UUID | None = None
) -> None:
    """Refuse (NotAllowed) a cluster above the self-service limit: it needs a request and an approval (one
    that `resizes` the cluster, for a resize)."""
    if number_of_nodes <= settings.self_service_max_nodes and node_type in settings.self_service_node_types:
        return
    naming = f" naming resizesClusterId {resizes}" if resizes else ""
    raise Refused(
        "NotAllowed",
        f"a cluster of {number_of_nodes} x {node_type} is above the self-service limit "
        f"(at most {settings.self_service_max_nodes} nodes of {', '.join(settings.self_service_node_types)}); "
        f"file a request with POST /api/v1/requests{naming} for an IT manager to approve",
    )


def create_approved_cluster(session: Session, request: ClusterRequest, cluster_id: uuid.UUID) -> Cluster:
    """The cluster an approval makes of `request`, with the id its workflow chose, in the decision's transaction.
    Its creator is the requester; its tools and services keep the ids the request gave them."""
    ask = ClusterAsk.of_request(request)
    cluster = new_cluster(ask, request.tenant_id, request.requested_by_id, cluster_id=cluster_id, request_id=request.id)
    session.add(cluster)
    session.flush()
    return cluster


# --- resizing --------------------------------------------------------------------------------


def require_resizable(session: Session, user: User, ask: ClusterAsk) -> Cluster:
    """The cluster a request resizes, which must be the user's, available, and named as it is: the same
    name, provider and node type, with no tools, services or lease (a resize changes the number of nodes
    and the scaling alone). Refused (Invalid) otherwise."""
    cluster = session.get(Cluster, ask.resizes_cluster_id)
    if cluster is None or cluster.tenant_id != user.tenant_id or cluster.created_by_id != user.id:
        raise Refused("Invalid", f"resizesClusterId {ask.resizes_cluster_id} is not a cluster you created")
    if cluster.status != ClusterStatus.AVAILABLE:
        raise Refused("Invalid", f"the cluster to resize is {cluster.status}; only an available cluster is resized")
    differs = [
        f"{field} {given!r} is not the cluster's ({kept!r})"
        for field, given, kept in (
            ("name", ask.name, cluster.name),
            ("cloudProviderId", str(ask.cloud_provider_id), str(cluster.cloud_provider_id)),
            ("size.nodeType", ask.node_type, cluster.node_type),
        )
        if given != kept
    ]
    if ask.tools or ask.services or ask.expires_at:
        differs.append("tools, services and expiresAt are not for a resize (add them to the cluster, or extend it)")
    require_same_kind_of_scaling(session, cluster, Resize.of(ask))
    if differs:
        reasons = "; ".join(differs)
        raise Refused("Invalid", f"a request that resizes a cluster changes only its size and scaling: {reasons}")
    return cluster


def resize_of(cluster: Cluster, number_of_nodes: int, scaling: Scaling | None | EllipsisType) -> Resize:
    """What a resize asks of `cluster`: `scaling` ... keeps the cluster's (its floor held to the new size), None
    makes it static. Refused (Invalid) when the cluster's floor would be above its new size."""
    if scaling is ...:
        scaling = nodes.scaling_of(cluster)
    if scaling is None:
        return Resize(number_of_nodes)
    if scaling.min_nodes > number_of_nodes:
        raise Refused(
            "Invalid",
            f"scaling.minNodes ({scaling.min_nodes}) must be at most size.numberOfNodes ({number_of_nodes}); "
            "give a lower scaling.minNodes with the new size",
        )
    return Resize(number_of_nodes, scaling.min_nodes, scaling.idle_seconds)


def admit_resize(
    session: Session, cluster: Cluster, actor: User, to: Resize, min_runway_hours: float, *, approved: bool
) -> bool:
    """Hold a resize of `cluster` to what may be: an available cluster, by its creator or an IT manager (or
    `approved` in a request), and with the tenant's credits lasting if it grows. Whether it changes anything (the same size again does not). The API holds a CAD
    manager to the self-service limit first (require_self_service)."""
    if cluster.status != ClusterStatus.AVAILABLE:
        raise Refused("Conflict", f"the cluster is {cluster.status}; only an available cluster can be resized")
    if Resize.of(cluster) == to:
        return False
    if not approved and actor.role == Role.CAD_MANAGER and cluster.created_by_id != actor.id:
        raise Refused("NotAllowed", "only the cluster's creator or an IT manager may resize it")
    require_same_kind_of_scaling(session, cluster, to)
    refusal = None if approved else resize_shortfall(session, cluster, to.number_of_nodes, min_runway_hours)
    if refusal is not None:
        raise Refused("Conflict", f"the cluster was not resized: {refusal}")
    return True


def require_same_kind_of_scaling(session: Session, cluster: Cluster, to: Resize) -> None:
    """Refuse (Invalid) making a cloud cluster static or elastic once it runs: its head node's power programs
    are written by its boot script when it is made (infra/clouds/plan.py), so only its size and floor change."""
    kind = session.get_one(CloudProvider, cluster.cloud_provider_id).kind
    if kind in CLOUDS and (cluster.min_nodes is None) != (to.min_nodes is None):
        now, asked = ("static", "elastic") if cluster.min_nodes is None else ("elastic", "static")
        raise Refused(
            "Invalid",
            f"this {kind} cluster stays {now}: its head node was made {now}, so a resize cannot make it {asked}; "
            f"change its size{' and floor' if now == 'elastic' else ''}, or make a new {asked} cluster",
        )


def resize_shortfall(session: Session, cluster: Cluster, number_of_nodes: int, min_runway_hours: float) -> str | None:
    """Why the tenant's credits would not last once `cluster` grows to `number_of_nodes` (the budget guard on
    what it may cost at most); None when they would, or it does not grow."""
    growth = credits.rate_of(cluster, nodes=number_of_nodes) - credits.rate_of(cluster)
    if growth <= 0:
        return None
    return credits.shortfall(session, cluster.tenant_id, growth, min_runway_hours, "this resize")
