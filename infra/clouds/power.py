"""An elastic cloud cluster's node power, read from the cloud's list of the cluster's instances: EC2
DescribeInstances on AWS, the Compute Engine instances of the cluster's zone on GCP, the VMs of the
cluster's resource group on Azure.

The nodes above a cluster's floor are powered up by Slurm's ResumeProgram on the head node, which
launches one instance per node, and down by its SuspendProgram, which terminates it. Such an instance is
named `<prefix>-<node>` (ClusterPlan.prefix), and carries the cluster's tags (GCP: labels) and
`hpcinfra-node=<node>`, by which it is found here.

`read_power` reports each node above the floor in the state its cloud shows now, at the moment it
entered it as far as the cloud tells, else at `until`, and always within [since, until]. The caller records
a change only when it is new (services/nodes.py apply), so reporting a node's current state with every
collection is safe. A node with no instance is down; a node with several (a terminated one and its
successor) is what its newest says; an instance in a state not mapped here changes nothing. The calls
block: run them in a thread. Credentials come from each SDK's own environment on the worker, as for
the monitoring readers (infra/clouds/monitoring.py).

What the worker's identity needs: ec2:DescribeInstances (AWS); compute.instances.list in the project,
as in roles/compute.viewer (GCP); Microsoft.Compute/virtualMachines/read on the cluster's resource group,
which Monitoring Reader (needed for utilisation) already grants (Azure).
"""

import re
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.enums import NodeState
from core.providers import PowerChange, ProviderFailure
from infra.clouds.cloud_errors import (
    aws_client,
    aws_failure,
    azure_credential,
    azure_failure,
    azure_scope,
    gcp_default_project,
    gcp_failure,
    window,
)
from infra.clouds.plan import ClusterPlan

STEP = "power"
NODE_TAG = "hpcinfra-node"
CLUSTER_TAG = "hpcinfra-cluster-id"


@dataclass(frozen=True)
class Sighting:
    """One instance of an elastic node, as its cloud lists it now."""

    node: str
    created: datetime  # which of a node's instances is the newest
    state: NodeState | None  # None: a state of the cloud's that this module does not map
    entered: datetime | None  # when it entered that state, if the cloud tells


def read_power(cloud: str, plan: ClusterPlan, outputs: dict, since: datetime, until: datetime) -> list[PowerChange]:
    """The state now of each of the cluster's nodes above its floor, oldest first, each at a moment of
    [since, until]: none for a static cluster. `outputs` are the stack's (Azure finds the cluster's
    resource group from its `storageId`). Raises ProviderFailure("power", ...): an outage (throttling, 5xx,
    connection) or bad configuration (credentials, permissions)."""
    if plan.spec.scaling is None:
        return []
    if cloud == "aws":
        return read_aws(plan, since, until)
    if cloud == "gcp":
        return read_gcp(plan, since, until)
    if cloud == "azure":
        return read_azure(plan, outputs, since, until)
    raise ProviderFailure(STEP, f"there is no instance list to read for provider kind {cloud!r}")


def changes_of(plan: ClusterPlan, sightings: Iterable[Sighting], since: datetime, until: datetime) -> list[PowerChange]:
    """What the sightings say of the nodes above the floor, oldest first (nodes of equal moments in their
    order): a node not sighted is down."""
    newest: dict[str, Sighting] = {}
    for sighting in sightings:
        known = newest.get(sighting.node)
        if known is None or sighting.created > known.created:
            newest[sighting.node] = sighting
    changes = []
    for node in plan.node_names[plan.spec.floor :]:
        sighting = newest.get(node)
        if sighting is None:
            changes.append(PowerChange(node, NodeState.DOWN, until))
        elif sighting.state is not None:
            at = (sighting.entered or until).astimezone(UTC)
            changes.append(PowerChange(node, sighting.state, min(max(at, since), until)))
    return sorted(changes, key=lambda change: change.at)


# ---------------------------------------------------------------------------------------------- AWS

AWS_STATES = {
    "pending": NodeState.POWERING_UP,
    "running": NodeState.UP,
    "shutting-down": NodeState.POWERING_DOWN,
    "stopping": NodeState.POWERING_DOWN,
    "terminated": NodeState.DOWN,
    "stopped": NodeState.DOWN,
}
# EC2 writes when an instance was told to stop or terminate only into this text, e.g.
# "User initiated (2025-03-04 10:03:21 GMT)".
AWS_TRANSITION_TIME = re.compile(r"\((\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) GMT\)")
AWS_OUTAGE_CODES = ("InternalError", "Unavailable")  # EC2's own faults


def read_aws(plan: ClusterPlan, since: datetime, until: datetime, *, client: Any = None) -> list[PowerChange]:
    """EC2 DescribeInstances of the instances tagged with the cluster's id and a node, paged; pending and
    running instances from their launch, the others from the moment their transition reason gives.
    `client` is a boto3 EC2 client (made from the worker's AWS environment if not given)."""
    from botocore.exceptions import BotoCoreError, ClientError

    since, until = window(since, until)
    region = plan.spec.region
    sightings = []
    with ExitStack() as made:
        try:
            if client is None:
                client = aws_client("ec2", region)
                made.callback(client.close)
            pages = client.get_paginator("describe_instances").paginate(
                Filters=[
                    {"Name": f"tag:{CLUSTER_TAG}", "Values": [plan.spec.cluster_id]},
                    {"Name": "tag-key", "Values": [NODE_TAG]},
                ]
            )
            for page in pages:
                for reservation in page.get("Reservations", []):
                    sightings += [_aws_sighting(instance) for instance in reservation.get("Instances", [])]
        except (ClientError, BotoCoreError) as e:
            raise aws_failure(
                e,
                step=STEP,
                service="EC2",
                region=region,
                permission="ec2:DescribeInstances",
                outage_codes=AWS_OUTAGE_CODES,
            ) from None
    return changes_of(plan, sightings, since, until)


def _aws_sighting(instance: dict) -> Sighting:
    tags = {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}
    launched = instance["LaunchTime"]
    state = AWS_STATES.get(instance["State"]["Name"])
    if state in (NodeState.POWERING_UP, NodeState.UP):
        moment = launched
    else:
        said = AWS_TRANSITION_TIME.search(instance.get("StateTransitionReason", ""))
        moment = datetime.strptime(said[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC) if said else None
    return Sighting(tags[NODE_TAG], launched, state, moment)


# ---------------------------------------------------------------------------------------------- GCP

GCP_STATES = {
    "PROVISIONING": NodeState.POWERING_UP,
    "STAGING": NodeState.POWERING_UP,
    "RUNNING": NodeState.UP,
    "PENDING_STOP": NodeState.POWERING_DOWN,
    "STOPPING": NodeState.POWERING_DOWN,
    "SUSPENDING": NodeState.POWERING_DOWN,
    "SUSPENDED": NodeState.DOWN,
    "TERMINATED": NodeState.DOWN,
}


def read_gcp(plan: ClusterPlan, since: datetime, until: datetime, *, client: Any = None) -> list[PowerChange]:
    """Compute Engine instances.list in the cluster's zone (`zone` of the config, else <region>-a),
    filtered on the cluster's id label; each instance's state from its creation, last start or last stop.
    The project is the config's, else GOOGLE_PROJECT (as for Pulumi), else the SDK's default; `client` is
    a google.cloud.compute_v1.InstancesClient (made from the worker's Google environment if not given)."""
    import google.auth.exceptions as auth_errors
    import requests
    from google.api_core import exceptions as api_errors
    from google.cloud import compute_v1

    since, until = window(since, until)
    project = plan.config.project
    zone = plan.config.zone or f"{plan.spec.region}-a"
    sightings = []
    with ExitStack() as made:
        try:
            project = project or gcp_default_project(STEP, "instances")
            if client is None:
                client = compute_v1.InstancesClient()
                made.callback(client.transport.close)
            request = compute_v1.ListInstancesRequest(
                project=project, zone=zone, filter=f'labels.{CLUSTER_TAG} = "{plan.labels[CLUSTER_TAG]}"'
            )
            for instance in client.list(request=request, timeout=60):
                if NODE_TAG in instance.labels:
                    sightings.append(_gcp_sighting(instance))
        except (
            api_errors.GoogleAPICallError,
            api_errors.RetryError,
            auth_errors.GoogleAuthError,
            requests.RequestException,  # REST, unlike gRPC, lets a lost connection through as it is
        ) as e:
            permission = f"compute.instances.list (roles/compute.viewer) on project {project}"
            raise gcp_failure(e, step=STEP, service="Compute Engine", permission=permission) from None
    return changes_of(plan, sightings, since, until)


def _gcp_sighting(instance: Any) -> Sighting:
    created = _gcp_time(instance.creation_timestamp)
    state = GCP_STATES.get(instance.status)
    if state is NodeState.POWERING_UP:
        moment = created
    elif state is NodeState.UP:
        moment = _gcp_time(instance.last_start_timestamp) or created
    elif instance.status == "SUSPENDED":
        moment = _gcp_time(instance.last_suspended_timestamp)
    elif state is NodeState.DOWN:
        moment = _gcp_time(instance.last_stop_timestamp)
    else:
        moment = None  # the API does not say when a stop or suspension began
    return Sighting(instance.labels[NODE_TAG], created, state, moment)


def _gcp_time(text: str) -> datetime | None:
    """An RFC 3339 timestamp of the API's (e.g. 2025-03-04T02:00:00.123-08:00); None for an empty one."""
    return datetime.fromisoformat(text) if text else None


# -------------------------------------------------------------------------------------------- Azure

AZURE_POWER_STATES = {
    "PowerState/starting": NodeState.POWERING_UP,
    "PowerState/running": NodeState.UP,
    "PowerState/stopping": NodeState.POWERING_DOWN,
    "PowerState/deallocating": NodeState.POWERING_DOWN,
    "PowerState/stopped": NodeState.DOWN,
    "PowerState/deallocated": NodeState.DOWN,
}


def read_azure(
    plan: ClusterPlan,
    outputs: dict,
    since: datetime,
    until: datetime,
    *,
    credential: Any = None,
    compute_client: Any = None,
) -> list[PowerChange]:
    """The VMs of the resource group that holds the cluster's shared disk (`outputs["storageId"]`), with
    their instance views, in one paged list: each node's VM by its power state, or powering down while
    it is being deleted. Up and powering up from its creation; down from the time of its last provisioning
    operation (the deallocation).

    `compute_client` is an azure.mgmt.compute ComputeManagementClient, made if not given with `credential`
    (else the worker's, as for the monitoring readers)."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    since, until = window(since, until)
    subscription, group = azure_scope(outputs, STEP)
    sightings = []
    with ExitStack() as made:
        try:
            if compute_client is None:
                from azure.mgmt.compute import ComputeManagementClient

                if credential is None:
                    credential = azure_credential()
                    made.callback(credential.close)
                compute_client = made.enter_context(ComputeManagementClient(credential, subscription))
            for vm in compute_client.virtual_machines.list(group, expand="instanceView"):
                tags = vm.tags or {}
                if tags.get(CLUSTER_TAG) == plan.spec.cluster_id and NODE_TAG in tags:
                    sightings.append(_azure_sighting(vm))
        except (HttpResponseError, ServiceRequestError, ServiceResponseError) as e:
            permission = f"Microsoft.Compute/virtualMachines/read on resource group {group} (the Reader or Monitoring Reader role)"
            raise azure_failure(e, step=STEP, service="Azure Compute", permission=permission) from None
    return changes_of(plan, sightings, since, until)


def _azure_sighting(vm: Any) -> Sighting:
    statuses = vm.instance_view.statuses if vm.instance_view is not None else []
    codes = {status.code: status for status in statuses or [] if status.code}
    power = next((code for code in codes if code.startswith("PowerState/")), None)
    provisioned = next((status for code, status in codes.items() if code.startswith("ProvisioningState/")), None)
    created = vm.time_created
    if vm.provisioning_state == "Deleting":
        state = NodeState.POWERING_DOWN
    elif power is None and vm.provisioning_state == "Creating":
        state = NodeState.POWERING_UP  # no power state before the VM first boots
    else:
        state = AZURE_POWER_STATES.get(power)
    if state in (NodeState.POWERING_UP, NodeState.UP):
        moment = created
    elif state is NodeState.DOWN and provisioned is not None:
        moment = provisioned.time
    else:
        moment = None
    return Sighting(vm.tags[NODE_TAG], created, state, moment)
