"""The statuses and roles the platform stores and answers with, one StrEnum each: of cluster requests,
clusters, their nodes, tools and services, webhook deliveries, and users' roles.

A member is its string (`RequestStatus.PENDING == "pending"`) and is stored, sent through Temporal,
put in search attributes and answered by the API as that plain string, so the values below are the
ones in the database, in recorded workflow histories and in the API reference: never change one.
The API's schemas (api/schemas.py) derive their Literals from these. Workflow code imports this
module, so it imports nothing that does I/O.

Not here: the outcomes of steps in a cluster's log (started, succeeded, failed, retrying), and the request's `expired` search-attribute label (core/search_attributes.py;
an expired request is stored as `rejected`).
"""

from enum import StrEnum


class RequestStatus(StrEnum):
    """A cluster request's: `pending` until an IT manager decides (or it expires, as `rejected`)."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class ClusterStatus(StrEnum):
    PENDING = "pending"
    PROVISIONING = "provisioning"
    AVAILABLE = "available"
    ERROR = "error"
    DELETING = "deleting"
    DELETED = "deleted"


class NodeState(StrEnum):
    """A compute node's power: an elastic cluster's nodes above its floor are `down` until jobs need them.
    A node is charged from the moment it starts powering up until it is down (what a cloud bills)."""

    UP = "up"
    POWERING_UP = "powering-up"
    DOWN = "down"
    POWERING_DOWN = "powering-down"
    FAILED = "failed"

    @property
    def charged(self) -> bool:
        return self in (NodeState.UP, NodeState.POWERING_UP, NodeState.POWERING_DOWN)


class ToolStatus(StrEnum):
    PENDING = "pending"
    INSTALLING = "installing"
    INSTALLED = "installed"
    FAILED = "failed"


class ServiceStatus(StrEnum):
    PENDING = "pending"
    PROVISIONING = "provisioning"
    RUNNING = "running"
    FAILED = "failed"
    STOPPED = "stopped"


class Role(StrEnum):
    CAD_MANAGER = "cad_manager"
    IT_MANAGER = "it_manager"
    ADMIN = "admin"


class DeliveryStatus(StrEnum):
    """A webhook delivery's: pending until it is delivered, it has failed for good (retries given up), or
    it is dropped (its webhook was deleted first)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    DROPPED = "dropped"
