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
from core.providers import FailureClass, PowerChange, ProviderFailure
from infra.clouds.monitoring import (
    AWS_BAD_CREDENTIALS,
    AWS_THROTTLED,
    AZURE_SCOPE,
    _azure_credential,
    _gcp_default_project,
    _short,
    _window,
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


def read_aws(plan: ClusterPlan, since: datetime, until: datetime, *, client: Any = None) -> list[PowerChange]:
    """EC2 DescribeInstances of the instances tagged with the cluster's id and a node, paged; pending and
    running instances from their launch, the others from the moment their transition reason gives.
    `client` is a boto3 EC2 client (made from the worker's AWS environment if not given)."""
    from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError
    from botocore.exceptions import ConnectionError as AwsConnectionError

    since, until = _window(since, until)
    region = plan.spec.region
    sightings = []
    with ExitStack() as made:
        try:
            if client is None:
                import boto3
                from botocore.config import Config

                client = boto3.client(
                    "ec2",
                    region_name=region,
                    config=Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=10, read_timeout=60),
                )
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
        except ClientError as e:
            raise _aws_failure(e) from None
        except NoCredentialsError:
            raise ProviderFailure(
                STEP,
                "EC2 cannot be asked: the worker has no AWS credentials (set AWS_PROFILE or "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or give it an instance role)",
                FailureClass.CONFIGURATION,
            ) from None
        except (AwsConnectionError, HTTPClientError) as e:
            raise ProviderFailure(
                STEP, f"EC2 in {region} could not be reached: {_short(e)}", FailureClass.OUTAGE
            ) from None
        except BotoCoreError as e:
            raise ProviderFailure(STEP, f"EC2 cannot be asked: {_short(e)}", FailureClass.CONFIGURATION) from None
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


def _aws_failure(error: Any) -> ProviderFailure:
    details = error.response.get("Error", {})
    code = details.get("Code", "Unknown")
    said = f"{code}: {details.get('Message', '')}".rstrip(": ")
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    if code in AWS_THROTTLED or status == 429 or status >= 500 or code in ("InternalError", "Unavailable"):
        return ProviderFailure(STEP, f"EC2 is unavailable or throttling: {_short(said)}", FailureClass.OUTAGE)
    if code in AWS_BAD_CREDENTIALS:
        hint = "check the worker's AWS credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, or its instance role)"
    elif code.startswith("AccessDenied") or code == "UnauthorizedOperation" or status == 403:
        hint = "give the worker's AWS identity ec2:DescribeInstances"
    else:
        hint = "the request was refused as it stands"
    return ProviderFailure(STEP, f"EC2 refused: {_short(said)}: {hint}", FailureClass.CONFIGURATION)


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

    since, until = _window(since, until)
    project = plan.config.project
    zone = plan.config.zone or f"{plan.spec.region}-a"
    sightings = []
    with ExitStack() as made:
        try:
            project = project or _gcp_default_project()
            if client is None:
                client = compute_v1.InstancesClient()
                made.callback(client.transport.close)
            request = compute_v1.ListInstancesRequest(
                project=project, zone=zone, filter=f'labels.{CLUSTER_TAG} = "{plan.labels[CLUSTER_TAG]}"'
            )
            for instance in client.list(request=request, timeout=60):
                if NODE_TAG in instance.labels:
                    sightings.append(_gcp_sighting(instance))
        except (api_errors.TooManyRequests, api_errors.ServerError, api_errors.RetryError) as e:
            raise ProviderFailure(
                STEP, f"Compute Engine is unavailable or throttling: {_short(e)}", FailureClass.OUTAGE
            ) from None
        except api_errors.GoogleAPICallError as e:
            if isinstance(e, api_errors.Unauthorized):
                hint = "check the worker's Google credentials (GOOGLE_APPLICATION_CREDENTIALS or workload identity)"
            elif isinstance(e, api_errors.Forbidden | api_errors.NotFound):
                hint = f"give the worker's service account compute.instances.list (roles/compute.viewer) on project {project}"
            else:
                hint = "the request was refused as it stands"
            raise ProviderFailure(
                STEP, f"Compute Engine refused: {_short(e)}: {hint}", FailureClass.CONFIGURATION
            ) from None
        except auth_errors.DefaultCredentialsError:
            raise ProviderFailure(
                STEP,
                "Compute Engine cannot be asked: the worker has no Google credentials (set "
                "GOOGLE_APPLICATION_CREDENTIALS, or use workload identity)",
                FailureClass.CONFIGURATION,
            ) from None
        except (auth_errors.TransportError, requests.RequestException) as e:
            raise ProviderFailure(STEP, f"Google could not be reached: {_short(e)}", FailureClass.OUTAGE) from None
        except auth_errors.GoogleAuthError as e:
            raise ProviderFailure(
                STEP, f"Google refused the worker's credentials: {_short(e)}", FailureClass.CONFIGURATION
            ) from None
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
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    since, until = _window(since, until)
    scope = AZURE_SCOPE.match(str(outputs.get("storageId") or ""))
    if scope is None:
        raise ProviderFailure(
            STEP,
            "the cluster's outputs have no Azure storageId (/subscriptions/.../resourceGroups/...) to find its "
            "VMs from: refresh or re-provision the cluster",
        )
    subscription, group = scope["subscription"], scope["group"]
    sightings = []
    with ExitStack() as made:
        try:
            if compute_client is None:
                from azure.mgmt.compute import ComputeManagementClient

                if credential is None:
                    credential = _azure_credential()
                    made.callback(credential.close)
                compute_client = made.enter_context(ComputeManagementClient(credential, subscription))
            for vm in compute_client.virtual_machines.list(group, expand="instanceView"):
                tags = vm.tags or {}
                if tags.get(CLUSTER_TAG) == plan.spec.cluster_id and NODE_TAG in tags:
                    sightings.append(_azure_sighting(vm))
        except ClientAuthenticationError as e:
            raise ProviderFailure(
                STEP,
                f"Azure refused the worker's credentials: {_short(e)}: set AZURE_CLIENT_ID, AZURE_TENANT_ID and "
                "AZURE_CLIENT_SECRET (or Pulumi's ARM_* ones) on the worker, or give it a managed identity",
                FailureClass.CONFIGURATION,
            ) from None
        except HttpResponseError as e:
            raise _azure_failure(e, group) from None
        except (ServiceRequestError, ServiceResponseError) as e:
            raise ProviderFailure(STEP, f"Azure could not be reached: {_short(e)}", FailureClass.OUTAGE) from None
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


def _azure_failure(error: Any, group: str) -> ProviderFailure:
    code = error.error.code if error.error is not None and error.error.code else (error.reason or "error")
    status = error.status_code or 0
    said = f"{code}: {error.error.message if error.error is not None else error.message}"
    if status == 429 or status >= 500:
        return ProviderFailure(STEP, f"Azure Compute is unavailable or throttling: {_short(said)}", FailureClass.OUTAGE)
    if status == 403:
        hint = (
            f"give the worker's identity Microsoft.Compute/virtualMachines/read on resource group {group} "
            "(the Reader or Monitoring Reader role)"
        )
    elif status == 404:
        hint = "the cluster's resources are not where its outputs say: refresh the cluster"
    else:
        hint = "the request was refused as it stands"
    return ProviderFailure(STEP, f"Azure Compute refused: {_short(said)}: {hint}", FailureClass.CONFIGURATION)
