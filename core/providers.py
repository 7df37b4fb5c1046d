"""The provider-neutral interface every provider implements: a cluster spec in, outputs out; the
kinds of provider, and which cloud accounts a provider may name.

Failures carry a class, so the platform knows whether running the step again may help and can tell
a person which kind of failure it was.
"""

import asyncio
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from pydantic import ValidationError

from core.catalog import NodeType
from core.enums import NodeState

Progress = Callable[[str], None]


def describe_validation_error(error: "ValidationError") -> str:
    """A pydantic validation error as one line a person can act on: `field: problem; ...`."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in error.errors())


def threadsafe(progress: Progress) -> Progress:
    """`progress` for work running in another thread: each line is handed to the caller's event loop."""
    loop = asyncio.get_running_loop()
    return lambda line: loop.call_soon_threadsafe(progress, line)


class FailureClass(StrEnum):
    CAPACITY_OR_QUOTA = "capacity or quota"
    CONFIGURATION = "bad configuration"
    OUTAGE = "provider outage"
    TIMEOUT = "timeout"

    @property
    def retryable(self) -> bool:
        """Worth retrying automatically: the same call may well succeed later. Capacity and quota
        need a person (another size, region or a raised quota), bad configuration a fix."""
        return self in (FailureClass.OUTAGE, FailureClass.TIMEOUT)


class ProviderFailure(Exception):
    """A provider step failed. The message is for people and never contains a secret."""

    def __init__(self, step: str, message: str, failure_class: FailureClass = FailureClass.CONFIGURATION) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message
        self.failure_class = failure_class


class ProviderUnavailable(Exception):
    """This kind of provider cannot provision from this installation; the message says why."""


# The platform's own variables, none of which a cluster's processes or a cloud program need: its
# settings (HPCINFRA_*: the database URL, the credential keys, the passphrase), its telemetry (OTEL_*: the
# collector's address, and in OTEL_EXPORTER_OTLP_HEADERS often a token), a Temporal client's (TEMPORAL_*:
# address, API key, TLS keys), and libpq's (PGPASSWORD, PGHOST, ...), which its database driver reads.
PLATFORM_VARIABLES = re.compile(r"HPCINFRA_|OTEL_|TEMPORAL_|PG[A-Z]+$")


def cluster_environment(**extra: str) -> dict[str, str]:
    """The worker's environment less the platform's own variables, with `extra`: what a provider's
    commands and daemons run with."""
    kept = {name: value for name, value in os.environ.items() if not PLATFORM_VARIABLES.match(name)}
    return {**kept, **extra}


# The user name of every service the platform starts; its password is generated per service.
SERVICE_USER = "hpcinfra"


@dataclass(frozen=True)
class ToolSpec:
    name: str
    version: str


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    version: str
    config: dict[str, Any]
    port: int


def node_names(number_of_nodes: int) -> list[str]:
    """A cluster's compute nodes' names, as Slurm knows them: the first of them are its floor."""
    return [f"node-{i}" for i in range(number_of_nodes)]


@dataclass(frozen=True)
class Scaling:
    """An elastic cluster's: `min_nodes` of its nodes are always up; the rest are powered up when jobs
    queue for them and down once idle for `idle_seconds`."""

    min_nodes: int
    idle_seconds: int


@dataclass(frozen=True)
class PowerChange:
    """A compute node's power changed, at `at` (UTC), as its provider saw it."""

    node: str
    state: NodeState
    at: datetime


@dataclass(frozen=True)
class ClusterSpec:
    """What a cluster should be: its size, and the tools and services it should have now
    (a provider that builds the whole cluster from one description, as Pulumi does, needs them all)."""

    cluster_id: str
    tenant: str
    name: str
    region: str
    number_of_nodes: int
    node_type: NodeType
    storage_gb: int
    # The provider's own settings, as registered (`POST /cloud-providers`).
    provider_config: dict[str, Any] = field(default_factory=dict)
    tools: tuple[ToolSpec, ...] = ()
    services: tuple[ServiceSpec, ...] = ()
    # The credentials of those services, by service name: never printed, never logged.
    secrets: dict[str, "ServiceSecret"] = field(default_factory=dict, repr=False, compare=False)
    # None for a static cluster: every node up while the cluster is.
    scaling: Scaling | None = None
    # When it last became available (None before): where a simulated demand starts.
    available_since: datetime | None = None
    # The nodes a resize is about to remove, which take no new jobs meanwhile (Provider.drain).
    draining: tuple[str, ...] = ()

    @property
    def floor(self) -> int:
        """How many nodes are always up (the first ones)."""
        return self.number_of_nodes if self.scaling is None else self.scaling.min_nodes

    @property
    def node_names(self) -> list[str]:
        return node_names(self.number_of_nodes)


@dataclass(frozen=True)
class ClusterOutputs:
    head_node: str
    node_ids: list[str]
    storage_id: str
    # What else a person needs to use the cluster (e.g. the local provider's SLURM_CONF path).
    extras: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"headNode": self.head_node, "nodeIds": self.node_ids, "storageId": self.storage_id, **self.extras}


@dataclass(frozen=True)
class ServiceSecret:
    """What the platform generated for a service. Providers pass it to the service and never log it."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"ServiceSecret(username={self.username!r}, password=***)"


@dataclass(frozen=True)
class Utilisation:
    """One reading of a cluster's use, each as a percentage of what it has: the metric source."""

    cpu_percent: float
    memory_percent: float
    storage_percent: float


class Provider(Protocol):
    async def up(self, spec: ClusterSpec, progress: Progress) -> ClusterOutputs: ...

    async def destroy(self, spec: ClusterSpec, progress: Progress) -> None:
        """Remove whatever of the cluster exists; safe to run on a cluster that is partly or not at all there."""
        ...

    async def health(self, spec: ClusterSpec) -> list[str]:
        """The problems found; empty when the cluster is healthy."""
        ...

    async def install_tool(self, spec: ClusterSpec, tool: ToolSpec, progress: Progress) -> None: ...

    async def start_service(
        self, spec: ClusterSpec, service: ServiceSpec, secret: ServiceSecret, progress: Progress
    ) -> dict[str, Any]:
        """Bring the service up with the platform's credentials; returns where it answers (host, port)."""
        ...

    async def stop_service(self, spec: ClusterSpec, service: ServiceSpec, progress: Progress) -> None: ...

    async def utilisation(
        self, spec: ClusterSpec, outputs: dict[str, Any], start: datetime, end: datetime
    ) -> dict[datetime, Utilisation]:
        """How much of its CPUs, memory and storage the cluster used in each whole minute of [start, end),
        by the minute's start (UTC); `outputs` are what provisioning reported. A minute the provider
        has no reading for is left out (the collector carries the reading before it forward)."""
        ...

    async def power_changes(
        self, spec: ClusterSpec, outputs: dict[str, Any], since: datetime, until: datetime
    ) -> list[PowerChange]:
        """The changes of the elastic nodes' power in [since, until], oldest first: none for a static
        cluster. The nodes below the floor are up whenever the cluster is, and are not in it."""
        ...

    async def drain(self, spec: ClusterSpec, outputs: dict[str, Any], nodes: list[str]) -> list[str]:
        """Give `nodes` (about to be removed by a resize) no new jobs; returns those still running jobs,
        which the caller asks about again later (none: all of them may go). Asking again changes nothing."""
        ...


# Which kinds of provider there are, and which clouds' accounts a provider may name.
KINDS = ("sim", "local", "aws", "gcp", "azure")
CLOUDS = ("aws", "gcp", "azure")
# Kinds whose clusters run on the platform's own machines: `local` starts root processes on the worker's
# host, so only admins register it. (`sim` runs nothing: it writes a file per cluster in the data folder.)
ON_PLATFORM_MACHINES = ("local",)
# The setting that lists the cloud accounts providers may name (core.settings).
ALLOWED_ACCOUNTS_SETTING = "HPCINFRA_ALLOWED_CLOUD_ACCOUNTS"
# Account ids as each cloud writes them, and which config key names a provider's account.
AWS_ACCOUNT = r"^[0-9]{12}$"
AZURE_SUBSCRIPTION = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# A project id, perhaps of a domain (example.com:my-project).
GCP_PROJECT = r"^([a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$"
ACCOUNT_KEYS = {"aws": "accountId", "gcp": "project", "azure": "subscriptionId"}


def check_account(kind: str, config: dict[str, Any], tenant: str, allowed: Sequence[str]) -> None:
    """Refuse a cloud provider of the tenant named `tenant` whose account (AWS), project (GCP) or
    subscription (Azure) is not one the operator allows it (`allowed`: entries `<cloud>:<account>` for
    every tenant, `<tenant>/<cloud>:<account>` for that tenant alone; empty allows any). With a list, a
    provider must name its account: one left to the worker's credentials could be any. The message does
    not repeat the list, nor say whether another tenant may use the account: both are the operator's."""
    if kind not in CLOUDS or not allowed:
        return
    key = ACCOUNT_KEYS[kind]
    account = config.get(key)
    if not account:
        raise ValueError(
            f"{ALLOWED_ACCOUNTS_SETTING} limits the {kind} accounts of this platform: a {kind} provider must name its {key}"
        )
    # Azure writes subscription ids in either case; the others' ids have one. Tenant names are exact:
    # "Acme" and "acme" may be two tenants.
    wanted = f"{kind}:{account}".lower()
    for entry in allowed:
        scope, target = _split_entry(entry)
        if target.lower() == wanted and scope in (None, tenant):
            return
    raise ValueError(
        f"{kind} {key} {account!r} is not one of the accounts {ALLOWED_ACCOUNTS_SETTING} allows this tenant"
    )


def check_account_entry(entry: str) -> None:
    """Refuse an entry of the allowed-accounts setting that names no account of a cloud, or names it for
    a tenant by a name no tenant can have."""
    patterns = {"aws": AWS_ACCOUNT, "gcp": GCP_PROJECT, "azure": AZURE_SUBSCRIPTION}
    scope, target = _split_entry(entry)
    cloud, _, account = target.partition(":")
    if cloud not in patterns or not re.fullmatch(patterns[cloud], account):
        raise ValueError(
            f"{ALLOWED_ACCOUNTS_SETTING}: {entry!r} is none of aws:<12-digit account id>, gcp:<project id>, "
            "azure:<subscription id>, each alone or after '<tenant name>/'"
        )
    # Tenant names are stripped of surrounding spaces when tenants are made (services.accounts).
    if scope is not None and (not scope or scope != scope.strip()):
        raise ValueError(
            f"{ALLOWED_ACCOUNTS_SETTING}: {entry!r} names no tenant before its '/': a tenant's name is not empty "
            "and neither starts nor ends with a space"
        )


def _split_entry(entry: str) -> tuple[str | None, str]:
    """An allowed-accounts entry as (its tenant, None for every tenant; `<cloud>:<account>`). No account id
    has a '/', and a tenant's name may: the last '/' is the one that ends the tenant's name."""
    scope, slash, target = entry.rpartition("/")
    return (scope if slash else None), target
