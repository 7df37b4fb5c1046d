"""Dataclasses that travel through Temporal: one in and one out for every workflow, activity,
signal and update. Workflow code imports this module, so it imports nothing that does I/O."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.enums import ClusterStatus

# The type of the ApplicationError a provider's failure becomes; its one detail is a FailureDetail.
PROVIDER_FAILURE = "ProviderFailure"


def request_workflow_id(request_id: str) -> str:
    return f"request-{request_id}"


def cluster_workflow_id(cluster_id: str) -> str:
    return f"cluster-{cluster_id}"


@dataclass
class FailureDetail:
    """What a provider's failure carries from the activity to the workflow, beside its message: the step
    that failed and the kind of failure (core.providers.FailureClass)."""

    step: str
    failure_class: str

    @staticmethod
    def of(details: Sequence[Any], default_step: str) -> "FailureDetail":
        """The detail of a ProviderFailure as the workflow receives it (a dict, as the converter decodes a
        dataclass it is given no type for). Histories from before it was one object carried the step and
        the class as two values; they replay as they ran."""
        if details and isinstance(details[0], dict):
            return FailureDetail(str(details[0]["step"]), str(details[0]["failure_class"]))
        step, failure_class = (list(details) + [default_step, "bad configuration"])[:2]
        return FailureDetail(str(step), str(failure_class))


# --- the request (approval) workflow ---------------------------------------------------------


@dataclass
class RequestInput:
    request_id: str
    expires_after_seconds: float
    # The tenant, for the search attributes of the request and of the cluster it becomes. Optional, so
    # that inputs recorded before it existed still decode (those runs carry no tenant).
    tenant_id: str | None = None


@dataclass
class Decision:
    """An approval or rejection. `decided_by` is the deciding user's id or e-mail address,
    so that a person signalling from the Temporal CLI or web UI can name themselves."""

    status: str  # "approved" or "rejected"
    decided_by: str
    rejection_reason: str | None = None
    # Where the decision came from, for the audit log: "api <client address>", or a signal's "temporal".
    source: str = "temporal"
    # The API's proof that it made this decision (see `decision_text`): without it, whoever sent the
    # decision (a signal, or the update sent from the Temporal CLI) only claims to be `decided_by`.
    proof: str | None = None


def decision_text(
    request_id: str, status: str, decided_by: str | None, rejection_reason: str | None, source: str
) -> str:
    """What the API's proof of a decision covers."""
    return "\n".join(["decision", request_id, status, decided_by or "", rejection_reason or "", source])


@dataclass
class NoteInput:
    """A note signalled from the Temporal CLI or web UI."""

    request_id: str
    by: str  # the writer's user id or e-mail address
    note: str


@dataclass
class NoteRecord:
    note: NoteInput
    key: str  # made by the workflow, so writing the same note twice is a no-op


@dataclass
class DecisionRecord:
    request_id: str
    status: str
    decided_at: datetime
    decided_by: str | None  # None when the request expired
    rejection_reason: str | None
    cluster_id: str | None  # chosen by the workflow when approving, so a retry reuses it
    source: str = "platform"  # see Decision.source; an expiry is the platform's own
    proof: str | None = None  # see Decision.proof


@dataclass
class RequestState:
    status: str
    cluster_id: str | None = None
    # An approved request that resizes its cluster: what its workflow tells the cluster's.
    resize: "ResizeAsk | None" = None


# --- the cluster workflow --------------------------------------------------------------------


# The step-log name of installing a tool or starting a service.
INSTALL_STEP = {"tool": "install-tool", "service": "start-service"}


@dataclass
class Resize:
    """The size a cluster is resized to: its most nodes, and its scaling (min_nodes None: static)."""

    number_of_nodes: int
    min_nodes: int | None = None
    idle_seconds: int | None = None

    @classmethod
    def of(cls, sized: Any) -> "Resize":
        """The size of a cluster, request or ask as it stands (anything with these three fields)."""
        return cls(sized.number_of_nodes, sized.min_nodes, sized.idle_seconds)

    @property
    def floor(self) -> int:
        """How many nodes are always up at this size."""
        return self.number_of_nodes if self.min_nodes is None else self.min_nodes

    def describe(self) -> str:
        if self.min_nodes is None:
            return f"{self.number_of_nodes} node(s), always up"
        return f"{self.min_nodes} to {self.number_of_nodes} node(s), idle ones down after {self.idle_seconds} s"


@dataclass
class Operation:
    """Work queued on a cluster, run one at a time by its workflow."""

    kind: str  # "provision", "install_tool", "start_service" or "resize"
    item_id: str | None = None  # the tool or service, for installs
    label: str = ""  # what a person reads in the step log, e.g. "iverilog 12.0"
    resize: Resize | None = None  # what a resize makes of the cluster


@dataclass
class Lease:
    """When a cluster's lease ends, and when it warns of it (services/leases.py)."""

    expires_at: datetime
    warn_at: datetime


@dataclass
class ClusterState:
    """Everything the cluster workflow knows; carried across continue-as-new."""

    status: str = ClusterStatus.PENDING
    status_reason: str | None = None
    queue: list[Operation] = field(default_factory=lambda: [Operation("provision")])
    delete_requested: bool = False
    lease: Lease | None = None
    # The lease's warning has been given (for its end of now: an extension takes it back).
    lease_warned: bool = False


@dataclass
class ClusterInput:
    cluster_id: str
    state: ClusterState = field(default_factory=ClusterState)
    # Continue as new once the history is this long (Temporal also suggests it on its own).
    history_limit: int = 10_000
    tenant_id: str | None = None  # for the search attributes of its metering, as RequestInput.tenant_id


@dataclass
class ClusterRef:
    cluster_id: str


@dataclass
class ItemRef:
    """A tool or service of a cluster."""

    cluster_id: str
    item_id: str


@dataclass
class ToolRequest:
    name: str
    version: str


@dataclass
class ServiceRequest:
    name: str
    version: str
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class AddTool:
    cluster_id: str
    tool: ToolRequest


@dataclass
class AddService:
    cluster_id: str
    service: ServiceRequest


@dataclass
class Registration:
    """A tool or service as recorded on the cluster; one still `pending` needs installing."""

    item_id: str
    label: str
    status: str


@dataclass
class ItemFailed:
    """A tool or service that failed, written together with its line in the step log."""

    cluster_id: str
    kind: str  # "tool" or "service"
    item_id: str
    reason: str
    step: str
    key: str
    time: datetime


@dataclass
class StepRecord:
    cluster_id: str
    key: str  # made by the workflow, so writing the same step twice is a no-op
    step: str
    status: str  # started, succeeded, failed or retrying (for step "status": the cluster's new status)
    message: str
    time: datetime


@dataclass
class StatusChange:
    """A new cluster status, written together with its entry in the step log."""

    cluster_id: str
    key: str
    status: str
    reason: str | None
    time: datetime


@dataclass
class LeaseExtension:
    cluster_id: str
    until: datetime
    actor_id: str
    source: str
    key: str
    time: datetime


@dataclass
class ResizeAsk:
    """A resize asked for: by `actor_id` through the API, or approved in the request `request_id`."""

    cluster_id: str
    to: Resize
    actor_id: str
    source: str
    key: str
    time: datetime
    request_id: str | None = None


@dataclass
class ResizeRef:
    cluster_id: str
    to: Resize


@dataclass
class LeaseNotice:
    """A lease about to end (`ending`) or ended: a step-log line, and for `ending` the cluster.expiring event."""

    cluster_id: str
    expires_at: datetime
    ending: bool
    key: str
    time: datetime


@dataclass
class ProvisionOutcome:
    outputs: dict[str, Any]
    summary: str
    # The cluster's lease once it is available (None: it runs until deleted). Absent from older histories.
    lease: Lease | None = None


@dataclass
class StepOutcome:
    summary: str


@dataclass
class HealthReport:
    healthy: bool
    message: str


@dataclass
class PendingInstalls:
    operations: list[Operation]


# --- metering --------------------------------------------------------------------------------


def metering_workflow_id(cluster_id: str) -> str:
    return f"metering-{cluster_id}"


@dataclass
class MeteringInput:
    cluster_id: str


@dataclass
class CollectRequest:
    cluster_id: str
    now: datetime  # record the minutes that ended by then


@dataclass
class Collection:
    minutes: int  # how many minutes were recorded now
    finished: bool  # the cluster is no longer metered and all its minutes are recorded
    # Set when the tenant's balance is spent and its policy is to stop clusters: why this one must go.
    stop_reason: str | None = None


@dataclass
class StopRequest:
    """The platform itself asks for a cluster's teardown; the reason goes to its status and step log."""

    reason: str
