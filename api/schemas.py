"""The JSON shapes of the API, camelCase exactly as the user's API reference (the seed).

Input models ignore fields the server owns (id, status, requestedBy, ...) so a client may send
back what it received. Output models are built from the database rows with `from_row`.
"""

import math
import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from pydantic.alias_generators import to_camel

from hpcinfra import models
from infra import catalog
from infra.providers import check_config

RequestStatus = Literal["pending", "approved", "rejected"]
ClusterStatus = Literal["pending", "provisioning", "available", "error", "deleting", "deleted"]
ServiceStatus = Literal["pending", "provisioning", "running", "failed", "stopped"]
ToolStatus = Literal["pending", "installing", "installed", "failed"]
Role = Literal["cad_manager", "it_manager", "admin"]
ProviderKind = Literal["sim", "local", "aws", "gcp", "azure"]

_CLOUD_NAME = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")


def _cloud_name(value: str) -> str:
    if not _CLOUD_NAME.fullmatch(value):
        raise ValueError(
            "must be usable as a cloud resource name: 1 to 63 lower-case letters, digits and '-', "
            "starting with a letter and not ending with '-'"
        )
    return value


CloudName = Annotated[str, AfterValidator(_cloud_name)]
NonBlank = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=10_000)]


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class Input(Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        _check_storable(value)
        return value


def _check_storable(value: Any) -> None:
    """Refuse what a database cannot keep faithfully: NUL in text (PostgreSQL refuses it) and NaN or
    infinite numbers (not JSON; PostgreSQL refuses them too), however deep in a `config` they are."""
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite (no NaN or Infinity)")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_storable(key)
            _check_storable(item)
    elif isinstance(value, list):
        for item in value:
            _check_storable(item)


# --- people ------------------------------------------------------------------------------------


class User(Model):
    id: uuid.UUID
    name: str
    email: str
    role: Role


class Me(User):
    tenant_id: uuid.UUID


# --- tools and services -------------------------------------------------------------------------


class ToolIn(Input):
    name: str
    version: str

    @model_validator(mode="after")
    def _in_catalog(self) -> "ToolIn":
        catalog.check_tool(self.name, self.version)
        return self


class ServiceIn(Input):
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
    id: uuid.UUID
    name: str
    version: str
    status: ToolStatus
    status_reason: str | None = None


class Service(Model):
    id: uuid.UUID
    name: str
    version: str
    config: dict[str, Any]
    status: ServiceStatus
    status_reason: str | None = None
    # Filled only on a cluster's or service's detail, for its creator and IT managers, once running.
    credentials: dict[str, Any] = Field(default_factory=dict)

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
        if secret is not None and row.status == "running":
            service.credentials = {**row.endpoint, **secret}
            if row.name == "postgresql":
                service.credentials["database"] = row.config.get("databaseName", "postgres")
        return service


class RequestedTool(Model):
    """A tool as a request names it; it keeps its id on the cluster, where it also gets a status."""

    id: uuid.UUID
    name: str
    version: str


class RequestedService(Model):
    id: uuid.UUID
    name: str
    version: str
    config: dict[str, Any] = Field(default_factory=dict)
    status: ServiceStatus = "pending"
    credentials: dict[str, Any] = Field(default_factory=dict)


# --- sizes ---------------------------------------------------------------------------------------


def _known_node_type(value: str) -> str:
    if value not in catalog.NODE_TYPES:
        raise ValueError(f"node type {value!r} is not in the catalog; node types: {', '.join(catalog.NODE_TYPES)}")
    return value


NodeTypeName = Annotated[str, AfterValidator(_known_node_type)]
NodeCount = Annotated[int, Field(ge=catalog.MIN_NODES, le=catalog.MAX_NODES, strict=True)]
StorageGB = Annotated[int, Field(ge=catalog.MIN_STORAGE_GB, le=catalog.MAX_STORAGE_GB, strict=True)]


class SizeIn(Input):
    number_of_nodes: NodeCount
    node_type: NodeTypeName
    # The seed's request size has no storage; a cluster's has. Optional here, with the catalog's default.
    storage: StorageGB = catalog.DEFAULT_STORAGE_GB


class Size(Model):
    number_of_nodes: int
    node_type: str
    storage: int


# --- requests ------------------------------------------------------------------------------------


class RequestIn(Input):
    name: CloudName
    cloud_provider_id: uuid.UUID
    size: SizeIn
    tools: Annotated[list[ToolIn], AfterValidator(_tools_once)] = Field(default_factory=list, max_length=50)
    services: Annotated[list[ServiceIn], AfterValidator(_services_once)] = Field(default_factory=list, max_length=20)


class DecisionIn(Input):
    status: Literal["approved", "rejected"]
    rejection_reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=10_000)] | None = None


class NoteIn(Input):
    note: NonBlank


class Note(Model):
    time: datetime
    by: User
    note: str


class ClusterRequest(Model):
    id: uuid.UUID
    name: str
    cloud_provider_id: uuid.UUID
    size: Size
    tools: list[RequestedTool]
    services: list[RequestedService]
    status: RequestStatus
    requested_by: User
    approved_by: User | None = None
    requested_at: datetime
    approved_at: datetime | None = None
    notes: list[Note]
    rejection_reason: str | None = None
    cluster_id: uuid.UUID | None = None

    @classmethod
    def from_row(cls, row: models.ClusterRequest) -> "ClusterRequest":
        return cls(
            id=row.id,
            name=row.name,
            cloud_provider_id=row.cloud_provider_id,
            size=Size(number_of_nodes=row.number_of_nodes, node_type=row.node_type, storage=row.storage_gb),
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
        )


# --- clusters ------------------------------------------------------------------------------------


class ClusterIn(Input):
    name: CloudName
    cloud_provider_id: uuid.UUID
    type: Literal["slurm"] = "slurm"
    size: SizeIn
    tools: Annotated[list[ToolIn], AfterValidator(_tools_once)] = Field(default_factory=list, max_length=50)
    services: Annotated[list[ServiceIn], AfterValidator(_services_once)] = Field(default_factory=list, max_length=20)


class Cluster(Model):
    id: uuid.UUID
    name: str
    cloud_provider_id: uuid.UUID
    type: Literal["slurm"]
    size: Size
    status: ClusterStatus
    status_reason: str | None = None
    tools: list[Tool]
    services: list[Service]
    created_at: datetime
    created_by: User
    request_id: uuid.UUID | None = None
    outputs: dict[str, Any]

    @classmethod
    def from_row(cls, row: models.Cluster, secrets: dict[uuid.UUID, dict[str, str]] | None = None) -> "Cluster":
        """`secrets` (service id -> decrypted credentials) only where the caller may see them."""
        secrets = secrets or {}
        return cls(
            id=row.id,
            name=row.name,
            cloud_provider_id=row.cloud_provider_id,
            type=row.type,
            size=Size(number_of_nodes=row.number_of_nodes, node_type=row.node_type, storage=row.storage_gb),
            status=row.status,
            status_reason=row.status_reason,
            tools=[Tool.model_validate(t) for t in row.tools],
            services=[Service.from_row(s, secrets.get(s.id)) for s in row.services],
            created_at=row.created_at,
            created_by=User.model_validate(row.created_by),
            request_id=row.request_id,
            outputs=row.outputs,
        )


class ClusterEvent(Model):
    step: str
    status: str
    time: datetime
    message: str


# --- cloud providers and the catalog -----------------------------------------------------------


class CloudProviderIn(Input):
    # Admins act in every tenant and may name one (extension); everyone else registers in their own.
    tenant_id: uuid.UUID | None = None
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    kind: ProviderKind
    region: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    config: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _config_fits_kind(self) -> "CloudProviderIn":
        check_config(self.kind, self.config)
        return self


class CloudProvider(Model):
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
    node_types: list[CatalogNodeType]
    tools: list[CatalogTool]
    services: list[CatalogService]
    storage_credits_per_gb_hour: float
    provider_notes: dict[str, str]
    nodes: dict[str, int]
    storage_gb: dict[str, int]


class Health(Model):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)
