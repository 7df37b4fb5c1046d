"""A cloud cluster's utilisation, read from its cloud's monitoring API: CloudWatch on AWS, Cloud
Monitoring on GCP, Azure Monitor on Azure.

`read_utilisation` returns one reading per whole minute of [start, end) for which the cloud has CPU data
for at least one compute node (the head node is not counted): each of CPU, memory and storage is the
mean, over the compute nodes that reported it in that minute, of the node's one-minute average. Minutes
without CPU data are absent (the caller carries the previous reading forward). The calls block: run them
in a thread. Credentials come from each SDK's own environment on the worker, as Pulumi's do, and never
appear in a message.

CPU is measured by the cloud itself, with nothing installed on the nodes:
- AWS: `AWS/EC2 CPUUtilization` of each instance, every minute as the program turns on detailed
  monitoring (without it EC2 sends it every five minutes, and the caller carries readings forward).
- GCP: `compute.googleapis.com/instance/cpu/utilization` of each instance, a fraction (×100 here).
- Azure: `Percentage CPU` of each VM.

Memory and storage are measured inside the guest and need the cloud's agent on every compute node, which
the Pulumi programs do not install yet (Azure's memory excepted). A minute with CPU data but none for
memory or storage reads 0.0 for them. What each cluster must install and allow:
- AWS: the CloudWatch agent (package amazon-cloudwatch-agent), with an instance role allowed
  cloudwatch:PutMetricData (the CloudWatchAgentServerPolicy) and this in its configuration, so that
  `CWAgent mem_used_percent` and `CWAgent disk_used_percent` exist with the single dimension InstanceId
  (the disk one is then the shared storage's use, as each node sees its NFS mount):
      {"metrics": {"append_dimensions": {"InstanceId": "${aws:InstanceId}"},
                   "aggregation_dimensions": [["InstanceId"]],
                   "metrics_collected": {
                       "mem": {"measurement": ["mem_used_percent"], "metrics_collection_interval": 60},
                       "disk": {"measurement": ["used_percent"], "resources": ["/shared"],
                                "metrics_collection_interval": 60}}}}
- GCP: the Ops Agent (google-cloud-ops-agent, default configuration), with the instances' service
  account allowed roles/monitoring.metricWriter: memory is `agent.googleapis.com/memory/percent_used`
  (state "used"), storage `agent.googleapis.com/disk/percent_used` (state "used"), the mean over the
  node's devices (loop devices and memory file systems left out): the Ops Agent cannot be
  limited to one mount.
- Azure: memory is the VM's platform metric `Available Memory Percentage` (used = 100 - available),
  which needs no agent of ours; the node type is not known here, so `Available Memory Bytes` is not used.
  Storage needs the Azure Monitor Agent extension and a data collection rule that sends the counter
  `Logical Disk(*)\\% Used Space` to Azure Monitor Metrics: `disk/used_percent` in the namespace
  `azure.vm.linux.guestmetrics`, the mean over the node's file systems.

What the worker's identity needs: cloudwatch:GetMetricData (AWS); roles/monitoring.viewer on the project
(GCP); Monitoring Reader on the cluster's resource group (Azure: it lists the group's VMs as well).
"""

import re
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

from core.providers import FailureClass, ProviderFailure, Utilisation
from infra.clouds.cloud_errors import (
    aws_client,
    aws_failure,
    azure_credential,
    azure_failure,
    azure_scope,
    gcp_default_project,
    gcp_failure,
    short,
    window,
)
from infra.clouds.plan import CloudConfig

STEP = "metrics"
MINUTE = timedelta(minutes=1)
PERIOD_SECONDS = 60
KINDS = ("cpu", "memory", "storage")

# kind -> node id -> minute (aware UTC, its start) -> percent
Readings = dict[str, dict[str, dict[datetime, float]]]


def read_utilisation(
    cloud: str,
    region: str,
    config: CloudConfig,
    node_ids: list[str],
    outputs: dict,
    start: datetime,
    end: datetime,
) -> dict[datetime, Utilisation]:
    """The cluster's readings per minute of [start, end), keyed by the minute's start (aware UTC); see the
    module's docstring for what each cloud gives. `node_ids` are the stack's `nodeIds`: EC2 instance ids,
    GCP numeric instance ids, or Azure VM ids (vmId GUIDs). An Azure VM id alone cannot address a metric,
    which needs the VM's ARM resource id: the subscription and resource group are taken from
    `outputs["storageId"]` (the shared disk's ARM id) and the VMs of that group are listed to match them.
    Raises ProviderFailure("metrics", ...): an outage (throttling, 5xx, connection) or bad configuration
    (credentials, permissions, something not found)."""
    start, end = window(start, end)
    if not node_ids or start >= end:
        return {}
    if cloud == "aws":
        return read_aws(region, node_ids, start, end)
    if cloud == "gcp":
        return read_gcp(config.project, node_ids, start, end)
    if cloud == "azure":
        return read_azure(outputs, node_ids, start, end)
    raise ProviderFailure(STEP, f"there is no monitoring API to read for provider kind {cloud!r}")


# ---------------------------------------------------------------------------------------------- AWS

# kind -> (namespace, metric); each is read with the one dimension InstanceId.
AWS_METRICS = {
    "cpu": ("AWS/EC2", "CPUUtilization"),
    "memory": ("CWAgent", "mem_used_percent"),
    "storage": ("CWAgent", "disk_used_percent"),
}
AWS_QUERIES_PER_CALL = 500  # GetMetricData's limit
AWS_INSTANCE_ID = re.compile(r"i-[0-9a-f]{8,32}")
AWS_PERMISSION = "cloudwatch:GetMetricData"
AWS_OUTAGE_CODES = ("InternalFailure", "ServiceUnavailable")  # CloudWatch's own faults


def read_aws(
    region: str, instance_ids: Sequence[str], start: datetime, end: datetime, *, client: Any = None
) -> dict[datetime, Utilisation]:
    """CloudWatch GetMetricData for the instances: one query per instance and metric (period 60 s,
    average), paged. `client` is a boto3 CloudWatch client (made from the worker's AWS environment if not
    given)."""
    from botocore.exceptions import BotoCoreError, ClientError

    start, end = window(start, end)
    for instance_id in instance_ids:
        if not AWS_INSTANCE_ID.fullmatch(instance_id):
            raise ProviderFailure(STEP, f"{instance_id!r} is not an EC2 instance id (i-...): is the cluster on AWS?")
    readings: Readings = {kind: {} for kind in KINDS}
    with ExitStack() as made:
        try:
            if client is None:
                client = aws_client("cloudwatch", region)
                made.callback(client.close)
            per_call = AWS_QUERIES_PER_CALL // len(AWS_METRICS)
            for chunk in _chunks(list(instance_ids), per_call):
                queries, owners = _aws_queries(chunk)
                pages = client.get_paginator("get_metric_data").paginate(
                    MetricDataQueries=queries, StartTime=start, EndTime=end, ScanBy="TimestampAscending"
                )
                for page in pages:
                    for result in page.get("MetricDataResults", []):
                        _aws_check_status(result, page.get("Messages", []))
                        kind, instance_id = owners[result["Id"]]
                        series = readings[kind].setdefault(instance_id, {})
                        for timestamp, value in zip(
                            result.get("Timestamps", []), result.get("Values", []), strict=False
                        ):
                            series[_minute(timestamp)] = float(value)
        except (ClientError, BotoCoreError) as e:
            raise aws_failure(
                e,
                step=STEP,
                service="CloudWatch",
                region=region,
                permission=AWS_PERMISSION,
                outage_codes=AWS_OUTAGE_CODES,
            ) from None
    return _combine(readings, start, end)


def _aws_queries(instance_ids: Sequence[str]) -> tuple[list[dict], dict[str, tuple[str, str]]]:
    queries: list[dict] = []
    owners: dict[str, tuple[str, str]] = {}
    for index, instance_id in enumerate(instance_ids):
        for kind, (namespace, metric) in AWS_METRICS.items():
            query_id = f"{kind}{index}"  # ids start with a lower-case letter
            owners[query_id] = (kind, instance_id)
            queries.append(
                {
                    "Id": query_id,
                    "MetricStat": {
                        "Metric": {
                            "Namespace": namespace,
                            "MetricName": metric,
                            "Dimensions": [{"Name": "InstanceId", "Value": instance_id}],
                        },
                        "Period": PERIOD_SECONDS,
                        "Stat": "Average",
                    },
                    "ReturnData": True,
                }
            )
    return queries, owners


def _aws_check_status(result: dict, messages: list[dict]) -> None:
    status = result.get("StatusCode")
    if status not in ("Forbidden", "InternalError"):
        return
    said = "; ".join(m.get("Value", "") for m in messages if m.get("Value")) or status
    if status == "Forbidden":
        raise ProviderFailure(
            STEP,
            f"CloudWatch refused: {short(said)}: give the worker's AWS identity {AWS_PERMISSION}",
            FailureClass.CONFIGURATION,
        )
    raise ProviderFailure(STEP, f"CloudWatch failed: {short(said)}", FailureClass.OUTAGE)


# ---------------------------------------------------------------------------------------------- GCP

# kind -> (metric type, more filter, scale to percent)
GCP_METRICS = {
    "cpu": ("compute.googleapis.com/instance/cpu/utilization", "", 100.0),
    "memory": ("agent.googleapis.com/memory/percent_used", ' AND metric.labels.state = "used"', 1.0),
    "storage": (
        "agent.googleapis.com/disk/percent_used",
        ' AND metric.labels.state = "used"'
        ' AND NOT metric.labels.device = monitoring.regex.full_match("(/dev/loop|tmpfs|udev|overlay).*")',
        1.0,
    ),
}
GCP_IDS_PER_FILTER = 100


def read_gcp(
    project: str | None, instance_ids: Sequence[str], start: datetime, end: datetime, *, client: Any = None
) -> dict[datetime, Utilisation]:
    """Cloud Monitoring ListTimeSeries, one request per metric (and per 100 instances): each instance's
    series aligned to 60 s means (ALIGN_MEAN), its series (devices) reduced to their mean per instance.
    Instance ids are unique in a project, so the zone is not needed. `project` defaults to
    GOOGLE_PROJECT (as for Pulumi), then the SDK's default; `client` is a
    google.cloud.monitoring_v3.MetricServiceClient (made from the worker's Google environment if not
    given)."""
    import google.auth.exceptions as auth_errors
    from google.api_core import exceptions as api_errors
    from google.cloud import monitoring_v3

    start, end = window(start, end)
    for instance_id in instance_ids:
        if not instance_id.isdigit():
            raise ProviderFailure(STEP, f"{instance_id!r} is not a GCP instance id (digits): is the cluster on GCP?")
    readings: Readings = {kind: {} for kind in KINDS}
    with ExitStack() as made:
        try:
            project = project or gcp_default_project(STEP, "metrics")
            if client is None:
                client = monitoring_v3.MetricServiceClient()
                made.callback(client.transport.close)
            aggregation = monitoring_v3.Aggregation(
                alignment_period=timedelta(seconds=PERIOD_SECONDS),
                per_series_aligner=monitoring_v3.Aggregation.Aligner.ALIGN_MEAN,
                cross_series_reducer=monitoring_v3.Aggregation.Reducer.REDUCE_MEAN,
                group_by_fields=["resource.labels.instance_id"],
            )
            for kind, (metric, more, scale) in GCP_METRICS.items():
                for chunk in _chunks(list(instance_ids), GCP_IDS_PER_FILTER):
                    ids = ", ".join(f'"{i}"' for i in chunk)
                    request = monitoring_v3.ListTimeSeriesRequest(
                        name=f"projects/{project}",
                        filter=(
                            f'metric.type = "{metric}" AND resource.type = "gce_instance"'
                            f" AND resource.labels.instance_id = one_of({ids}){more}"
                        ),
                        interval=monitoring_v3.TimeInterval(start_time=start, end_time=end),
                        aggregation=aggregation,
                        view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL,
                    )
                    for series in client.list_time_series(request=request):
                        node = series.resource.labels["instance_id"]
                        values = readings[kind].setdefault(node, {})
                        for point in series.points:
                            # An aligned point stands for the minute that ends at its end time.
                            values[_minute(point.interval.end_time) - MINUTE] = point.value.double_value * scale
        except (api_errors.GoogleAPICallError, api_errors.RetryError, auth_errors.GoogleAuthError) as e:
            permission = f"roles/monitoring.viewer on project {project}"
            raise gcp_failure(e, step=STEP, service="Cloud Monitoring", permission=permission) from None
    return _combine(readings, start, end)


# -------------------------------------------------------------------------------------------- Azure

AZURE_VM_NAMESPACE = "Microsoft.Compute/virtualMachines"
AZURE_GUEST_NAMESPACE = "azure.vm.linux.guestmetrics"
# kind -> (namespace, metric, turn the value into the kind's percentage, required)
AZURE_METRICS = {
    "cpu": (AZURE_VM_NAMESPACE, "Percentage CPU", lambda v: v, True),
    "memory": (AZURE_VM_NAMESPACE, "Available Memory Percentage", lambda v: 100.0 - v, False),
    "storage": (AZURE_GUEST_NAMESPACE, "disk/used_percent", lambda v: v, False),
}


def read_azure(
    outputs: dict,
    vm_ids: Sequence[str],
    start: datetime,
    end: datetime,
    *,
    credential: Any = None,
    compute_client: Any = None,
    monitor_client: Any = None,
) -> dict[datetime, Utilisation]:
    """Azure Monitor metrics (the ARM metrics API) of each VM, one request per VM and metric (PT1M
    average). The VMs' ARM ids are found by listing the VMs of the resource group that holds the cluster's
    shared disk (`outputs["storageId"]`) and matching their vmId. A metric that the VM does not have
    (no agent sending it: the API answers 400) counts as no data, except CPU.

    `compute_client` is an azure.mgmt.compute ComputeManagementClient and `monitor_client` an
    azure.mgmt.monitor MonitorManagementClient, made if not given with `credential` (else the worker's:
    DefaultAzureCredential, or a service principal from Pulumi's ARM_CLIENT_ID, ARM_CLIENT_SECRET and
    ARM_TENANT_ID when AZURE_CLIENT_ID is not set)."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    start, end = window(start, end)
    subscription, group = azure_scope(outputs, STEP)
    timespan = f"{start:%Y-%m-%dT%H:%M:%SZ}/{end:%Y-%m-%dT%H:%M:%SZ}"
    readings: Readings = {kind: {} for kind in KINDS}
    with ExitStack() as made:
        try:
            if credential is None and (compute_client is None or monitor_client is None):
                credential = azure_credential()
                made.callback(credential.close)
            if compute_client is None:
                from azure.mgmt.compute import ComputeManagementClient

                compute_client = made.enter_context(ComputeManagementClient(credential, subscription))
            if monitor_client is None:
                from azure.mgmt.monitor import MonitorManagementClient

                monitor_client = made.enter_context(MonitorManagementClient(credential, subscription))
            resource_ids = {
                str(vm.vm_id).lower(): vm.id for vm in compute_client.virtual_machines.list(group) if vm.vm_id
            }
            found = [(vm_id, resource_ids[vm_id.lower()]) for vm_id in vm_ids if vm_id.lower() in resource_ids]
            if not found:
                raise ProviderFailure(
                    STEP,
                    f"none of the cluster's VMs ({', '.join(vm_ids)}) is in resource group {group}: refresh the "
                    "cluster, it may have been changed outside hpcinfra",
                )
            for vm_id, resource_id in found:
                for kind, (namespace, metric, to_percent, required) in AZURE_METRICS.items():
                    try:
                        response = monitor_client.metrics.list(
                            resource_uri=resource_id,
                            timespan=timespan,
                            interval="PT1M",
                            metricnames=metric,
                            aggregation="Average",
                            metricnamespace=namespace,
                        )
                    except HttpResponseError as e:
                        if e.status_code == 400 and not required:
                            continue  # the VM does not send this metric: no agent
                        raise
                    values = readings[kind].setdefault(vm_id, {})
                    for minute, value in _azure_means(response).items():
                        values[minute] = to_percent(value)
        except (HttpResponseError, ServiceRequestError, ServiceResponseError) as e:
            permission = f"the Monitoring Reader role on resource group {group}"
            raise azure_failure(e, step=STEP, service="Azure Monitor", permission=permission) from None
    return _combine(readings, start, end)


def _azure_means(response: Any) -> dict[datetime, float]:
    """Per minute, the mean of the metric's series (one, unless the metric has dimensions), skipping the
    minutes the API lists without a value."""
    sums: dict[datetime, list[float]] = {}
    for metric in response.value or []:
        for series in metric.timeseries or []:
            for point in series.data or []:
                if point.average is not None:
                    sums.setdefault(_minute(point.time_stamp), []).append(float(point.average))
    return {minute: sum(values) / len(values) for minute, values in sums.items()}


# ------------------------------------------------------------------------------------------- shared


def _minute(moment: datetime) -> datetime:
    """The start of the minute `moment` is in, as an aware UTC datetime (a naive one is taken as UTC)."""
    if moment.utcoffset() is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, moment.day, moment.hour, moment.minute, tzinfo=UTC)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _mean(values: list[float]) -> float:
    return min(100.0, max(0.0, sum(values) / len(values))) if values else 0.0


def _combine(readings: Readings, start: datetime, end: datetime) -> dict[datetime, Utilisation]:
    """A reading for each minute of [start, end) that has CPU data: each kind the mean over the nodes
    that reported it in that minute, 0.0 for a kind that no node reported."""

    def at(kind: str, minute: datetime) -> float:
        return _mean([series[minute] for series in readings[kind].values() if minute in series])

    minutes = sorted({m for series in readings["cpu"].values() for m in series if start <= m < end})
    return {m: Utilisation(at("cpu", m), at("memory", m), at("storage", m)) for m in minutes}
