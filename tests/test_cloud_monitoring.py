"""Reading a cloud cluster's utilisation from each cloud's monitoring API, through the cloud's real SDK
with only the network answered by the test:

- AWS: a real boto3 CloudWatch client under botocore's Stubber (it checks every request's parameters);
- GCP: a real MetricServiceClient talking gRPC to a Cloud Monitoring stand-in on 127.0.0.1, which
  records each ListTimeSeries request and answers in the API's own messages;
- Azure: real ComputeManagementClient and MonitorManagementClient whose azure-core RequestsTransport
  runs on a requests session with an adapter that records each HTTP request and answers recorded-shape
  JSON.
"""

import io
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent import futures
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import boto3
import grpc
import pytest
import requests
import urllib3
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from azure.core.pipeline.transport import RequestsTransport
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.monitor import MonitorManagementClient
from botocore.stub import Stubber
from google.cloud import monitoring_v3
from google.cloud.monitoring_v3 import MetricServiceClient
from google.cloud.monitoring_v3.services.metric_service.transports import MetricServiceGrpcTransport

from core.providers import FailureClass, ProviderFailure, Utilisation
from infra.clouds import cloud_errors
from infra.clouds.monitoring import read_aws, read_azure, read_gcp, read_utilisation
from infra.clouds.plan import CloudConfig

START = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
END = START + timedelta(minutes=5)


def minute(n: int) -> datetime:
    return START + timedelta(minutes=n)


def assert_readings(actual: dict[datetime, Utilisation], expected: dict[datetime, tuple[float, float, float]]) -> None:
    assert list(actual) == sorted(expected), "the minutes read, in order"
    assert all(m.tzinfo is not None and m.utcoffset() == timedelta(0) and m.second == 0 for m in actual)
    for m, (cpu, memory, storage) in expected.items():
        assert actual[m].cpu_percent == pytest.approx(cpu), m
        assert actual[m].memory_percent == pytest.approx(memory), m
        assert actual[m].storage_percent == pytest.approx(storage), m


# ---------------------------------------------------------------------------------------------- AWS

AWS_KEY_ID = "test-key-id-not-a-real-credential"
AWS_SECRET = "test-secret-not-a-real-credential"
INSTANCES = ["i-0a1b2c3d4e5f60001", "i-0a1b2c3d4e5f60002"]


@pytest.fixture
def cloudwatch() -> Iterator[tuple]:
    client = boto3.client(
        "cloudwatch", region_name="eu-west-1", aws_access_key_id=AWS_KEY_ID, aws_secret_access_key=AWS_SECRET
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def expected_aws_queries(instances: list[str]) -> list[dict]:
    """What CloudWatch must be asked, written out: per instance, CPU from EC2 and the agent's two."""
    metrics = [("cpu", "AWS/EC2", "CPUUtilization"), ("memory", "CWAgent", "mem_used_percent")]
    metrics.append(("storage", "CWAgent", "disk_used_percent"))
    return [
        {
            "Id": f"{kind}{index}",
            "MetricStat": {
                "Metric": {
                    "Namespace": namespace,
                    "MetricName": name,
                    "Dimensions": [{"Name": "InstanceId", "Value": instance}],
                },
                "Period": 60,
                "Stat": "Average",
            },
            "ReturnData": True,
        }
        for index, instance in enumerate(instances)
        for kind, namespace, name in metrics
    ]


def aws_result(query_id: str, points: dict[int, float], status: str = "Complete") -> dict:
    return {
        "Id": query_id,
        "Label": query_id,
        "Timestamps": [minute(n) for n in points],
        "Values": list(points.values()),
        "StatusCode": status,
    }


def test_aws_reads_each_minute_as_the_mean_over_the_instances(cloudwatch):
    client, stubber = cloudwatch
    request = {
        "MetricDataQueries": expected_aws_queries(INSTANCES),
        "StartTime": START,
        "EndTime": END,
        "ScanBy": "TimestampAscending",
    }
    # Two pages, as CloudWatch sends when there is more than one answer's worth.
    stubber.add_response(
        "get_metric_data",
        {
            "MetricDataResults": [
                aws_result("cpu0", {0: 10.0, 1: 20.0}, "PartialData"),
                aws_result("cpu1", {0: 30.0, 1: 40.0}),
                aws_result("memory0", {0: 50.0}),
                aws_result("memory1", {0: 70.0, 1: 20.0}),
                aws_result("storage0", {}),
                aws_result("storage1", {1: 40.0}),
            ],
            "NextToken": "page-2",
        },
        request,
    )
    stubber.add_response(
        "get_metric_data",
        {"MetricDataResults": [aws_result("cpu0", {3: 30.0})]},
        {**request, "NextToken": "page-2"},
    )

    readings = read_aws("eu-west-1", INSTANCES, START, END, client=client)

    assert_readings(
        readings,
        {
            minute(0): (20.0, 60.0, 0.0),  # no storage from either agent: 0.0
            minute(1): (30.0, 20.0, 40.0),  # memory and storage from the one node that sent them
            minute(3): (30.0, 0.0, 0.0),  # minutes 2 and 4 have no CPU data: absent
        },
    )


def test_aws_leaves_out_minutes_that_only_the_agent_reported(cloudwatch):
    """Without detailed monitoring EC2 sends CPU every five minutes while the agent sends every minute."""
    client, stubber = cloudwatch
    stubber.add_response(
        "get_metric_data",
        {
            "MetricDataResults": [
                aws_result("cpu0", {0: 12.0}),
                aws_result("memory0", {0: 40.0, 1: 41.0, 2: 42.0}),
                aws_result("storage0", {0: 5.0, 1: 5.0, 2: 5.0}),
            ]
        },
        {
            "MetricDataQueries": expected_aws_queries(INSTANCES[:1]),
            "StartTime": START,
            "EndTime": END,
            "ScanBy": "TimestampAscending",
        },
    )
    assert_readings(read_aws("eu-west-1", INSTANCES[:1], START, END, client=client), {minute(0): (12.0, 40.0, 5.0)})


@pytest.mark.parametrize(
    "code, status, message, failure_class, hint",
    [
        (
            "AccessDenied",
            403,
            "User: arn:aws:sts::123456789012:assumed-role/hpc-worker/i-0ff is not authorized to perform: "
            "cloudwatch:GetMetricData because no identity-based policy allows the cloudwatch:GetMetricData action",
            FailureClass.CONFIGURATION,
            "give the worker's AWS identity cloudwatch:GetMetricData",
        ),
        (
            "InvalidClientTokenId",
            403,
            "The security token included in the request is invalid.",
            FailureClass.CONFIGURATION,
            "check the worker's AWS credentials",
        ),
        ("Throttling", 400, "Rate exceeded", FailureClass.OUTAGE, "unavailable or throttling"),
        ("InternalFailure", 500, "An internal error occurred", FailureClass.OUTAGE, "unavailable or throttling"),
    ],
)
def test_aws_refusals_become_classified_failures_without_secrets(
    cloudwatch, code, status, message, failure_class, hint
):
    client, stubber = cloudwatch
    stubber.add_client_error(
        "get_metric_data", service_error_code=code, service_message=message, http_status_code=status
    )

    with pytest.raises(ProviderFailure) as failure:
        read_aws("eu-west-1", INSTANCES, START, END, client=client)

    assert failure.value.step == "metrics"
    assert failure.value.failure_class is failure_class
    assert code in failure.value.message and hint in failure.value.message
    assert failure.value.message.startswith("CloudWatch")
    assert AWS_SECRET not in str(failure.value) and AWS_KEY_ID not in str(failure.value)


def test_aws_forbidden_result_is_a_configuration_failure(cloudwatch):
    client, stubber = cloudwatch
    stubber.add_response(
        "get_metric_data",
        {
            "MetricDataResults": [aws_result("cpu0", {}, "Forbidden")],
            "Messages": [{"Code": "Forbidden", "Value": "Insufficient permissions to read the metric"}],
        },
    )
    with pytest.raises(ProviderFailure) as failure:
        read_aws("eu-west-1", INSTANCES[:1], START, END, client=client)
    assert failure.value.failure_class is FailureClass.CONFIGURATION
    assert "cloudwatch:GetMetricData" in failure.value.message


def test_aws_refuses_ids_of_another_cloud_without_asking(cloudwatch):
    client, _ = cloudwatch  # no response queued: a call would fail the test
    with pytest.raises(ProviderFailure) as failure:
        read_aws("eu-west-1", ["1234567890123456789"], START, END, client=client)
    assert failure.value.failure_class is FailureClass.CONFIGURATION
    assert "not an EC2 instance id" in failure.value.message


# ---------------------------------------------------------------------------------------------- GCP

GCP_NODES = ["4711000000000000001", "4711000000000000002"]
CPU = "compute.googleapis.com/instance/cpu/utilization"
MEMORY = "agent.googleapis.com/memory/percent_used"
DISK = "agent.googleapis.com/disk/percent_used"


class CloudMonitoringStandIn:
    """Cloud Monitoring's ListTimeSeries over real gRPC: answers pages set per metric type (or a status to
    abort with), following page tokens, and keeps every request."""

    def __init__(self) -> None:
        self.requests: list[monitoring_v3.ListTimeSeriesRequest] = []
        self.pages: dict[str, list[monitoring_v3.ListTimeSeriesResponse]] = {}
        self.refusal: tuple[grpc.StatusCode, str] | None = None

    def list_time_series(self, request, context):
        self.requests.append(request)
        if self.refusal is not None:
            context.abort(*self.refusal)
        metric_type = re.search(r'metric\.type = "([^"]+)"', request.filter)[1]
        pages = self.pages.get(metric_type, [monitoring_v3.ListTimeSeriesResponse()])
        return pages[int(request.page_token or 0)]


def gcp_series(instance_id: str, points: dict[int, float]) -> monitoring_v3.TimeSeries:
    """A series as the API sends an aligned one: newest point first, each stamped with its period's end."""
    return monitoring_v3.TimeSeries(
        resource={"type": "gce_instance", "labels": {"instance_id": instance_id}},
        points=[
            {"interval": {"start_time": minute(n + 1), "end_time": minute(n + 1)}, "value": {"double_value": value}}
            for n, value in sorted(points.items(), reverse=True)
        ],
    )


@pytest.fixture
def cloud_monitoring() -> Iterator[tuple[Callable[[], MetricServiceClient], CloudMonitoringStandIn]]:
    """The stand-in on a free port of 127.0.0.1, and a maker of real clients connected to it."""
    stand_in = CloudMonitoringStandIn()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    method = grpc.unary_unary_rpc_method_handler(
        stand_in.list_time_series,
        request_deserializer=monitoring_v3.ListTimeSeriesRequest.deserialize,
        response_serializer=monitoring_v3.ListTimeSeriesResponse.serialize,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("google.monitoring.v3.MetricService", {"ListTimeSeries": method}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channels: list[grpc.Channel] = []

    def connect() -> MetricServiceClient:
        channels.append(grpc.insecure_channel(f"127.0.0.1:{port}"))
        return MetricServiceClient(transport=MetricServiceGrpcTransport(channel=channels[-1]))

    try:
        yield connect, stand_in
    finally:
        for channel in channels:
            channel.close()
        server.stop(None)


def test_gcp_reads_each_minute_as_the_mean_over_the_instances(cloud_monitoring):
    connect, stand_in = cloud_monitoring
    stand_in.pages[CPU] = [  # a fraction of 1, over two pages
        monitoring_v3.ListTimeSeriesResponse(
            time_series=[gcp_series(GCP_NODES[0], {0: 0.25, 1: 0.5, 3: 0.75})], next_page_token="1"
        ),
        monitoring_v3.ListTimeSeriesResponse(time_series=[gcp_series(GCP_NODES[1], {0: 0.5, 1: 0.75})]),
    ]
    stand_in.pages[MEMORY] = [monitoring_v3.ListTimeSeriesResponse(time_series=[gcp_series(GCP_NODES[0], {0: 50.0})])]
    stand_in.pages[DISK] = [monitoring_v3.ListTimeSeriesResponse(time_series=[gcp_series(GCP_NODES[1], {1: 30.0})])]

    readings = read_gcp("my-project", GCP_NODES, START, END, client=connect())

    assert_readings(
        readings,
        {
            minute(0): (37.5, 50.0, 0.0),  # (25 + 50) / 2: the ratio in percent
            minute(1): (62.5, 0.0, 30.0),
            minute(3): (75.0, 0.0, 0.0),  # minutes 2 and 4 have no data: absent
        },
    )
    asked = {re.search(r'metric\.type = "([^"]+)"', r.filter)[1]: r for r in stand_in.requests if not r.page_token}
    assert set(asked) == {CPU, MEMORY, DISK}
    assert len(stand_in.requests) == 4  # the second page of CPU too
    for request in stand_in.requests:
        assert request.name == "projects/my-project"
        assert 'resource.type = "gce_instance"' in request.filter
        assert f'resource.labels.instance_id = one_of("{GCP_NODES[0]}", "{GCP_NODES[1]}")' in request.filter
        assert request.interval.start_time == START and request.interval.end_time == END
        assert request.aggregation.alignment_period == timedelta(seconds=60)
        assert request.aggregation.per_series_aligner == monitoring_v3.Aggregation.Aligner.ALIGN_MEAN
        assert request.aggregation.cross_series_reducer == monitoring_v3.Aggregation.Reducer.REDUCE_MEAN
        assert list(request.aggregation.group_by_fields) == ["resource.labels.instance_id"]
    assert 'metric.labels.state = "used"' not in asked[CPU].filter
    assert 'metric.labels.state = "used"' in asked[MEMORY].filter
    assert 'metric.labels.state = "used"' in asked[DISK].filter
    assert 'NOT metric.labels.device = monitoring.regex.full_match("(/dev/loop|tmpfs' in asked[DISK].filter


@pytest.mark.parametrize(
    "status, said, failure_class, hint",
    [
        (
            grpc.StatusCode.PERMISSION_DENIED,
            "Permission monitoring.timeSeries.list denied (or it may not exist).",
            FailureClass.CONFIGURATION,
            "roles/monitoring.viewer on project my-project",
        ),
        (
            grpc.StatusCode.UNAUTHENTICATED,
            "Request had invalid authentication credentials.",
            FailureClass.CONFIGURATION,
            "check the worker's Google credentials",
        ),
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "Quota exceeded for quota metric 'Time series queries' of service 'monitoring.googleapis.com'.",
            FailureClass.OUTAGE,
            "unavailable or throttling",
        ),
        (grpc.StatusCode.INTERNAL, "Internal error encountered.", FailureClass.OUTAGE, "unavailable or throttling"),
    ],
)
def test_gcp_refusals_become_classified_failures(cloud_monitoring, status, said, failure_class, hint):
    connect, stand_in = cloud_monitoring
    stand_in.refusal = (status, said)

    with pytest.raises(ProviderFailure) as failure:
        read_gcp("my-project", GCP_NODES, START, END, client=connect())

    assert failure.value.step == "metrics"
    assert failure.value.failure_class is failure_class
    assert said in failure.value.message and hint in failure.value.message


def test_gcp_refuses_ids_of_another_cloud(cloud_monitoring):
    connect, stand_in = cloud_monitoring
    with pytest.raises(ProviderFailure, match="not a GCP instance id"):
        read_gcp("my-project", ["i-0a1b2c3d4e5f60001"], START, END, client=connect())
    assert stand_in.requests == []


# -------------------------------------------------------------------------------------------- Azure

SUBSCRIPTION = "00000000-1111-2222-3333-444444444444"
GROUP = "hpc-demo-group1a2b3c4d"
VM_PREFIX = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.Compute/virtualMachines"
OUTPUTS = {
    "headNode": "203.0.113.7",
    "nodeIds": ["5d2a0c61-0000-4000-8000-000000000001", "5d2a0c61-0000-4000-8000-000000000002"],
    "storageId": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.Compute/disks/hpc-shared",
    "services": {},
}
# vmId -> VM name, as Pulumi named them; the head is in the group too and must not be read.
VMS = {
    "5d2a0c61-0000-4000-8000-000000000000": "hpc-demo-head9f8e7d6c",
    OUTPUTS["nodeIds"][0]: "hpc-demo-node-01a2b3c4d",
    OUTPUTS["nodeIds"][1]: "hpc-demo-node-15e6f7a8b",
}
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOi-fake-bearer-token"
Answer = tuple[int, dict]


class FakeCredential:
    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse

    def get_token(self, *scopes, **kwargs) -> AccessToken:
        if self.refuse:
            raise ClientAuthenticationError(
                "ClientSecretCredential authentication failed: AADSTS7000215: Invalid client secret provided."
            )
        return AccessToken(TOKEN, 4102444800)


class RecordedAzure(requests.adapters.HTTPAdapter):
    """The HTTP layer under azure-core's RequestsTransport: keeps each request, answers with `answer`."""

    def __init__(self, answer: Callable[[str, dict[str, str]], Answer]) -> None:
        super().__init__()
        self.answer = answer
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request, **kwargs):
        self.requests.append(request)
        url = urlparse(request.url)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        status, body = self.answer(url.path, query)
        raw = urllib3.HTTPResponse(
            body=io.BytesIO(json.dumps(body).encode()),
            headers={"Content-Type": "application/json; charset=utf-8"},
            status=status,
            reason={200: "OK", 400: "Bad Request", 403: "Forbidden", 429: "Too Many Requests"}.get(status, "Error"),
            preload_content=False,
        )
        return self.build_response(request, raw)


def azure_clients(answer, credential=None) -> tuple[ComputeManagementClient, MonitorManagementClient, RecordedAzure]:
    adapter = RecordedAzure(answer)
    session = requests.Session()
    session.mount("https://", adapter)
    options = {"transport": RequestsTransport(session=session, session_owner=False), "retry_total": 0}
    credential = credential or FakeCredential()
    compute = ComputeManagementClient(credential, SUBSCRIPTION, **options)
    monitor = MonitorManagementClient(credential, SUBSCRIPTION, **options)
    return compute, monitor, adapter


def vm_list() -> Answer:
    return 200, {
        "value": [
            {"id": f"{VM_PREFIX}/{name}", "name": name, "location": "westeurope", "properties": {"vmId": vm_id}}
            for vm_id, name in VMS.items()
        ]
    }


def metric_answer(resource: str, namespace: str, name: str, points: dict[int, float | None]) -> Answer:
    """The metrics API's answer: every minute of the timespan listed, those without data without a value."""
    data = [{"timeStamp": minute(n).strftime("%Y-%m-%dT%H:%M:%SZ")} for n in range(5)]
    for n, value in points.items():
        if value is not None:
            data[n]["average"] = value
    return 200, {
        "cost": 5,
        "timespan": "2025-03-04T10:00:00Z/2025-03-04T10:05:00Z",
        "interval": "PT1M",
        "value": [
            {
                "id": f"{resource}/providers/Microsoft.Insights/metrics/{name}",
                "type": "Microsoft.Insights/metrics",
                "name": {"value": name, "localizedValue": name},
                "unit": "Percent",
                "timeseries": [{"metadatavalues": [], "data": data}],
                "errorCode": "Success",
            }
        ],
        "namespace": namespace,
        "resourceregion": "westeurope",
    }


NO_SUCH_METRIC = (
    400,
    {"code": "BadRequest", "message": "Failed to find metric configuration for provider: azure.vm.linux.guestmetrics"},
)


def azure_answer(metrics: dict[tuple[str, str], Answer]) -> Callable[[str, dict[str, str]], Answer]:
    """The ARM API as the test sets it: the group's VMs, and per (VM name, metric) an answer."""

    def answer(path: str, query: dict[str, str]) -> Answer:
        if path == VM_PREFIX:
            return vm_list()
        match = re.fullmatch(re.escape(VM_PREFIX) + r"/([^/]+)/providers/Microsoft\.Insights/metrics", path)
        assert match, f"unexpected request to {path}"
        return metrics.get((match[1], query["metricnames"]), NO_SUCH_METRIC)

    return answer


def test_azure_reads_each_minute_as_the_mean_over_the_vms():
    node_a, node_b = VMS[OUTPUTS["nodeIds"][0]], VMS[OUTPUTS["nodeIds"][1]]
    vm = "Microsoft.Compute/virtualMachines"
    guest = "azure.vm.linux.guestmetrics"
    compute, monitor, adapter = azure_clients(
        azure_answer(
            {
                (node_a, "Percentage CPU"): metric_answer(
                    f"{VM_PREFIX}/{node_a}", vm, "Percentage CPU", {0: 10.0, 1: 20.0}
                ),
                (node_b, "Percentage CPU"): metric_answer(
                    f"{VM_PREFIX}/{node_b}", vm, "Percentage CPU", {0: 30.0, 3: 50.0}
                ),
                (node_a, "Available Memory Percentage"): metric_answer(
                    f"{VM_PREFIX}/{node_a}", vm, "Available Memory Percentage", {0: 75.0}
                ),
                (node_b, "Available Memory Percentage"): metric_answer(
                    f"{VM_PREFIX}/{node_b}", vm, "Available Memory Percentage", {0: 55.0, 3: 90.0}
                ),
                # node A has no Azure Monitor Agent: the API answers 400 for the guest metric
                (node_b, "disk/used_percent"): metric_answer(
                    f"{VM_PREFIX}/{node_b}", guest, "disk/used_percent", {1: 60.0}
                ),
            }
        )
    )

    readings = read_azure(OUTPUTS, OUTPUTS["nodeIds"], START, END, compute_client=compute, monitor_client=monitor)

    assert_readings(
        readings,
        {
            minute(0): (20.0, 35.0, 0.0),  # memory used: 100 - available, (25 + 45) / 2
            minute(1): (20.0, 0.0, 60.0),
            minute(3): (50.0, 10.0, 0.0),  # minutes 2 and 4 are listed without a value: absent
        },
    )
    paths = [urlparse(r.url).path for r in adapter.requests]
    assert paths[0] == VM_PREFIX  # the VMs' ARM ids come from listing the group of the shared disk
    asked = [(urlparse(r.url).path, parse_qs(urlparse(r.url).query)) for r in adapter.requests[1:]]
    assert {(path.split("/")[-4], query["metricnames"][0], query["metricnamespace"][0]) for path, query in asked} == {
        (node, metric, namespace)
        for node in (node_a, node_b)
        for metric, namespace in [
            ("Percentage CPU", vm),
            ("Available Memory Percentage", vm),
            ("disk/used_percent", guest),
        ]
    }
    for path, query in asked:
        assert path.startswith(VM_PREFIX + "/") and "//" not in path
        assert query["timespan"] == ["2025-03-04T10:00:00Z/2025-03-04T10:05:00Z"]
        assert query["interval"] == ["PT1M"] and query["aggregation"] == ["Average"]
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in adapter.requests)


def authorization_failed(group: str) -> dict:
    """Azure's answer to an identity without Microsoft.Compute/virtualMachines/read on `group`."""
    return {
        "error": {
            "code": "AuthorizationFailed",
            "message": (
                "The client '7f0c0000-0000-0000-0000-000000000000' with object id "
                "'7f0c0000-0000-0000-0000-000000000000' does not have authorization to perform action "
                "'Microsoft.Compute/virtualMachines/read'"
                f" over scope '/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}' or the scope is invalid."
            ),
        }
    }


AUTHORIZATION_FAILED = authorization_failed(GROUP)


@pytest.mark.parametrize(
    "vms, cpu, failure_class, words",
    [
        ((403, AUTHORIZATION_FAILED), None, FailureClass.CONFIGURATION, ["AuthorizationFailed", "Monitoring Reader"]),
        (
            None,
            (429, {"error": {"code": "TooManyRequests", "message": "The request is being throttled."}}),
            FailureClass.OUTAGE,
            ["TooManyRequests", "unavailable or throttling"],
        ),
        (
            None,
            (503, {"error": {"code": "ServiceUnavailable", "message": "The service is unavailable."}}),
            FailureClass.OUTAGE,
            ["ServiceUnavailable"],
        ),
        (None, NO_SUCH_METRIC, FailureClass.CONFIGURATION, ["Azure Monitor refused"]),  # CPU is not optional
    ],
)
def test_azure_refusals_become_classified_failures_without_secrets(vms, cpu, failure_class, words):
    def answer(path: str, query: dict[str, str]) -> Answer:
        if path == VM_PREFIX:
            return vms or vm_list()
        return cpu

    compute, monitor, _ = azure_clients(answer)
    with pytest.raises(ProviderFailure) as failure:
        read_azure(OUTPUTS, OUTPUTS["nodeIds"], START, END, compute_client=compute, monitor_client=monitor)

    assert failure.value.step == "metrics"
    assert failure.value.failure_class is failure_class
    assert all(word in failure.value.message for word in words), failure.value.message
    assert TOKEN not in str(failure.value)


def test_azure_credentials_refused_is_a_configuration_failure_without_the_secret():
    compute, monitor, adapter = azure_clients(azure_answer({}), credential=FakeCredential(refuse=True))
    with pytest.raises(ProviderFailure) as failure:
        read_azure(OUTPUTS, OUTPUTS["nodeIds"], START, END, compute_client=compute, monitor_client=monitor)
    assert failure.value.failure_class is FailureClass.CONFIGURATION
    assert "AZURE_CLIENT_ID" in failure.value.message
    assert TOKEN not in str(failure.value)
    assert adapter.requests == []  # nothing was sent without a token


def test_azure_needs_the_storage_id_and_vms_in_its_group():
    compute, monitor, adapter = azure_clients(azure_answer({}))
    with pytest.raises(ProviderFailure, match="no Azure storageId") as failure:
        read_azure(
            {**OUTPUTS, "storageId": ""}, OUTPUTS["nodeIds"], START, END, compute_client=compute, monitor_client=monitor
        )
    assert failure.value.failure_class is FailureClass.CONFIGURATION
    with pytest.raises(ProviderFailure, match=f"is in resource group {GROUP}"):
        read_azure(
            OUTPUTS,
            ["5d2a0c61-dead-4000-8000-000000000009"],
            START,
            END,
            compute_client=compute,
            monitor_client=monitor,
        )
    assert [urlparse(r.url).path for r in adapter.requests] == [VM_PREFIX]  # listed, and no metric asked for


def test_azure_takes_pulumis_service_principal_when_azure_identity_has_none(monkeypatch):
    from azure.identity import ClientSecretCredential, DefaultAzureCredential

    for name in ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ARM_CLIENT_ID", "11111111-1111-1111-1111-111111111111")
    monkeypatch.setenv("ARM_CLIENT_SECRET", "not-a-real-secret")
    monkeypatch.setenv("ARM_TENANT_ID", "22222222-2222-2222-2222-222222222222")
    assert isinstance(cloud_errors.azure_credential(), ClientSecretCredential)
    monkeypatch.delenv("ARM_CLIENT_SECRET")
    assert isinstance(cloud_errors.azure_credential(), DefaultAzureCredential)


# --------------------------------------------------------------------------------------- entry point

CONFIG = CloudConfig(sshCidr="198.51.100.0/24", project="my-project", zone="europe-west1-b")


def test_read_utilisation_asks_cloudwatch_of_the_clusters_region(cloudwatch, monkeypatch):
    client, stubber = cloudwatch
    regions = []
    monkeypatch.setattr(boto3, "client", lambda service, region_name, **kwargs: regions.append(region_name) or client)
    stubber.add_response("get_metric_data", {"MetricDataResults": [aws_result("cpu0", {2: 80.0})]})

    readings = read_utilisation("aws", "eu-west-1", CONFIG, INSTANCES[:1], {}, START, END)

    assert regions == ["eu-west-1"]
    assert_readings(readings, {minute(2): (80.0, 0.0, 0.0)})


def test_read_utilisation_asks_cloud_monitoring_of_the_configured_project(cloud_monitoring, monkeypatch):
    connect, stand_in = cloud_monitoring
    monkeypatch.setattr(monitoring_v3, "MetricServiceClient", connect)  # made by read_utilisation, once per call
    stand_in.pages[CPU] = [monitoring_v3.ListTimeSeriesResponse(time_series=[gcp_series(GCP_NODES[0], {4: 0.5})])]

    assert_readings(
        read_utilisation("gcp", "europe-west1", CONFIG, GCP_NODES[:1], {}, START, END), {minute(4): (50.0, 0, 0)}
    )
    assert {r.name for r in stand_in.requests} == {"projects/my-project"}

    monkeypatch.setenv("GOOGLE_PROJECT", "from-the-environment")
    read_utilisation("gcp", "europe-west1", CONFIG.model_copy(update={"project": None}), GCP_NODES[:1], {}, START, END)
    assert stand_in.requests[-1].name == "projects/from-the-environment"


def test_read_utilisation_of_nothing_or_an_unknown_cloud():
    assert read_utilisation("aws", "eu-west-1", CONFIG, [], {}, START, END) == {}
    with pytest.raises(ProviderFailure) as failure:
        read_utilisation("local", "here", CONFIG, ["node-0"], {}, START, END)
    assert failure.value.failure_class is FailureClass.CONFIGURATION
    with pytest.raises(ValueError, match="aware"):
        read_utilisation("aws", "eu-west-1", CONFIG, INSTANCES, {}, START.replace(tzinfo=None), END)


def test_importing_the_module_loads_no_cloud_sdk():
    code = (
        "import sys, infra.clouds.monitoring; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore') "
        "or m.startswith(('google.cloud.monitoring', 'google.auth', 'azure.'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
