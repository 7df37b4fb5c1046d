"""New clusters. Every Cluster row the platform makes is built here (`new_cluster`), whether it comes from a CAD manager
creating one within the self-service limit (`create_cluster`) or from an approved request
(`create_approved_cluster`). The callers commit, and start the cluster's workflow once they have."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from core.models import CloudProvider, Cluster, ClusterRequest, ClusterService, ClusterTool, User
from core.providers import ELASTIC_KINDS
from core.refusals import Refused
from core.settings import Settings
from services import audit, credits
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
        )

    def provider_for(self, session: Session, user: User) -> CloudProvider:
        """The cloud provider it names, which must be the user's tenant's and offer what it asks for (and
        elastic nodes, if it asks for them)."""
        tools = [(t["name"], t["version"]) for t in self.tools]
        services = [(s["name"], s["version"]) for s in self.services]
        provider = provider_for_new_cluster(session, user, self.cloud_provider_id, tools, services)
        if self.min_nodes is not None and provider.kind not in ELASTIC_KINDS:
            raise Refused(
                "Invalid",
                f"clusters of {provider.kind} providers are static so far: elastic scaling is offered by "
                f"{', '.join(ELASTIC_KINDS)} providers; leave `scaling` out for a cluster whose nodes are always up",
            )
        return provider


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
    LeasePolicy.of(settings).require_asked(ask.expires_at)
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


def require_self_service(ask: ClusterAsk, settings: Settings) -> None:
    """Refuse (NotAllowed) a cluster above the self-service limit: it needs a request and an approval."""
    if ask.number_of_nodes <= settings.self_service_max_nodes and ask.node_type in settings.self_service_node_types:
        return
    raise Refused(
        "NotAllowed",
        f"a cluster of {ask.number_of_nodes} x {ask.node_type} is above the self-service limit "
        f"(at most {settings.self_service_max_nodes} nodes of {', '.join(settings.self_service_node_types)}); "
        "file a request with POST /api/v1/requests for an IT manager to approve",
    )


def create_approved_cluster(session: Session, request: ClusterRequest, cluster_id: uuid.UUID) -> Cluster:
    """The cluster an approval makes of `request`, with the id its workflow chose, in the decision's transaction.
    Its creator is the requester; its tools and services keep the ids the request gave them."""
    ask = ClusterAsk.of_request(request)
    cluster = new_cluster(ask, request.tenant_id, request.requested_by_id, cluster_id=cluster_id, request_id=request.id)
    session.add(cluster)
    session.flush()
    return cluster
