"""Reading an elastic cloud cluster's node power from each cloud's list of its instances, through the
cloud's real SDK with only the network answered by the test:

- AWS: a real boto3 EC2 client under botocore's Stubber (it checks every request's parameters);
- GCP: a real compute_v1 InstancesClient talking REST to a Compute Engine stand-in on 127.0.0.1, which
  records each request and answers the API's JSON;
- Azure: a real ComputeManagementClient whose azure-core RequestsTransport runs on a requests session
  with the recording adapter of the monitoring tests.
"""

import asyncio
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import azure.mgmt.compute
import boto3
import google.auth.credentials
import pytest
import requests
from azure.core.pipeline.transport import RequestsTransport
from azure.mgmt.compute import ComputeManagementClient
from botocore.stub import Stubber
from google.cloud import compute_v1

from core.catalog import NODE_TYPES
from core.enums import NodeState
from core.providers import ClusterSpec, FailureClass, PowerChange, ProviderFailure, Scaling
from infra.clouds import power
from infra.clouds.plan import ClusterPlan
from infra.clouds.power import read_aws, read_azure, read_gcp, read_power
from infra.clouds.runner import StackRunner, StackSettings
from infra.providers.pulumi_provider import PulumiProvider
from tests.test_cloud_monitoring import (
    AWS_KEY_ID,
    AWS_SECRET,
    SUBSCRIPTION,
    TOKEN,
    FakeCredential,
    RecordedAzure,
    authorization_failed,
)

SINCE = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
UNTIL = SINCE + timedelta(minutes=10)
CLUSTER_ID = "5e0c3c0e-1111-4222-8333-944455556666"
OTHER_CLUSTER_ID = "0b7d9a12-aaaa-4bbb-8ccc-000000000001"
# Four nodes, node-0 the floor: node-1 to node-3 are elastic.
SPEC = ClusterSpec(
    cluster_id=CLUSTER_ID,
    tenant="Acme Chips",
    name="rtl-regression",
    region="eu-west-1",
    number_of_nodes=4,
    node_type=NODE_TYPES["large"],
    storage_gb=250,
    provider_config={"sshCidr": "198.51.100.0/24", "project": "my-project", "zone": "europe-west1-b"},
    scaling=Scaling(min_nodes=1, idle_seconds=300),
)
PLAN = ClusterPlan.of(SPEC)


def at(minutes: float) -> datetime:
    return SINCE + timedelta(minutes=minutes)


# ---------------------------------------------------------------------------------------------- AWS

EXPECTED_FILTERS = {
    "Filters": [
        {"Name": "tag:hpcinfra-cluster-id", "Values": [CLUSTER_ID]},
        {"Name": "tag-key", "Values": ["hpcinfra-node"]},
    ]
}
AWS_STATE_CODES = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}


@pytest.fixture
def ec2() -> Iterator[tuple]:
    client = boto3.client(
        "ec2", region_name="eu-west-1", aws_access_key_id=AWS_KEY_ID, aws_secret_access_key=AWS_SECRET
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def ec2_instance(node: str, state: str, launched: datetime, reason: str = "", number: int = 1) -> dict:
    """An instance as DescribeInstances lists one the ResumeProgram launched for `node`."""
    return {
        "InstanceId": f"i-0a1b2c3d4e5f{number:05d}",
        "LaunchTime": launched,
        "State": {"Code": AWS_STATE_CODES[state], "Name": state},
        "StateTransitionReason": reason,
        "Tags": [
            {"Key": "Name", "Value": f"{PLAN.prefix}-{node}"},
            {"Key": "hpcinfra-tenant", "Value": SPEC.tenant},
            {"Key": "hpcinfra-cluster-id", "Value": CLUSTER_ID},
            {"Key": "hpcinfra-node", "Value": node},
        ],
    }


def reservation(*instances: dict) -> dict:
    return {
        "ReservationId": f"r-0{len(instances)}a2b3c4d5e6f7",
        "OwnerId": "123456789012",
        "Instances": list(instances),
    }


def test_aws_reads_each_elastic_node_as_its_newest_instance_says(ec2):
    client, stubber = ec2
    long_ago = SINCE - timedelta(days=2)
    # Two pages, as EC2 sends when there is more than a page's worth.
    stubber.add_response(
        "describe_instances",
        {
            "Reservations": [
                reservation(ec2_instance("node-0", "running", long_ago, number=1)),  # the floor: never reported
                reservation(ec2_instance("node-1", "running", at(2), number=2)),
                # node-3 was powered down before and is powering up again: the new instance decides.
                reservation(ec2_instance("node-3", "pending", at(5), number=3)),
            ],
            "NextToken": "page-2",
        },
        EXPECTED_FILTERS,
    )
    stubber.add_response(
        "describe_instances",
        {
            "Reservations": [
                reservation(
                    ec2_instance("node-2", "terminated", at(-30), "User initiated (2025-03-04 10:07:30 GMT)", number=4),
                    ec2_instance("node-3", "terminated", at(-60), "User initiated (2025-03-04 09:50:00 GMT)", number=5),
                ),
                reservation(ec2_instance("node-9", "running", at(1), number=6)),  # not a node of the spec
            ]
        },
        {**EXPECTED_FILTERS, "NextToken": "page-2"},
    )

    changes = read_aws(PLAN, SINCE, UNTIL, client=client)

    assert changes == [
        PowerChange("node-1", NodeState.UP, at(2)),  # running since its launch
        PowerChange("node-3", NodeState.POWERING_UP, at(5)),
        PowerChange("node-2", NodeState.DOWN, at(7.5)),  # terminated when its transition reason says
    ]


def test_aws_reads_a_node_without_an_instance_down_and_keeps_every_moment_in_the_window(ec2):
    client, stubber = ec2
    stubber.add_response(
        "describe_instances",
        {
            "Reservations": [
                reservation(
                    ec2_instance("node-1", "running", SINCE - timedelta(hours=3), number=1),
                    ec2_instance("node-2", "shutting-down", at(-20), "User initiated", number=2),
                )
            ]
        },
        EXPECTED_FILTERS,
    )

    changes = read_aws(PLAN, SINCE, UNTIL, client=client)

    assert changes == [
        PowerChange("node-1", NodeState.UP, SINCE),  # up before the window: reported at its start
        PowerChange("node-2", NodeState.POWERING_DOWN, UNTIL),  # no time in the reason: seen by the window's end
        PowerChange("node-3", NodeState.DOWN, UNTIL),  # no instance at all
    ]
    assert all(change.at.tzinfo is not None and change.at.utcoffset() == timedelta(0) for change in changes)


@pytest.mark.parametrize(
    "code, status, message, failure_class, hint",
    [
        (
            "UnauthorizedOperation",
            403,
            "You are not authorized to perform this operation. User: arn:aws:sts::123456789012:assumed-role/"
            "hpc-worker/i-0ff is not authorized to perform: ec2:DescribeInstances because no identity-based "
            "policy allows the ec2:DescribeInstances action",
            FailureClass.CONFIGURATION,
            "give the worker's AWS identity ec2:DescribeInstances",
        ),
        (
            "AuthFailure",
            401,
            "AWS was not able to validate the provided access credentials",
            FailureClass.CONFIGURATION,
            "check the worker's AWS credentials",
        ),
        ("RequestLimitExceeded", 503, "Request limit exceeded.", FailureClass.OUTAGE, "unavailable or throttling"),
    ],
)
def test_aws_refusals_become_classified_failures_without_secrets(ec2, code, status, message, failure_class, hint):
    client, stubber = ec2
    stubber.add_client_error(
        "describe_instances", service_error_code=code, service_message=message, http_status_code=status
    )

    with pytest.raises(ProviderFailure) as failure:
        read_aws(PLAN, SINCE, UNTIL, client=client)

    assert failure.value.step == "power"
    assert failure.value.failure_class is failure_class
    assert code in failure.value.message and hint in failure.value.message
    assert AWS_SECRET not in str(failure.value) and AWS_KEY_ID not in str(failure.value)


# ---------------------------------------------------------------------------------------------- GCP

GCP_PATH = "/compute/v1/projects/my-project/zones/europe-west1-b/instances"


class ComputeEngineStandIn(BaseHTTPRequestHandler):
    """Compute Engine's instances.list over HTTP: answers the page its pageToken names (or a refusal),
    and keeps every request's path, query and authorization in the server's `seen`."""

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        self.server.seen.append((url.path, query, self.headers.get("Authorization")))
        status, body = self.server.refusal or (200, self.server.pages[int(query.get("pageToken", 0))])
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass  # the test says what went wrong


GOOGLE_TOKEN = "ya29.fake-access-token-not-a-real-credential"


class FakeGoogleCredentials(google.auth.credentials.Credentials):
    """Credentials that always have a token, as the worker's would after a refresh."""

    def refresh(self, request) -> None:
        self.token = GOOGLE_TOKEN


@pytest.fixture
def compute_engine() -> Iterator[tuple[Callable[[], compute_v1.InstancesClient], ThreadingHTTPServer]]:
    """The stand-in on a free port of 127.0.0.1, and a maker of real clients connected to it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), ComputeEngineStandIn)
    server.seen, server.pages, server.refusal = [], [{}], None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    clients: list[compute_v1.InstancesClient] = []
    instances_client = compute_v1.InstancesClient  # the real one, which a test may put `connect` in place of

    def connect() -> compute_v1.InstancesClient:
        endpoint = f"http://127.0.0.1:{server.server_port}"
        clients.append(instances_client(credentials=FakeGoogleCredentials(), client_options={"api_endpoint": endpoint}))
        return clients[-1]

    try:
        yield connect, server
    finally:
        for client in clients:
            client.transport.close()
        server.shutdown()
        server.server_close()


def gce_instance(node: str | None, status: str, created: str, **times: str) -> dict:
    """An instance as instances.list sends it: times in RFC 3339 with the API's own offset."""
    labels = {"hpcinfra-tenant": "acme-chips", "hpcinfra-cluster-id": CLUSTER_ID}
    if node is not None:
        labels["hpcinfra-node"] = node
    return {
        "kind": "compute#instance",
        "name": f"{PLAN.prefix}-{node or 'head'}",
        "status": status,
        "creationTimestamp": created,
        "labels": labels,
        **times,
    }


def test_gcp_reads_each_elastic_node_from_its_instance_in_the_clusters_zone(compute_engine):
    connect, server = compute_engine
    server.pages = [
        {
            "items": [
                gce_instance(None, "RUNNING", "2025-03-03T09:00:00.000-08:00"),  # the head node: no node label
                gce_instance("node-0", "RUNNING", "2025-03-03T09:00:00.000-08:00"),  # the floor
                gce_instance(
                    "node-1",
                    "RUNNING",
                    "2025-03-04T01:00:00.000-08:00",
                    lastStartTimestamp="2025-03-04T02:03:00.000-08:00",
                ),
            ],
            "nextPageToken": "1",
        },
        {
            "items": [
                gce_instance(
                    "node-2",
                    "TERMINATED",
                    "2025-03-04T01:30:00.000-08:00",
                    lastStopTimestamp="2025-03-04T02:06:15.512-08:00",
                ),
                gce_instance("node-5", "RUNNING", "2025-03-04T02:01:00.000-08:00"),  # not a node of the spec
            ]
        },
    ]

    changes = read_gcp(PLAN, SINCE, UNTIL, client=connect())

    assert changes == [
        PowerChange("node-1", NodeState.UP, at(3)),  # from its last start, 02:03 Pacific
        PowerChange("node-2", NodeState.DOWN, at(6.25) + timedelta(microseconds=512000)),
        PowerChange("node-3", NodeState.DOWN, UNTIL),  # no instance
    ]
    assert [path for path, _, _ in server.seen] == [GCP_PATH, GCP_PATH]
    assert [query.get("pageToken") for _, query, _ in server.seen] == [None, "1"]
    # Other clusters' instances are left out by the API itself.
    assert all(query["filter"] == f'labels.hpcinfra-cluster-id = "{CLUSTER_ID}"' for _, query, _ in server.seen)
    assert all(authorization == f"Bearer {GOOGLE_TOKEN}" for _, _, authorization in server.seen)


def test_gcp_asks_the_first_zone_of_the_region_in_the_environments_project(compute_engine, monkeypatch):
    connect, server = compute_engine
    monkeypatch.setattr(compute_v1, "InstancesClient", connect)  # made by read_power, once per call
    monkeypatch.setenv("GOOGLE_PROJECT", "from-the-environment")
    server.pages = [{"items": [gce_instance("node-2", "STAGING", "2025-03-04T10:04:00Z")]}]
    plan = ClusterPlan.of(replace(SPEC, region="europe-west4", provider_config={"sshCidr": "198.51.100.0/24"}))

    changes = read_power("gcp", plan, {}, SINCE, UNTIL)

    assert changes == [
        PowerChange("node-2", NodeState.POWERING_UP, at(4)),
        PowerChange("node-1", NodeState.DOWN, UNTIL),
        PowerChange("node-3", NodeState.DOWN, UNTIL),
    ]
    assert [path for path, _, _ in server.seen] == [
        "/compute/v1/projects/from-the-environment/zones/europe-west4-a/instances"
    ]


@pytest.mark.parametrize(
    "status, reason, said, failure_class, hint",
    [
        (
            403,
            "forbidden",
            "Required 'compute.instances.list' permission for 'projects/my-project'",
            FailureClass.CONFIGURATION,
            "compute.instances.list (roles/compute.viewer) on project my-project",
        ),
        (
            401,
            "authError",
            "Request had invalid authentication credentials.",
            FailureClass.CONFIGURATION,
            "check the worker's Google credentials",
        ),
        (
            429,
            "rateLimitExceeded",
            "Quota exceeded for quota metric 'Read requests' of service 'compute.googleapis.com'.",
            FailureClass.OUTAGE,
            "unavailable or throttling",
        ),
        (500, "backendError", "Internal error.", FailureClass.OUTAGE, "unavailable or throttling"),
    ],
)
def test_gcp_refusals_become_classified_failures(compute_engine, status, reason, said, failure_class, hint):
    connect, server = compute_engine
    server.refusal = (
        status,
        {"error": {"code": status, "message": said, "errors": [{"message": said, "reason": reason}]}},
    )

    with pytest.raises(ProviderFailure) as failure:
        read_gcp(PLAN, SINCE, UNTIL, client=connect())

    assert failure.value.step == "power"
    assert failure.value.failure_class is failure_class
    assert said in failure.value.message and hint in failure.value.message
    assert GOOGLE_TOKEN not in str(failure.value)


# -------------------------------------------------------------------------------------------- Azure

GROUP = "hpc-rtl-regression-group1a2b"
VM_PREFIX = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.Compute/virtualMachines"
OUTPUTS = {
    "headNode": "203.0.113.7",
    "nodeIds": ["5d2a0c61-0000-4000-8000-000000000000"],
    "storageId": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.Compute/disks/hpc-shared",
}


def azure_vm(
    name: str,
    tags: dict[str, str],
    created: datetime,
    power_state: str | None,
    provisioning: str = "Succeeded",
    provisioned_at: datetime | None = None,
) -> dict:
    """A VM as the list with `$expand=instanceView` sends it."""
    statuses = [
        {
            "code": f"ProvisioningState/{provisioning.lower()}",
            "level": "Info",
            "displayStatus": f"Provisioning {provisioning.lower()}",
            **({"time": provisioned_at.isoformat()} if provisioned_at else {}),
        }
    ]
    if power_state is not None:
        statuses.append({"code": f"PowerState/{power_state}", "level": "Info", "displayStatus": f"VM {power_state}"})
    return {
        "id": f"{VM_PREFIX}/{name}",
        "name": name,
        "location": "westeurope",
        "tags": tags,
        "properties": {
            "vmId": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
            "timeCreated": created.isoformat(),
            "provisioningState": provisioning,
            "instanceView": {"statuses": statuses},
        },
    }


def node_tags(node: str | None, cluster_id: str = CLUSTER_ID) -> dict[str, str]:
    tags = {"hpcinfra-tenant": SPEC.tenant, "hpcinfra-cluster-id": cluster_id, "hpcinfra-cluster-name": SPEC.name}
    return tags if node is None else {**tags, "hpcinfra-node": node}


def azure_compute(answer, credential=None) -> tuple[ComputeManagementClient, RecordedAzure]:
    adapter = RecordedAzure(answer)
    session = requests.Session()
    session.mount("https://", adapter)
    client = ComputeManagementClient(
        credential or FakeCredential(),
        SUBSCRIPTION,
        transport=RequestsTransport(session=session, session_owner=False),
        retry_total=0,
    )
    return client, adapter


def test_azure_reads_each_elastic_node_from_the_vms_of_the_clusters_group():
    pages = [
        {
            "value": [
                azure_vm(f"{PLAN.prefix}-head", node_tags(None), at(-600), "running"),
                azure_vm(f"{PLAN.prefix}-node-0", node_tags("node-0"), at(-600), "running"),
                azure_vm(f"{PLAN.prefix}-node-1", node_tags("node-1"), at(2), "running"),
                # Another cluster's node-1 in the same group, created later: it must not count.
                azure_vm("hpc-other-node-1", node_tags("node-1", OTHER_CLUSTER_ID), at(4), "deallocated"),
            ],
            "nextLink": f"https://management.azure.com{VM_PREFIX}?api-version=2026-04-01&$skiptoken=page-2",
        },
        {
            "value": [
                azure_vm(f"{PLAN.prefix}-node-2", node_tags("node-2"), at(-40), "deallocated", provisioned_at=at(8)),
                azure_vm(f"{PLAN.prefix}-node-3", node_tags("node-3"), at(-20), "running", provisioning="Deleting"),
            ]
        },
    ]

    def answer(path: str, query: dict[str, str]):
        assert path == VM_PREFIX, f"unexpected request to {path}"
        return 200, pages[1 if "$skiptoken" in query else 0]

    client, adapter = azure_compute(answer)
    changes = read_azure(PLAN, OUTPUTS, SINCE, UNTIL, compute_client=client)

    assert changes == [
        PowerChange("node-1", NodeState.UP, at(2)),  # running since it was created
        PowerChange("node-2", NodeState.DOWN, at(8)),  # deallocated when its last operation ended
        PowerChange("node-3", NodeState.POWERING_DOWN, UNTIL),  # being deleted
    ]
    # One list of the group, with the instance views, over two pages: no call per VM.
    first = parse_qs(urlparse(adapter.requests[0].url).query)
    assert first["$expand"] == ["instanceView"]
    assert len(adapter.requests) == 2
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in adapter.requests)


def test_azure_reads_a_vm_being_created_as_powering_up_and_a_missing_one_as_down():
    vms = [
        azure_vm(f"{PLAN.prefix}-node-1", node_tags("node-1"), at(3), None, provisioning="Creating"),
        azure_vm(f"{PLAN.prefix}-node-2", node_tags("node-2"), at(-5), "starting"),
    ]
    client, _ = azure_compute(lambda path, query: (200, {"value": vms}))

    changes = read_azure(PLAN, OUTPUTS, SINCE, UNTIL, compute_client=client)

    assert changes == [
        PowerChange("node-2", NodeState.POWERING_UP, SINCE),
        PowerChange("node-1", NodeState.POWERING_UP, at(3)),
        PowerChange("node-3", NodeState.DOWN, UNTIL),
    ]


AUTHORIZATION_FAILED = authorization_failed(GROUP)


@pytest.mark.parametrize(
    "answer, failure_class, words",
    [
        (
            (403, AUTHORIZATION_FAILED),
            FailureClass.CONFIGURATION,
            ["AuthorizationFailed", f"Microsoft.Compute/virtualMachines/read on resource group {GROUP}"],
        ),
        (
            (429, {"error": {"code": "TooManyRequests", "message": "The request is being throttled."}}),
            FailureClass.OUTAGE,
            ["TooManyRequests", "unavailable or throttling"],
        ),
    ],
)
def test_azure_refusals_become_classified_failures_without_secrets(answer, failure_class, words):
    client, _ = azure_compute(lambda path, query: answer)
    with pytest.raises(ProviderFailure) as failure:
        read_azure(PLAN, OUTPUTS, SINCE, UNTIL, compute_client=client)

    assert failure.value.step == "power"
    assert failure.value.failure_class is failure_class
    assert all(word in failure.value.message for word in words), failure.value.message
    assert TOKEN not in str(failure.value)


def test_azure_credentials_refused_or_no_storage_id_ask_nothing():
    client, adapter = azure_compute(lambda path, query: (200, {"value": []}), credential=FakeCredential(refuse=True))
    with pytest.raises(ProviderFailure, match="AZURE_CLIENT_ID") as failure:
        read_azure(PLAN, OUTPUTS, SINCE, UNTIL, compute_client=client)
    assert failure.value.failure_class is FailureClass.CONFIGURATION
    with pytest.raises(ProviderFailure, match="no Azure storageId"):
        read_azure(PLAN, {**OUTPUTS, "storageId": ""}, SINCE, UNTIL, compute_client=client)
    assert adapter.requests == []


# --------------------------------------------------------------------------------------- entry point


def provider(cloud: str, tmp_path) -> PulumiProvider:
    settings = StackSettings(f"file://{tmp_path / 'state'}", "passphrase", "test passphrase", tmp_path / "work")
    return PulumiProvider(cloud, StackRunner(settings))


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
def test_a_static_cluster_asks_the_cloud_nothing(cloud, tmp_path, monkeypatch):
    def no_client(*args, **kwargs):
        raise AssertionError("a cloud client was made for a static cluster")

    monkeypatch.setattr(boto3, "client", no_client)
    monkeypatch.setattr(compute_v1, "InstancesClient", no_client)
    monkeypatch.setattr(azure.mgmt.compute, "ComputeManagementClient", no_client)
    monkeypatch.setattr(power, "azure_credential", no_client)
    static = replace(SPEC, scaling=None)

    assert asyncio.run(provider(cloud, tmp_path).power_changes(static, OUTPUTS, SINCE, UNTIL)) == []


def test_the_provider_reads_ec2_in_the_clusters_region(ec2, tmp_path, monkeypatch):
    client, stubber = ec2
    regions = []
    monkeypatch.setattr(boto3, "client", lambda service, region_name, **kwargs: regions.append(region_name) or client)
    stubber.add_response(
        "describe_instances",
        {"Reservations": [reservation(ec2_instance("node-2", "running", at(1)))]},
        EXPECTED_FILTERS,
    )

    changes = asyncio.run(provider("aws", tmp_path).power_changes(SPEC, {}, SINCE, UNTIL))

    assert regions == ["eu-west-1"]
    assert changes == [
        PowerChange("node-2", NodeState.UP, at(1)),
        PowerChange("node-1", NodeState.DOWN, UNTIL),
        PowerChange("node-3", NodeState.DOWN, UNTIL),
    ]


def test_read_power_of_an_unknown_cloud_or_a_naive_window():
    with pytest.raises(ProviderFailure) as failure:
        read_power("local", PLAN, {}, SINCE, UNTIL)
    assert failure.value.failure_class is FailureClass.CONFIGURATION
    with pytest.raises(ValueError, match="aware"):
        read_power("aws", PLAN, {}, SINCE.replace(tzinfo=None), UNTIL)


def test_importing_the_module_loads_no_cloud_sdk():
    code = (
        "import sys, infra.clouds.power; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore') "
        "or m.startswith(('google.cloud.compute', 'google.auth', 'azure.'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
