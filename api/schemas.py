"""The JSON shapes of the API, camelCase exactly as the user's API reference (the seed).

Input models ignore fields the server owns (id, status, requestedBy, ...) so a client may send
back what it received. Output models are built from the database rows with `from_row`.
"""

import math
import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from api import examples as ex
from api.examples import examples
from core import catalog, enums, models
from core.providers import KINDS
from infra.providers import check_config
from services import credits, nodes

# The statuses and roles of core/enums.py as Literals of their values, in their order (a Literal of a tuple
# is a Literal of its items): the OpenAPI document shows each as an inline enum of strings.
RequestStatus = Literal[tuple(s.value for s in enums.RequestStatus)]  # type: ignore[valid-type]
ClusterStatus = Literal[tuple(s.value for s in enums.ClusterStatus)]  # type: ignore[valid-type]
ServiceStatus = Literal[tuple(s.value for s in enums.ServiceStatus)]  # type: ignore[valid-type]
ToolStatus = Literal[tuple(s.value for s in enums.ToolStatus)]  # type: ignore[valid-type]
NodeState = Literal[tuple(s.value for s in enums.NodeState)]  # type: ignore[valid-type]
Role = Literal[tuple(r.value for r in enums.Role)]  # type: ignore[valid-type]
ProviderKind = Literal[KINDS]  # type: ignore[valid-type]

_CLOUD_NAME = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")


def _cloud_name(value: str) -> str:
    if not _CLOUD_NAME.fullmatch(value):
        raise ValueError(
            "must be usable as a cloud resource name: 1 to 63 lower-case letters, digits and '-', "
            "starting with a letter and not ending with '-'"
        )
    return value


# The JSON Schema says what `_cloud_name` checks, for clients (and generated tests); the validator gives the message.
CloudName = Annotated[
    str,
    AfterValidator(_cloud_name),
    Field(json_schema_extra={"pattern": "^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", "minLength": 1, "maxLength": 63}),
]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value.strip()


# Up to 10,000 characters as sent (what the schema says), kept without the whitespace around them.
NonBlank = Annotated[str, StringConstraints(min_length=1, max_length=10_000), AfterValidator(_not_blank)]


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class Input(Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        _check_storable(value)
        return value


# How deep and how large a free-form value (a service's or provider's `config`) may be: far beyond any
# real config, and small enough that checking and storing it stays cheap.
MAX_NESTING, MAX_VALUES = 32, 10_000


def _check_storable(value: Any) -> None:
    """Refuse what a database cannot keep faithfully: NUL in text (PostgreSQL refuses it) and NaN or
    infinite numbers (not JSON; PostgreSQL refuses them too), however deep in a `config` they are; and
    values nested deeper than MAX_NESTING or holding more than MAX_VALUES values. Walked with a list, not
    by recursion, so a deeply nested body cannot exhaust the stack."""
    pending, seen = [(value, 0)], 0
    while pending:
        item, depth = pending.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise ValueError(f"must hold at most {MAX_VALUES:,} values (keys and items counted)")
        if isinstance(item, str) and "\x00" in item:
            raise ValueError("must not contain NUL characters")
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError("numbers must be finite (no NaN or Infinity)")
        if isinstance(item, dict | list):
            if depth >= MAX_NESTING:
                raise ValueError(f"must be nested at most {MAX_NESTING} levels deep")
            children = [c for pair in item.items() for c in pair] if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)


# --- people ------------------------------------------------------------------------------------


class User(Model):
    model_config = ConfigDict(json_schema_extra=examples(ex.CAD_MANAGER, ex.IT_MANAGER))

    id: uuid.UUID
    name: str
    email: str
    role: Role


class Me(User):
    model_config = ConfigDict(json_schema_extra=examples(ex.ME))

    tenant_id: uuid.UUID


# --- tools and services -------------------------------------------------------------------------


# The catalog's combinations are `allOf: [{anyOf: [...]}]`, which means the same as a bare `anyOf`: code
# generators read an `anyOf` beside `properties` as a choice of types (one class per tool, and service
# configs dropped), but keep one model for an object whose `allOf` adds no properties.


def _catalog_tools(schema: dict[str, Any]) -> None:
    """A tool's JSON Schema: one of the catalog's tools, in one of its versions."""
    schema["properties"]["name"]["enum"] = list(catalog.TOOLS)
    schema["allOf"] = [
        {
            "anyOf": [
                {"properties": {"name": {"const": t.name}, "version": {"enum": list(t.versions)}}}
                for t in catalog.TOOLS.values()
            ]
        }
    ]
    schema["examples"] = [ex.TOOL_IN]


def _catalog_services(schema: dict[str, Any]) -> None:
    """A service's JSON Schema: one of the catalog's services, in one of its versions, with its config keys."""

    def key_schema(key: catalog.ConfigKey) -> dict[str, Any]:
        if key.pattern is not None:
            return {"type": "string", "pattern": f"^(?:{key.pattern})$"}
        return {"type": "integer", "minimum": key.minimum, "maximum": key.maximum}

    schema["properties"]["name"]["enum"] = list(catalog.SERVICES)
    schema["allOf"] = [
        {
            "anyOf": [
                {
                    "properties": {
                        "name": {"const": s.name},
                        "version": {"enum": list(s.versions)},
                        "config": {
                            "type": "object",
                            "properties": {k.name: key_schema(k) for k in s.config_keys},
                            "additionalProperties": False,
                        },
                    }
                }
                for s in catalog.SERVICES.values()
            ]
        }
    ]
    schema["examples"] = [ex.SERVICE_IN]


class ToolIn(Input):
    model_config = ConfigDict(json_schema_extra=_catalog_tools)

    name: str
    version: str

    @model_validator(mode="after")
    def _in_catalog(self) -> "ToolIn":
        catalog.check_tool(self.name, self.version)
        return self


class ServiceIn(Input):
    model_config = ConfigDict(json_schema_extra=_catalog_services)

    name: str
    version: str
    config: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _in_catalog(self) -> "ServiceIn":
        catalog.check_service(self.name, self.version, self.config)
        return self


def _named_once(names: list[str], what: str) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"each {what} may be named once; named more than once: {', '.join(repeated)}")


def _tools_once(tools: list[ToolIn]) -> list[ToolIn]:
    _named_once([t.name for t in tools], "tool")
    return tools


def _services_once(services: list[ServiceIn]) -> list[ServiceIn]:
    _named_once([s.name for s in services], "service")
    return services


class Tool(Model):
    model_config = ConfigDict(json_schema_extra=examples(ex.TOOL))

    id: uuid.UUID
    name: str
    version: str
    status: ToolStatus
    status_reason: str | None = None


class Service(Model):
    model_config = ConfigDict(json_schema_extra=examples(ex.SERVICE))

    id: uuid.UUID
    name: str
    version: str
    config: dict[str, Any]
    status: ServiceStatus
    status_reason: str | None = None
    # Filled only on a cluster's or service's detail, for its creator and IT managers, once running.
    credentials: dict[str, Any] = Field(
        default_factory=dict,
        description="How to connect (host, port, username, password, ...): only on a cluster's or service's "
        "detail, for the cluster's creator and IT managers, once the service is running; otherwise empty.",
    )

    @classmethod
    def from_row(cls, row: models.ClusterService, secret: dict[str, str] | None = None) -> "Service":
        service = cls(
            id=row.id,
            name=row.name,
            version=row.version,
            config=row.config,
            status=row.status,
            status_reason=row.status_reason,
        )
        if secret is not None and row.status == enums.ServiceStatus.RUNNING:
            service.credentials = {**row.endpoint, **secret}
            if row.name == "postgresql":
                service.credentials["database"] = row.config.get("databaseName", "postgres")
        return service


class RequestedTool(Model):
    """A tool as a request names it; it keeps its id on the cluster, where it also gets a status."""

    model_config = ConfigDict(json_schema_extra=examples(ex.REQUESTED_TOOL))

    id: uuid.UUID
    name: str
    version: str


class RequestedService(Model):
    model_config = ConfigDict(json_schema_extra=examples(ex.REQUESTED_SERVICE))

    id: uuid.UUID
    name: str
    version: str
    config: dict[str, Any] = Field(default_factory=dict)
    status: ServiceStatus = enums.ServiceStatus.PENDING
    credentials: dict[str, Any] = Field(default_factory=dict)


# --- sizes ---------------------------------------------------------------------------------------


def _known_node_type(value: str) -> str:
    if value not in catalog.NODE_TYPES:
        raise ValueError(f"node type {value!r} is not in the catalog; node types: {', '.join(catalog.NODE_TYPES)}")
    return value


NodeTypeName = Annotated[
    str, AfterValidator(_known_node_type), Field(json_schema_extra={"enum": list(catalog.NODE_TYPES)})
]
NodeCount = Annotated[int, Field(ge=catalog.MIN_NODES, le=catalog.MAX_NODES, strict=True)]
StorageGB = Annotated[int, Field(ge=catalog.MIN_STORAGE_GB, le=catalog.MAX_STORAGE_GB, strict=True)]


class SizeIn(Input):
    model_config = ConfigDict(json_schema_extra=examples(ex.SIZE_IN))

    number_of_nodes: NodeCount
    node_type: NodeTypeName
    # The seed's request size has no storage; a cluster's has. Optional here, with the catalog's default.
    storage: StorageGB = Field(default=catalog.DEFAULT_STORAGE_GB, description="Shared storage, in GB.")


class Size(Model):
    model_config = ConfigDict(json_schema_extra=examples(ex.SIZE))

    number_of_nodes: int
    node_type: str
    storage: int


class ClusterSize(Size):
    model_config = ConfigDict(json_schema_extra=examples(ex.CLUSTER_SIZE))

    nodes_up: int = Field(
        description="The nodes up now and charged (extension): all of a static cluster's while it is available; "
        "of an elastic cluster's, its floor and those powered up for jobs."
    )


class ScalingIn(Input):
    """Elastic nodes (extension): `minNodes` of the cluster's nodes are always up; the rest are powered up
    when jobs queue for them and down once idle for `idleSeconds`, and charged only while up. Without it a
    cluster is static: every node up while it is available."""

    model_config = ConfigDict(json_schema_extra=examples(ex.SCALING))

    min_nodes: Annotated[int, Field(ge=0, le=catalog.MAX_NODES, strict=True)]
    idle_seconds: Annotated[int, Field(ge=30, le=86_400, strict=True)]


class Scaling(Model):
    model_config = ConfigDict(json_schema_extra=examples(ex.SCALING))

    min_nodes: int
    idle_seconds: int

    @classmethod
    def of(cls, row: models.Cluster | models.ClusterRequest) -> "Scaling | None":
        return None if row.min_nodes is None else cls(min_nodes=row.min_nodes, idle_seconds=row.idle_seconds)


class Node(Model):
    name: str
    state: NodeState


class AskIn(Input):
    """What a new request and a new cluster both ask for: a size and a scaling, which must agree, and a lease."""

    size: SizeIn
    scaling: ScalingIn | None = None
    expires_at: AwareDatetime | None = Field(
        default=None,
        description="When the cluster's lease ends and it is torn down (extension; RFC 3339 with a zone). "
        "Without it, the operator's default lease from when it is available, if there is one.",
    )

    @model_validator(mode="after")
    def _floor_within_size(self) -> "AskIn":
        _require_floor_within(self.scaling, self.size.number_of_nodes)
        return self


def _require_floor_within(scaling: ScalingIn | None, number_of_nodes: int) -> None:
    if scaling is not None and scaling.min_nodes > number_of_nodes:
        raise ValueError(
            f"scaling.minNodes ({scaling.min_nodes}) must be at most size.numberOfNodes "
            f"({number_of_nodes}), the most nodes the cluster has"
        )


# --- requests ------------------------------------------------------------------------------------


class RequestIn(AskIn):
    model_config = ConfigDict(json_schema_extra=examples(ex.REQUEST_IN))

    name: CloudName
    cloud_provider_id: uuid.UUID
    resizes_cluster_id: uuid.UUID | None = Field(
        default=None,
        description="A running cluster of yours this request resizes, beyond the self-service limit (extension): "
        "its name, provider and node type as they are, a new size.numberOfNodes and scaling, no tools or services.",
    )
    tools: Annotated[list[ToolIn], AfterValidator(_tools_once)] = Field(default_factory=list, max_length=50)
    services: Annotated[list[ServiceIn], AfterValidator(_services_once)] = Field(default_factory=list, max_length=20)


class DecisionIn(Input):
    model_config = ConfigDict(json_schema_extra=examples(ex.APPROVAL, ex.REJECTION))

    status: Literal[enums.RequestStatus.APPROVED.value, enums.RequestStatus.REJECTED.value]  # type: ignore[valid-type]
    rejection_reason: Annotated[str, StringConstraints(max_length=10_000), AfterValidator(str.strip)] | None = Field(
        default=None, description="Required when rejecting: tells the requester why."
    )


class NoteIn(Input):
    model_config = ConfigDict(json_schema_extra=examples(ex.NOTE_IN))

    note: NonBlank


class Note(Model):
    model_config = ConfigDict(json_schema_extra=examples(ex.NOTE))

    time: datetime
    by: User
    note: str


class CreditEstimate(Model):
    """What a request or cluster costs and what it does to the tenant's runway (extension): the days its
    balance lasts at the total rate of its metered clusters, without this one and with it. A runway
    of null means nothing draws on the balance."""

    model_config = ConfigDict(json_schema_extra=examples(ex.CREDIT_ESTIMATE))

    rate_per_hour: float
    runway_days_before: float | None
    runway_days_after: float | None
    min_rate_per_hour: float | None = Field(
        default=None,
        description="An elastic cluster's rate with only its floor (minNodes) up; ratePerHour is then its rate "
        "now if it is available, else with every node up. Null for a static cluster.",
    )


class ClusterRequest(Model):
    model_config = ConfigDict(json_schema_extra=examples(ex.CLUSTER_REQUEST))

    id: uuid.UUID
    name: str
    cloud_provider_id: uuid.UUID
    size: Size
    scaling: Scaling | None = Field(default=None, description="Elastic nodes (extension); null: static.")
    expires_at: datetime | None = Field(default=None, description="The end of the lease asked for (extension).")
    tools: list[RequestedTool]
    services: list[RequestedService]
    status: RequestStatus
    requested_by: User
    approved_by: User | None = None
    requested_at: datetime
    approved_at: datetime | None = None
    notes: list[Note]
    rejection_reason: str | None = Field(default=None, description="Why the request was rejected.")
    cluster_id: uuid.UUID | None = Field(
        default=None, description="The cluster an approved request became, or resized (extension)."
    )
    resizes_cluster_id: uuid.UUID | None = Field(
        default=None, description="The cluster the request resizes (extension); null: it asks for a new one."
    )
    estimated_credits: CreditEstimate

    @classmethod
    def from_row(cls, row: models.ClusterRequest, estimate: CreditEstimate) -> "ClusterRequest":
        return cls(
            id=row.id,
            name=row.name,
            cloud_provider_id=row.cloud_provider_id,
            size=Size(number_of_nodes=row.number_of_nodes, node_type=row.node_type, storage=row.storage_gb),
            scaling=Scaling.of(row),
            expires_at=row.expires_at,
            tools=[RequestedTool(**t) for t in row.tools],
            services=[RequestedService(**s) for s in row.services],
            status=row.status,
            requested_by=User.model_validate(row.requested_by),
            approved_by=User.model_validate(row.approved_by) if row.approved_by else None,
            requested_at=row.requested_at,
            approved_at=row.approved_at,
            notes=[Note.model_validate(n) for n in row.notes],
            rejection_reason=row.rejection_reason,
            cluster_id=row.cluster_id,
            resizes_cluster_id=row.resizes_cluster_id,
            estimated_credits=estimate,
        )


# --- clusters ------------------------------------------------------------------------------------


class ClusterIn(AskIn):
    model_config = ConfigDict(json_schema_extra=examples(ex.CLUSTER_IN))

    name: CloudName
    cloud_provider_id: uuid.UUID
    type: Literal["slurm"] = "slurm"
    tools: Annotated[list[ToolIn], AfterValidator(_tools_once)] = Field(default_factory=list, max_length=50)
    services: Annotated[list[ServiceIn], AfterValidator(_services_once)] = Field(default_factory=list, max_length=20)


class Cluster(Model):
    model_config = ConfigDict(json_schema_extra=examples(ex.CLUSTER))

    id: uuid.UUID
    name: str
    cloud_provider_id: uuid.UUID
    type: Literal["slurm"]
    size: ClusterSize
    scaling: Scaling | None = Field(default=None, description="Elastic nodes (extension); null: static.")
    nodes: list[Node] = Field(description="The compute nodes and their power now (extension).")
    expires_at: datetime | None = Field(
        default=None, description="When its lease ends and it is torn down (extension); null: it runs until deleted."
    )
    status: ClusterStatus
    status_reason: str | None = Field(default=None, description="Why the cluster is in `error` (extension).")
    tools: list[Tool]
    services: list[Service]
    created_at: datetime
    created_by: User
    request_id: uuid.UUID | None = Field(
        default=None, description="The request the cluster was made for; null for one created directly (extension)."
    )
    outputs: dict[str, Any] = Field(
        description="What the provider made: the head node, node ids, storage, ... (extension)."
    )
    estimated_credits: CreditEstimate

    @classmethod
    def from_row(
        cls, row: models.Cluster, estimate: CreditEstimate, secrets: dict[uuid.UUID, dict[str, str]] | None = None
    ) -> "Cluster":
        """`secrets` (service id -> decrypted credentials) only where the caller may see them."""
        secrets = secrets or {}
        shown = nodes.nodes_of(row)
        return cls(
            id=row.id,
            name=row.name,
            cloud_provider_id=row.cloud_provider_id,
            type=row.type,
            size=ClusterSize(
                number_of_nodes=row.number_of_nodes,
                node_type=row.node_type,
                storage=row.storage_gb,
                nodes_up=sum(node.state.charged for node in shown),
            ),
            scaling=Scaling.of(row),
            nodes=[Node(name=node.name, state=node.state) for node in shown],
            expires_at=row.expires_at,
            status=row.status,
            status_reason=row.status_reason,
            tools=[Tool.model_validate(t) for t in row.tools],
            services=[Service.from_row(s, secrets.get(s.id)) for s in row.services],
            created_at=row.created_at,
            created_by=User.model_validate(row.created_by),
            request_id=row.request_id,
            outputs=row.outputs,
            estimated_credits=estimate,
        )


class ResizeSizeIn(Input):
    number_of_nodes: NodeCount


class ResizeIn(Input):
    """A running cluster's new size (extension): its most nodes, and its scaling. Without `scaling` the
    cluster keeps its own; `"scaling": null` makes it static (every node always up)."""

    model_config = ConfigDict(json_schema_extra=examples(ex.RESIZE_IN))

    size: ResizeSizeIn
    scaling: ScalingIn | None = None

    @model_validator(mode="after")
    def _floor_within_size(self) -> "ResizeIn":
        _require_floor_within(self.scaling, self.size.number_of_nodes)
        return self


class ExtendIn(Input):
    model_config = ConfigDict(json_schema_extra=examples(ex.EXTEND_IN))

    until: AwareDatetime = Field(description="The lease's new end: later than its end now (RFC 3339 with a zone).")


class ClusterEvent(Model):
    model_config = ConfigDict(json_schema_extra=examples(ex.CLUSTER_EVENT))

    step: str
    status: str
    time: datetime
    message: str


# --- cloud providers and the catalog -----------------------------------------------------------


def _stripped(value: str) -> str:
    """`value` stripped as Python strips it, as services.accounts stores a provider: pydantic's
    `strip_whitespace` leaves the separators U+001C to U+001F, which Python counts as white space, so a
    name starting with one was looked up as sent but stored without it (and collided: a 500)."""
    value = value.strip()
    if not value:
        raise ValueError("must not be blank")
    return value


# At most 100 characters as sent (what the schema says), kept without the white space around them.
ProviderText = Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(_stripped)]


class CloudProviderIn(Input):
    model_config = ConfigDict(json_schema_extra=examples(ex.CLOUD_PROVIDER_IN))

    # Admins act in every tenant and may name one (extension); everyone else registers in their own.
    tenant_id: uuid.UUID | None = None
    name: ProviderText
    kind: ProviderKind
    region: ProviderText
    config: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _config_fits_kind(self) -> "CloudProviderIn":
        check_config(self.kind, self.config)
        return self


class CloudProvider(Model):
    model_config = ConfigDict(json_schema_extra=examples(ex.CLOUD_PROVIDER))

    id: uuid.UUID
    name: str
    kind: ProviderKind
    region: str
    config: dict[str, Any]


class CatalogNodeType(Model):
    name: str
    vcpus: int
    memory_gb: int
    credits_per_hour: float
    instance_types: dict[str, str]


class CatalogTool(Model):
    name: str
    description: str
    versions: list[str]
    versions_by_provider: dict[str, list[str]]
    credits_per_hour: float


class CatalogConfigKey(Model):
    name: str
    description: str
    pattern: str | None = None
    minimum: int | None = None
    maximum: int | None = None


class CatalogService(Model):
    name: str
    description: str
    versions: list[str]
    versions_by_provider: dict[str, list[str]]
    credits_per_hour: float
    port: int
    config_keys: list[CatalogConfigKey]


class Catalog(Model):
    model_config = ConfigDict(json_schema_extra=examples(ex.CATALOG))

    node_types: list[CatalogNodeType]
    tools: list[CatalogTool]
    services: list[CatalogService]
    storage_credits_per_gb_hour: float
    provider_notes: dict[str, str]
    nodes: dict[str, int]
    storage_gb: dict[str, int]


class Health(Model):
    model_config = ConfigDict(json_schema_extra=examples(ex.READY, ex.NOT_READY))

    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


# --- metrics, credits and analytics ---------------------------------------------------------------


class Cores(Model):
    utilization_percent: float
    allocated_cores: int


class Gigabytes(Model):
    """Memory or storage: how much of it was used, and how much the cluster has."""

    utilization_percent: float
    allocated_gb: int = Field(alias="allocatedGB")


def _cores(use: Any) -> Cores:
    return Cores(utilization_percent=use.utilization_percent, allocated_cores=use.allocated)


def _gigabytes(use: Any) -> Gigabytes:
    return Gigabytes(utilization_percent=use.utilization_percent, allocated_gb=use.allocated)


class PointCredits(Model):
    consumed: float
    rate: float


class MetricPoint(Model):
    timestamp: datetime
    cpu: Cores
    memory: Gigabytes
    storage: Gigabytes
    credits: PointCredits


class TimeRange(Model):
    start: datetime
    end: datetime
    interval: str


class Metrics(Model):
    model_config = ConfigDict(json_schema_extra=examples(ex.METRICS))

    time_range: TimeRange
    metrics: list[MetricPoint]

    @classmethod
    def of(cls, time_range: TimeRange, points: list[Any]) -> "Metrics":
        return cls(
            time_range=time_range,
            metrics=[
                MetricPoint(
                    timestamp=p.timestamp,
                    cpu=_cores(p.cpu),
                    memory=_gigabytes(p.memory),
                    storage=_gigabytes(p.storage),
                    credits=PointCredits(consumed=p.credits_consumed, rate=p.credits_rate),
                )
                for p in points
            ],
        )


class Current(Model):
    cpu: Cores
    memory: Gigabytes
    storage: Gigabytes


class SummaryCredits(Model):
    total_consumed: float
    current_rate: float
    estimated_daily: float
    estimated_monthly: float


class Budget(Model):
    """The tenant's balance and budget policy, and whether this cluster runs on a spent balance (extension)."""

    balance: float
    policy: Literal["flag", "stop"]
    over_budget: bool


class MetricsSummary(Model):
    model_config = ConfigDict(json_schema_extra=examples(ex.METRICS_SUMMARY))

    current: Current
    credits: SummaryCredits
    budget: Budget

    @classmethod
    def of(cls, s: Any) -> "MetricsSummary":
        return cls(
            current=Current(cpu=_cores(s.cpu), memory=_gigabytes(s.memory), storage=_gigabytes(s.storage)),
            credits=SummaryCredits(
                total_consumed=s.total_consumed,
                current_rate=s.current_rate,
                estimated_daily=s.estimated_daily,
                estimated_monthly=s.estimated_monthly,
            ),
            budget=Budget(balance=s.balance, policy=s.policy, over_budget=s.over_budget),
        )


class Overview(Model):
    total_clusters: int
    active_clusters: int
    total_users: int
    active_users: int


class AverageUtilization(Model):
    cpu: float
    memory: float
    storage: float


class Resources(Model):
    total_cores: int
    total_memory_gb: int = Field(alias="totalMemoryGB")
    total_storage_gb: int = Field(alias="totalStorageGB")
    average_utilization: AverageUtilization


class Consumed(Model):
    daily: float
    weekly: float
    monthly: float


class Forecast(Model):
    next_week: float
    next_month: float


class AnalyticsCredits(Model):
    balance: float
    consumed: Consumed
    forecast: Forecast
    # Extensions: the tenant's budget policy, and whether its balance is spent.
    policy: Literal["flag", "stop"]
    exhausted: bool


class ClusterShare(Model):
    cluster_id: uuid.UUID
    name: str
    credits_consumed: float
    utilization_percent: float
    over_budget: bool  # extension: metered while the balance is spent (policy "flag")


class UserShare(Model):
    user_id: uuid.UUID
    name: str
    credits_consumed: float


class Breakdown(Model):
    by_cluster: list[ClusterShare]
    by_user: list[UserShare]


class Analytics(Model):
    model_config = ConfigDict(json_schema_extra=examples(ex.ANALYTICS))

    overview: Overview
    resources: Resources
    credits: AnalyticsCredits
    breakdown: Breakdown

    @classmethod
    def of(cls, a: Any) -> "Analytics":
        return cls(
            overview=Overview.model_validate(a),
            resources=Resources(
                total_cores=a.total_cores,
                total_memory_gb=a.total_memory_gb,
                total_storage_gb=a.total_storage_gb,
                average_utilization=AverageUtilization(
                    cpu=a.average_cpu, memory=a.average_memory, storage=a.average_storage
                ),
            ),
            credits=AnalyticsCredits(
                balance=a.balance,
                consumed=Consumed(daily=a.consumed_daily, weekly=a.consumed_weekly, monthly=a.consumed_monthly),
                forecast=Forecast(next_week=a.forecast_next_week, next_month=a.forecast_next_month),
                policy=a.policy,
                exhausted=a.exhausted,
            ),
            breakdown=Breakdown(
                by_cluster=[ClusterShare.model_validate(c) for c in a.by_cluster],
                by_user=[UserShare.model_validate(u) for u in a.by_user],
            ),
        )


class GrantIn(Input):
    model_config = ConfigDict(json_schema_extra=examples(ex.GRANT_IN))

    amount: Annotated[float, Field(ge=0.000001, le=credits.MAX_GRANT, allow_inf_nan=False)]
    note: Annotated[str, StringConstraints(max_length=1000), AfterValidator(str.strip)] = ""


class LedgerEntry(Model):
    model_config = ConfigDict(json_schema_extra=examples(ex.LEDGER_ENTRY))

    id: int
    kind: Literal["grant", "consumption"]
    amount: float  # credits: positive for grants, negative for consumption
    cluster_id: uuid.UUID | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    note: str | None = None
    by_id: uuid.UUID | None = None
    time: datetime


class CreditAccount(Model):
    """A tenant's balance, budget policy and ledger, newest entries first (extension)."""

    model_config = ConfigDict(json_schema_extra=examples(ex.CREDIT_ACCOUNT))

    tenant_id: uuid.UUID
    balance: float
    policy: Literal["flag", "stop"]
    entries: list[LedgerEntry]


class AuditEvent(Model):
    model_config = ConfigDict(json_schema_extra=examples(ex.AUDIT_EVENT))

    id: int
    tenant_id: uuid.UUID
    actor_id: uuid.UUID | None = None
    action: str
    target: str
    source: str
    detail: dict[str, Any]
    time: datetime
