"""The read model the API serves, written by activities and by the admin commands."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    case,
)
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from core.enums import ClusterStatus, DeliveryStatus, NodeState, RequestStatus, ServiceStatus, ToolStatus


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored in UTC and always read back with their zone (SQLite drops it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime; use an aware one in UTC")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The sum of the tenant's ledger, in credit units (see services/credits.py), kept with every entry.
    credit_balance: Mapped[int] = mapped_column(BigInteger, default=0)
    # What happens to running clusters when the balance reaches zero: "flag" them, or "stop" (tear down).
    budget_policy: Mapped[str] = mapped_column(String(10), default="flag")
    # What draws on the balance, in units per minute, kept current by every commit that changes a
    # cluster's status or a tool's or service's (services.credits.keep_standing_rates): the clusters
    # metered now, and those plus the ones about to start (what the budget guard counts).
    metered_rate: Mapped[int] = mapped_column(BigInteger, default=0)
    committed_rate: Mapped[int] = mapped_column(BigInteger, default=0)
    # The tenant's own lease policy (services/leases.py), in hours: its default lease and the longest a CAD
    # manager may set (0: none, no limit); None takes the operator's settings.
    lease_default_hours: Mapped[float | None]
    lease_max_hours: Mapped[float | None]


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("tenant_id", "email"),
        Index("uq_users_oidc_account", "oidc_issuer", "oidc_subject", unique=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The identity provider's account (the `iss` and `sub` of its tokens) of a user made by OIDC sign-in or
    # linked to one (`hpcinfra users link-oidc`); empty for a user no OIDC token may sign in as.
    oidc_issuer: Mapped[str | None] = mapped_column(String(2048))
    oidc_subject: Mapped[str | None] = mapped_column(String(255))


class ApiToken(Base):
    """Only the SHA-256 of a token is kept; the token itself is shown once, when it is made."""

    __tablename__ = "api_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    user: Mapped[User] = relationship(lazy="joined")


class CloudProvider(Base):
    __tablename__ = "cloud_providers"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20))
    region: Mapped[str] = mapped_column(String(100))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ClusterRequest(Base):
    __tablename__ = "cluster_requests"
    # A tenant's requests newest first (GET /requests), read from the index backwards, without a sort.
    __table_args__ = (
        Index("ix_cluster_requests_tenant_requested", "tenant_id", "requested_at", "id"),
        # The resume sweep's: pending requests filed since its last look.
        Index("ix_cluster_requests_status_requested", "status", "requested_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    cloud_provider_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cloud_providers.id"))
    number_of_nodes: Mapped[int] = mapped_column(Integer)
    node_type: Mapped[str] = mapped_column(String(50))
    storage_gb: Mapped[int] = mapped_column(Integer)
    # Elastic scaling (both or neither): the nodes always up, and how long a node idles before it is powered down.
    min_nodes: Mapped[int | None]
    idle_seconds: Mapped[int | None]
    # The end of the lease asked for (services/leases.py); None: the default lease, if any.
    expires_at: Mapped[datetime | None]
    # [{name, version}] and [{name, version, config}] as asked for; they become the cluster's on approval.
    tools: Mapped[list[Any]] = mapped_column(default=list)
    services: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(20), default=RequestStatus.PENDING, index=True)
    requested_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Who decided and when, for approvals and rejections alike (the seed calls them approvedBy/At).
    approved_by_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    approved_at: Mapped[datetime | None]
    rejection_reason: Mapped[str | None] = mapped_column(Text)
    # The cluster an approval created (the cluster row points back with its request_id), or resized.
    cluster_id: Mapped[uuid.UUID | None]
    # A request that resizes a running cluster (its size and scaling) instead of making one.
    resizes_cluster_id: Mapped[uuid.UUID | None]

    requested_by: Mapped[User] = relationship(foreign_keys=[requested_by_id], lazy="joined")
    approved_by: Mapped[User | None] = relationship(foreign_keys=[approved_by_id], lazy="joined")
    notes: Mapped[list["RequestNote"]] = relationship(order_by="RequestNote.id", lazy="selectin")


class RequestNote(Base):
    __tablename__ = "request_notes"

    # An increasing integer: notes are listed in the order they were written, which timestamps alone can tie.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cluster_requests.id"), index=True)
    by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    note: Mapped[str] = mapped_column(Text)
    # Set for notes written by the request workflow (signalled), so a retried write adds nothing.
    key: Mapped[uuid.UUID | None] = mapped_column(unique=True)
    time: Mapped[datetime] = mapped_column(default=utcnow)

    by: Mapped[User] = relationship(lazy="joined")


class Cluster(Base):
    __tablename__ = "clusters"
    # A tenant's clusters newest first (GET /clusters), read from the index backwards, without a sort.
    __table_args__ = (
        Index("ix_clusters_tenant_created", "tenant_id", "created_at", "id"),
        # The resume sweep's: pending clusters made since its last look.
        Index("ix_clusters_status_created", "status", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    cloud_provider_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cloud_providers.id"), index=True)
    type: Mapped[str] = mapped_column(String(20), default="slurm")
    # The most nodes it has; all of them up while it is available, unless it is elastic (min_nodes set).
    number_of_nodes: Mapped[int] = mapped_column(Integer)
    node_type: Mapped[str] = mapped_column(String(50))
    storage_gb: Mapped[int] = mapped_column(Integer)
    min_nodes: Mapped[int | None]
    idle_seconds: Mapped[int | None]
    # When its lease ends and it is torn down (services/leases.py); None: it runs until deleted.
    expires_at: Mapped[datetime | None]
    # An elastic cluster's nodes charged now (powered in any way: services/nodes.py).
    nodes_up: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    status: Mapped[str] = mapped_column(String(20), default=ClusterStatus.PENDING, index=True)
    status_reason: Mapped[str | None] = mapped_column(Text)
    created_by_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    request_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("cluster_requests.id"))
    # What the provider reported once the cluster was up: head node address, node ids, storage id.
    outputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Metering: the cluster is metered from `metering_from` (when it last became available) until
    # `metering_to` (when it stopped being available; empty while it is). `metered_until` is the end of
    # the last minute recorded, so collection resumes where it stopped and records no minute twice.
    metering_from: Mapped[datetime | None]
    metering_to: Mapped[datetime | None]
    metered_until: Mapped[datetime | None]

    created_by: Mapped[User] = relationship(lazy="joined")
    tools: Mapped[list["ClusterTool"]] = relationship(
        order_by="ClusterTool.name", lazy="selectin", cascade="all, delete-orphan"
    )
    services: Mapped[list["ClusterService"]] = relationship(
        order_by="ClusterService.name", lazy="selectin", cascade="all, delete-orphan"
    )
    # An elastic cluster's nodes, from the first time it was available; a static cluster has none here.
    nodes: Mapped[list["ClusterNode"]] = relationship(
        order_by="ClusterNode.position", lazy="selectin", cascade="all, delete-orphan"
    )

    @hybrid_property
    def nodes_charged(self) -> int:
        """The nodes charged while it is available: all of a static cluster's, those up of an elastic one's."""
        return self.number_of_nodes if self.min_nodes is None else self.nodes_up

    @nodes_charged.inplace.expression
    @classmethod
    def _nodes_charged(cls):
        return case((cls.min_nodes.is_(None), cls.number_of_nodes), else_=cls.nodes_up)


class ClusterNode(Base):
    """A compute node of an elastic cluster: its power now, and since when."""

    __tablename__ = "cluster_nodes"

    cluster_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clusters.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20), default=NodeState.DOWN)
    changed_at: Mapped[datetime]


class NodeUptime(Base):
    """A span in which a node of an elastic cluster was charged: from powering up to down (open while it is)."""

    __tablename__ = "node_uptimes"
    __table_args__ = (Index("ix_node_uptimes_cluster_until", "cluster_id", "up_to"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cluster_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clusters.id"))
    node: Mapped[str] = mapped_column(String(63))
    up_from: Mapped[datetime]
    up_to: Mapped[datetime | None]


class ClusterTool(Base):
    __tablename__ = "cluster_tools"
    __table_args__ = (UniqueConstraint("cluster_id", "name", "version"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    cluster_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clusters.id"), index=True)
    name: Mapped[str] = mapped_column(String(50))
    version: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20), default=ToolStatus.PENDING)
    status_reason: Mapped[str | None] = mapped_column(Text)


class ClusterService(Base):
    __tablename__ = "cluster_services"
    __table_args__ = (UniqueConstraint("cluster_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    cluster_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clusters.id"), index=True)
    name: Mapped[str] = mapped_column(String(50))
    version: Mapped[str] = mapped_column(String(50))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(20), default=ServiceStatus.PENDING)
    status_reason: Mapped[str | None] = mapped_column(Text)
    # Where the service answers (host, port): not secret.
    endpoint: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The generated user name and password, encrypted with the platform's credential keys (Fernet).
    credentials_encrypted: Mapped[str | None] = mapped_column(Text)


class ClusterEvent(Base):
    """The durable step log of a cluster. `key` is made once per line (by the workflow, or by the activity
    from its run, activity id and line), so a retried write is a no-op."""

    __tablename__ = "cluster_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[uuid.UUID] = mapped_column(unique=True)
    cluster_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clusters.id"), index=True)
    step: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20))
    message: Mapped[str] = mapped_column(Text, default="")
    time: Mapped[datetime] = mapped_column(default=utcnow)


class CreditEntry(Base):
    """A line of a tenant's credit ledger, in credit units: a grant (positive) or a cluster's consumption
    over [period_start, period_end) (negative). One consumption entry per cluster and period start."""

    __tablename__ = "credit_ledger"
    # The ledger is read per tenant, newest entry first.
    __table_args__ = (
        UniqueConstraint("cluster_id", "period_start"),
        Index("ix_credit_ledger_tenant", "tenant_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    kind: Mapped[str] = mapped_column(String(20))  # "grant" or "consumption"
    amount: Mapped[int] = mapped_column(BigInteger)
    cluster_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("clusters.id"))
    period_start: Mapped[datetime | None]
    period_end: Mapped[datetime | None]
    note: Mapped[str | None] = mapped_column(Text)
    by_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    time: Mapped[datetime] = mapped_column(default=utcnow)


class MetricSample(Base):
    """One minute of a cluster: its use (in hundredths of a percent, so sums are exact), what it had,
    and what the minute cost in credit units (which is also its rate: see services/credits.py)."""

    __tablename__ = "metric_samples"

    cluster_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clusters.id"), primary_key=True)
    minute: Mapped[datetime] = mapped_column(primary_key=True)
    cpu_use: Mapped[int] = mapped_column(Integer)
    memory_use: Mapped[int] = mapped_column(Integer)
    storage_use: Mapped[int] = mapped_column(Integer)
    cores: Mapped[int] = mapped_column(Integer)
    memory_gb: Mapped[int] = mapped_column(Integer)
    storage_gb: Mapped[int] = mapped_column(Integer)
    credit_units: Mapped[int] = mapped_column(BigInteger)


class MetricRollup(Base):
    """The minute samples of an hour or a day, summed as they arrive: averages are sums over `samples`."""

    __tablename__ = "metric_rollups"
    __table_args__ = (Index("ix_metric_rollups_tenant", "tenant_id", "resolution", "start"),)

    cluster_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clusters.id"), primary_key=True)
    resolution: Mapped[str] = mapped_column(String(4), primary_key=True)  # "hour" or "day"
    start: Mapped[datetime] = mapped_column(primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    samples: Mapped[int] = mapped_column(Integer)
    cpu_use: Mapped[int] = mapped_column(BigInteger)
    memory_use: Mapped[int] = mapped_column(BigInteger)
    storage_use: Mapped[int] = mapped_column(BigInteger)
    # What the cluster had in the latest minute of the period.
    cores: Mapped[int] = mapped_column(Integer)
    memory_gb: Mapped[int] = mapped_column(Integer)
    storage_gb: Mapped[int] = mapped_column(Integer)
    credit_units: Mapped[int] = mapped_column(BigInteger)


class IdempotencyKey(Base):
    """A POST made with an `Idempotency-Key`: what it asked (a fingerprint of method, path and body) and,
    once answered, the answer, so that the same call again gets the same answer. Keys are the caller's own,
    kept for KEPT_FOR (api/idempotency.py; the resume sweep deletes older ones)."""

    KEPT_FOR: ClassVar[timedelta] = timedelta(hours=24)

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("user_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    # Empty while the first call is being answered.
    status_code: Mapped[int | None] = mapped_column(Integer)
    content_type: Mapped[str | None] = mapped_column(String(100))
    body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # What the call created ("request <id>", "cluster <id>", "note <id>", ...), written in the transaction
    # that created it: a call that fails after that commit has still made it, and a retry answers so.
    resource: Mapped[str | None] = mapped_column(String(100))
    # When a call whose `resource` was committed ended in a server error without an answer to keep.
    interrupted_at: Mapped[datetime | None] = mapped_column()


class AuditEvent(Base):
    """Who did what, when and from where: decisions, clusters made and deleted, credentials read, tokens
    issued, credits granted. It names objects by id and never holds a secret or a token."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_tenant", "tenant_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"))
    # The user who acted; empty for the platform itself (an expiry, a budget stop).
    actor_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    action: Mapped[str] = mapped_column(String(50))
    target: Mapped[str] = mapped_column(String(100))  # e.g. "request <id>", "cluster <id>", "user <id>"
    # Where the call came from: "api <client address>", "temporal" (a signal), "cli".
    source: Mapped[str] = mapped_column(String(100))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    time: Mapped[datetime] = mapped_column(default=utcnow)


class Webhook(Base):
    """An endpoint of a tenant's that is told about the events it names (core/webhooks.py). Its
    signing secret is kept only encrypted, with the credential keys; a deleted webhook keeps its row
    (its deliveries name it) but loses its secret."""

    __tablename__ = "webhooks"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[Any]] = mapped_column(default=list)
    secret_encrypted: Mapped[str | None] = mapped_column(Text)
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None]


class WebhookEvent(Base):
    """Something that happened, written in the same transaction as the act itself (the outbox). `key`
    names the act (e.g. the status change's key), so an activity run twice writes its event once."""

    __tablename__ = "webhook_events"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    type: Mapped[str] = mapped_column(String(50))
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    key: Mapped[str | None] = mapped_column(String(200), unique=True)


class WebhookDelivery(Base):
    """One event to one webhook, posted by its own workflow (`webhook-delivery-<id>`) until it is
    accepted or given up: `pending`, then `delivered`, `failed` or `dropped` (the webhook was deleted)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_webhook", "webhook_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    webhook_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhooks.id"))
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_events.id"), index=True)
    status: Mapped[str] = mapped_column(String(20), default=DeliveryStatus.PENDING, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_attempt_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    event: Mapped[WebhookEvent] = relationship(lazy="joined")


class BalanceAlert(Base):
    """Whether a tenant's balance is below its runway threshold now (`low_since` set): balance.low is sent
    when it falls below, once, and again only after it has been back above."""

    __tablename__ = "balance_alerts"

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    low_since: Mapped[datetime | None]


class Sweep(Base):
    """A periodic job that one process at a time runs, across every worker (the resume sweep,
    services/resume.py): who holds it and until when, and up to when it has looked."""

    __tablename__ = "sweeps"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(200))
    held_until: Mapped[datetime | None]
    swept_until: Mapped[datetime | None]
