"""The provider-neutral interface every provider implements: a cluster spec in, outputs out."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from infra.catalog import NodeType

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ClusterSpec:
    cluster_id: str
    tenant: str
    name: str
    region: str
    number_of_nodes: int
    node_type: NodeType
    storage_gb: int
    # The provider's own settings, as registered (`POST /cloud-providers`).
    provider_config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterOutputs:
    head_node: str
    node_ids: list[str]
    storage_id: str

    def as_dict(self) -> dict[str, Any]:
        return {"headNode": self.head_node, "nodeIds": self.node_ids, "storageId": self.storage_id}


class ProvisioningFailed(Exception):
    """A step of provisioning failed in a way that running it again will not fix."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


class ProviderUnavailable(Exception):
    """This kind of provider cannot provision from this installation; the message says why."""


class Provider(Protocol):
    async def up(self, spec: ClusterSpec, progress: Progress) -> ClusterOutputs: ...

    async def destroy(self, spec: ClusterSpec, progress: Progress) -> None: ...

    async def health(self, spec: ClusterSpec, outputs: dict[str, Any]) -> list[str]:
        """The problems found; empty when the cluster is healthy."""
        ...
