"""The Pulumi programs for AWS, GCP and Azure, run under Pulumi's own mocks (no cloud, no CLI):
what each would create follows the spec and the catalog, is tagged with tenant and cluster, opens
nothing to the internet but SSH from the admin range, and keeps the database private and its
password secret. An elastic cluster's head node powers its nodes above the floor up and down itself,
with an identity that may touch this cluster's nodes only; its programs run here against fake CLIs.
A resize is a stack update that changes no machine's boot script: slurm.conf and the drain of the nodes
it removes are commands on the head node, whose scripts run here against fake Slurm commands too."""

import asyncio
import base64
import gzip
import json
import os
import re
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import replace
from unittest import mock

import pulumi
import pytest
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor

from core.catalog import NODE_TYPES
from core.providers import ClusterSpec, Scaling, ServiceSecret, ServiceSpec, ToolSpec
from infra.clouds import aws, azure, gcp
from infra.clouds.plan import (
    COMPUTE_BOOT_TEMPLATE,
    POWER_LOG,
    READY_MARKER,
    RESUME_PROGRAM,
    SLURM_CONF,
    SUSPEND_PROGRAM,
    ClusterPlan,
)
from infra.providers.pulumi_provider import PulumiProvider, busy_nodes

PROGRAMS = {"aws": aws.build, "gcp": gcp.build, "azure": azure.build}
REGION = {"aws": "eu-west-1", "gcp": "europe-west1", "azure": "westeurope"}
ADMIN_RANGE = "198.51.100.0/24"

# The resource types that matter, per cloud.
INSTANCE = {
    "aws": "aws:ec2/instance:Instance",
    "gcp": "gcp:compute/instance:Instance",
    "azure": "azure-native:compute:VirtualMachine",
}
DISK = {"aws": "aws:ebs/volume:Volume", "gcp": "gcp:compute/disk:Disk", "azure": "azure-native:compute:Disk"}
DATABASE = {
    "aws": "aws:rds/instance:Instance",
    "gcp": "gcp:sql/databaseInstance:DatabaseInstance",
    "azure": "azure-native:dbforpostgresql:Server",
}
TOOL = "command:remote:Command"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
# Resources the programs refer to by name.
NAMED_BY_PULUMI = {
    "aws:rds/parameterGroup:ParameterGroup",
    "aws:iam/instanceProfile:InstanceProfile",
    "aws:iam/role:Role",
    "gcp:compute/router:Router",
    "gcp:compute/subnetwork:Subnetwork",
    "gcp:compute/instanceTemplate:InstanceTemplate",
    "azure-native:dbforpostgresql:Server",
    "azure-native:resources:ResourceGroup",
}
PROJECT = "chip-design-42"
SUBSCRIPTION = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"


class CloudMocks(pulumi.runtime.Mocks):
    """Records every resource the program registers, what each depends on, and the stack's outputs; answers
    the few look-ups the programs make. The drain command prints `busy`."""

    def __init__(self, busy: str = "") -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []
        self.calls: list[pulumi.runtime.MockCallArgs] = []
        self.dependencies: dict[str, set[str]] = {}
        self.ignored_changes: dict[str, list[str]] = {}
        self.exports: dict = {}
        self.busy = busy

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.resources.append(args)
        outputs = dict(args.inputs)
        if args.typ == TOOL and args.name.endswith("-drain"):
            outputs["stdout"] = self.busy
        if args.typ == "tls:index/privateKey:PrivateKey":
            outputs.update(publicKeyOpenssh="ssh-ed25519 AAAAmock", privateKeyOpenssh="mock private key")
        if args.typ == INSTANCE["aws"]:
            outputs["publicIp"] = "203.0.113.10"
        if args.typ == INSTANCE["gcp"]:
            outputs["networkInterfaces"] = [
                {
                    **nic,
                    "accessConfigs": [{**config, "natIp": "203.0.113.10"} for config in nic.get("accessConfigs", [])],
                }
                for nic in args.inputs["networkInterfaces"]
            ]
        if args.typ == "azure-native:network:PublicIPAddress":
            outputs["ipAddress"] = "203.0.113.10"
        if args.typ == LAUNCH_TEMPLATE:
            outputs.update(arn=f"arn:aws:ec2:eu-west-1:123456789012:launch-template/{args.name}-id", latestVersion=1)
        if args.typ == "gcp:serviceaccount/account:Account":
            email = f"{args.inputs['accountId']}@{PROJECT}.iam.gserviceaccount.com"
            outputs.update(email=email, member=f"serviceAccount:{email}")
        if args.typ == "gcp:projects/iAMCustomRole:IAMCustomRole":
            outputs["name"] = f"projects/{PROJECT}/roles/{args.inputs['roleId']}"
        if args.typ == INSTANCE["azure"] and "identity" in args.inputs:
            outputs["identity"] = {**args.inputs["identity"], "principalId": f"{args.name}-principal"}
        if args.typ in NAMED_BY_PULUMI:
            outputs.setdefault("name", args.name)  # as Pulumi names them when the program does not
        if args.typ == "azure-native:resources:ResourceGroup":
            return [f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{args.name}", outputs]
        return [f"{args.name}-id", outputs]

    def call(self, args: pulumi.runtime.MockCallArgs):
        self.calls.append(args)
        if args.token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            return {"names": ["zone-a", "zone-b"], "zoneIds": ["a", "b"], "id": "zones"}
        if args.token == "aws:ec2/getAmi:getAmi":
            return {"id": "ami-debian12", "architecture": "x86_64", "rootDeviceName": "/dev/xvda"}
        if args.token == "gcp:organizations/getClientConfig:getClientConfig":
            return {"project": PROJECT, "region": "europe-west1", "zone": "", "id": "client"}
        if args.token == "azure-native:authorization:getClientConfig":
            return {"subscriptionId": SUBSCRIPTION, "clientId": "c", "objectId": "o", "tenantId": "t"}
        return {}

    def of_type(self, typ: str) -> list[pulumi.runtime.MockResourceArgs]:
        return [r for r in self.resources if r.typ == typ]

    def named(self, name: str) -> pulumi.runtime.MockResourceArgs:
        [resource] = [r for r in self.resources if r.name == name]
        return resource


class DependencyMonitor(MockMonitor):
    """Pulumi's mock monitor, noting which resources each registered resource waits for, and the changes
    of its inputs Pulumi is to ignore (as the engine gets them)."""

    def RegisterResource(self, request):
        self.mocks.dependencies[request.name] = {urn.rsplit("::", 1)[-1] for urn in request.dependencies}
        self.mocks.ignored_changes[request.name] = list(request.ignoreChanges)
        return super().RegisterResource(request)


def spec(**changes) -> ClusterSpec:
    base = ClusterSpec(
        cluster_id="5e0c3c0e-1111-4222-8333-944455556666",
        tenant="Acme Chips",
        name="rtl-regression",
        region="",
        number_of_nodes=3,
        node_type=NODE_TYPES["large"],
        storage_gb=250,
        provider_config={"sshCidr": ADMIN_RANGE},
        tools=(ToolSpec("iverilog", "12.0"), ToolSpec("yosys", "0.40")),
        services=(ServiceSpec("postgresql", "16", {"databaseName": "results"}, 5432),),
        secrets={"postgresql": ServiceSecret("hpcinfra", "generated-password")},
    )
    return replace(base, **changes)


def run(cloud: str, cluster: ClusterSpec, drain_request: str = "", busy: str = "") -> CloudMocks:
    """Run the cloud's program for `cluster` under mocks and return what it registered."""
    plan = ClusterPlan.of(replace(cluster, region=REGION[cloud]), drain_request)
    return run_program(lambda: PROGRAMS[cloud](plan), busy)


def run_program(build: Callable[[], None], busy: str = "") -> CloudMocks:
    mocks = CloudMocks(busy)
    # Pulumi's test runner uses the thread's current event loop, which an earlier asyncio.run() closes.
    asyncio.set_event_loop(asyncio.new_event_loop())
    pulumi.runtime.set_mocks(mocks, project="hpcinfra", stack="test", preview=False, monitor=DependencyMonitor(mocks))

    @pulumi.runtime.test
    def program():
        exports = {}
        with mock.patch.object(pulumi, "export", exports.__setitem__):
            build()
        return pulumi.Output.all(**exports).apply(mocks.exports.update)

    program()
    return mocks


def is_secret(value) -> bool:
    return isinstance(value, dict) and value.get(rpc._special_sig_key) == rpc._special_secret_sig


def instance_type(cloud: str, inputs: dict) -> str:
    return {
        "aws": lambda: inputs["instanceType"],
        "gcp": lambda: inputs["machineType"],
        "azure": lambda: inputs["hardwareProfile"]["vmSize"],
    }[cloud]()


def disk_size(cloud: str, inputs: dict) -> int:
    return int({"aws": inputs.get("size"), "gcp": inputs.get("size"), "azure": inputs.get("diskSizeGB")}[cloud])


@pytest.fixture(params=sorted(PROGRAMS))
def cloud(request) -> str:
    return request.param


@pytest.mark.parametrize("nodes", [1, 3, 8])
def test_compute_nodes_follow_the_spec_and_the_catalog(cloud, nodes):
    mocks = run(cloud, spec(number_of_nodes=nodes))
    instances = mocks.of_type(INSTANCE[cloud])
    assert len(instances) == nodes + 1  # and the head node
    types = sorted(instance_type(cloud, r.inputs) for r in instances)
    assert types.count(NODE_TYPES["large"].instance_types[cloud]) == nodes
    assert NODE_TYPES["small"].instance_types[cloud] in types  # the head node


def test_aws_instances_report_their_cpu_every_minute():
    """Metering reads one-minute CloudWatch metrics; without detailed monitoring EC2 sends five-minute ones."""
    instances = run("aws", spec(number_of_nodes=2)).of_type(INSTANCE["aws"])
    assert [r.inputs.get("monitoring") for r in instances] == [True] * 3


def test_shared_storage_follows_the_spec(cloud):
    disks = run(cloud, spec(storage_gb=777)).of_type(DISK[cloud])
    assert [disk_size(cloud, d.inputs) for d in disks] == [777]


def test_every_resource_that_takes_tags_carries_tenant_and_cluster(cloud):
    mocks = run(cloud, spec())
    tagged = [r for r in mocks.resources if "tags" in r.inputs or "labels" in r.inputs or "userLabels" in str(r.inputs)]
    assert len(tagged) >= len(mocks.of_type(INSTANCE[cloud])) + 2  # instances, disk, network at least
    for resource in tagged:
        tags = resource.inputs.get("tags") or resource.inputs.get("labels") or resource.inputs["settings"]["userLabels"]
        assert tags["hpcinfra-cluster-id"] == spec().cluster_id, resource.name
        assert tags["hpcinfra-tenant"] in ("Acme Chips", "acme-chips"), resource.name
        assert tags["hpcinfra-cluster-name"] == "rtl-regression", resource.name
    for typ in (INSTANCE[cloud], DISK[cloud], DATABASE[cloud]):
        assert all(r in tagged for r in mocks.of_type(typ)), typ


def open_to_the_world(cloud: str, mocks: CloudMocks) -> list[str]:
    """Inbound rules whose source is the whole internet, as 'source port' strings."""
    world = {"0.0.0.0/0", "*", "Internet", "::/0"}
    found = []
    if cloud == "aws":
        for group in mocks.of_type("aws:ec2/securityGroup:SecurityGroup"):
            for rule in group.inputs.get("ingress", []):
                found += [
                    f"{cidr} {rule['fromPort']}-{rule['toPort']}"
                    for cidr in rule.get("cidrBlocks", [])
                    if cidr in world
                ]
    if cloud == "gcp":
        for rule in mocks.of_type("gcp:compute/firewall:Firewall"):
            found += [
                f"{source} {rule.inputs['allows']}" for source in rule.inputs.get("sourceRanges", []) if source in world
            ]
    if cloud == "azure":
        for group in mocks.of_type("azure-native:network:NetworkSecurityGroup"):
            for rule in group.inputs["securityRules"]:
                if (
                    rule["access"] == "Allow"
                    and rule["direction"] == "Inbound"
                    and rule["sourceAddressPrefix"] in world
                ):
                    found.append(f"{rule['sourceAddressPrefix']} {rule['destinationPortRange']}")
    return found


def test_nothing_is_open_to_the_internet_and_ssh_only_from_the_admin_range(cloud):
    mocks = run(cloud, spec())
    assert open_to_the_world(cloud, mocks) == []
    assert ADMIN_RANGE in str([r.inputs for r in mocks.resources])


def test_the_managed_database_only_when_asked_for_private_and_with_a_secret_password(cloud):
    without = run(cloud, spec(services=(), secrets={}))
    assert without.of_type(DATABASE[cloud]) == []

    mocks = run(cloud, spec())
    [database] = mocks.of_type(DATABASE[cloud])
    inputs = database.inputs
    if cloud == "aws":
        assert inputs["publiclyAccessible"] is False
        assert inputs["engineVersion"] == "16"
        password = inputs["password"]
    elif cloud == "gcp":
        assert inputs["settings"]["ipConfiguration"]["ipv4Enabled"] is False
        assert inputs["databaseVersion"] == "POSTGRES_16"
        [user] = mocks.of_type("gcp:sql/user:User")
        password = user.inputs["password"]
    else:
        assert inputs["network"]["publicNetworkAccess"] == "Disabled"
        assert inputs["version"] == "16"
        password = inputs["administratorLoginPassword"]
    assert is_secret(password)
    assert password["value"] == "generated-password"


def test_tools_are_spack_builds_on_the_head_node_and_adding_one_is_an_update(cloud):
    before = run(cloud, spec(tools=(ToolSpec("iverilog", "12.0"),)))
    after = run(cloud, spec(tools=(ToolSpec("iverilog", "12.0"), ToolSpec("verilator", "5.024"))))
    commands = [c.inputs["create"] for c in after.of_type(TOOL) if "-tool-" in c.name]
    assert len(commands) == 2
    assert any("spack install" in c and "verilator@5.024" in c for c in commands)
    # The same stack with one resource more: every earlier resource keeps its name.
    before_names = {(r.typ, r.name) for r in before.resources}
    after_names = {(r.typ, r.name) for r in after.resources}
    assert before_names < after_names
    assert after_names - before_names == {(TOOL, "hpc-rtl-regression-tool-verilator-5.024")}


def test_redis_runs_on_the_head_node_with_its_password_secret(cloud):
    cluster = spec(
        services=(ServiceSpec("redis", "7.2", {}, 6379),),
        secrets={"redis": ServiceSecret("hpcinfra", "redis-password")},
    )
    mocks = run(cloud, cluster)
    [redis] = [c for c in mocks.of_type(TOOL) if c.name.endswith("-redis")]
    # On stdin and secret; not on the command line, and not in the environment (SSH would drop it).
    assert is_secret(redis.inputs["stdin"]) and redis.inputs["stdin"]["value"] == "redis-password\n"
    assert "redis-password" not in redis.inputs["create"] and "environment" not in redis.inputs


def test_a_spec_without_an_admin_range_is_refused():
    with pytest.raises(ValueError, match="sshCidr: Field required"):
        ClusterPlan.of(spec(provider_config={}))
    with pytest.raises(ValueError, match="not an address range"):
        ClusterPlan.of(spec(provider_config={"sshCidr": "office"}))


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "0.0.0.0/1", "128.0.0.0/2", "10.0.0.0/7"])
def test_an_admin_range_wider_than_a_slash_8_is_refused(cidr):
    with pytest.raises(ValueError, match="wider than a /8"):
        ClusterPlan.of(spec(provider_config={"sshCidr": cidr}))
    assert ClusterPlan.of(spec(provider_config={"sshCidr": "10.0.0.0/8"})).ssh_cidr == "10.0.0.0/8"


@pytest.mark.parametrize("cidr", ["::/0", "2001:db8::/32", "2001:db8::1/128"])
def test_an_ipv6_admin_range_is_refused_as_the_networks_are_ipv4_only(cidr):
    with pytest.raises(ValueError, match="IPv4"):
        ClusterPlan.of(spec(provider_config={"sshCidr": cidr}))


def test_an_admin_range_inside_the_clusters_own_network_is_refused():
    """Nobody outside reaches the head node from there, and AWS routes the range to the internet gateway."""
    with pytest.raises(ValueError, match="inside the cluster's own network"):
        ClusterPlan.of(spec(provider_config={"sshCidr": "10.20.5.0/24"}))


def test_the_slurm_configuration_lists_every_compute_node():
    conf = ClusterPlan.of(spec(number_of_nodes=4)).slurm_conf()
    assert [line.split()[0] for line in conf.splitlines() if line.startswith("NodeName=")] == [
        f"NodeName=node-{i}" for i in range(4)
    ]
    assert "CPUs=8 " in conf and "PartitionName=compute Nodes=ALL" in conf


def test_the_head_node_finds_the_shared_disk_by_its_stable_device_name(cloud):
    mocks = run(cloud, spec())
    [head] = [r for r in mocks.of_type(INSTANCE[cloud]) if r.name.endswith("-head")]
    script = {
        "aws": lambda: head.inputs["userData"],
        "gcp": lambda: head.inputs["metadata"]["startup-script"],
        "azure": lambda: base64.b64decode(head.inputs["osProfile"]["customData"]).decode(),
    }[cloud]()
    device = {
        "aws": "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_",
        "gcp": "/dev/disk/by-id/google-shared",
        "azure": "/dev/disk/azure/scsi1/lun0",
    }[cloud]
    assert f"until [ -e {device}" in script
    assert "mv /shared/.slurm/munge.key.new /shared/.slurm/munge.key" in script
    assert script.rstrip().endswith("touch /var/lib/hpcinfra-ready")


def test_the_stack_is_up_only_when_slurm_lists_every_compute_node(cloud):
    mocks = run(cloud, spec(number_of_nodes=5))
    [ready] = [c for c in mocks.of_type(TOOL) if c.name.endswith("-slurm-ready")]
    assert "sinfo -h -N -t idle" in ready.inputs["create"] and "-ge 5 ]" in ready.inputs["create"]


def public_instances(cloud: str, mocks: CloudMocks) -> list[str]:
    """The names of the machines that get a public address of their own."""
    if cloud == "aws":
        [subnet] = [s for s in mocks.of_type("aws:ec2/subnet:Subnet") if s.name == "hpc-rtl-regression-subnet"]
        by_default = subnet.inputs.get("mapPublicIpOnLaunch", False)
        return [r.name for r in mocks.of_type(INSTANCE["aws"]) if r.inputs.get("associatePublicIpAddress", by_default)]
    if cloud == "gcp":
        return [
            r.name
            for r in mocks.of_type(INSTANCE["gcp"])
            if any(nic.get("accessConfigs") for nic in r.inputs["networkInterfaces"])
        ]
    nics = mocks.of_type("azure-native:network:NetworkInterface")
    public = [n.name.removesuffix("-nic") for n in nics if n.inputs["ipConfigurations"][0].get("publicIPAddress")]
    return [r.name for r in mocks.of_type(INSTANCE["azure"]) if r.name in public]


def test_only_the_head_node_has_a_public_address_and_the_rest_go_out_through_a_nat(cloud):
    mocks = run(cloud, spec(number_of_nodes=3))
    assert public_instances(cloud, mocks) == ["hpc-rtl-regression-head"]
    nat = {
        "aws": "aws:ec2/natGateway:NatGateway",
        "gcp": "gcp:compute/routerNat:RouterNat",
        "azure": "azure-native:network:NatGateway",
    }[cloud]
    assert len(mocks.of_type(nat)) == 1


def routes_of(mocks: CloudMocks, subnet: str) -> list[dict]:
    [association] = [
        a
        for a in mocks.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
        if a.inputs["subnetId"] == subnet
    ]
    [table] = [
        t
        for t in mocks.of_type("aws:ec2/routeTable:RouteTable")
        if f"{t.name}-id" == association.inputs["routeTableId"]
    ]
    return table.inputs["routes"]


def test_on_aws_the_cluster_subnet_goes_out_through_the_nat_and_answers_ssh_directly():
    """The NAT gateway sits in a public subnet of its own; the cluster's subnet sends the internet
    through it, and only the admin range straight to the internet gateway, which is how the head node
    (with its public address) answers SSH."""
    mocks = run("aws", spec())
    [nat] = mocks.of_type("aws:ec2/natGateway:NatGateway")
    [gateway] = mocks.of_type("aws:ec2/internetGateway:InternetGateway")
    assert routes_of(mocks, nat.inputs["subnetId"]) == [{"cidrBlock": "0.0.0.0/0", "gatewayId": f"{gateway.name}-id"}]
    cluster_routes = routes_of(mocks, "hpc-rtl-regression-subnet-id")
    assert sorted(cluster_routes, key=lambda route: route["cidrBlock"]) == [
        {"cidrBlock": "0.0.0.0/0", "natGatewayId": f"{nat.name}-id"},
        {"cidrBlock": ADMIN_RANGE, "gatewayId": f"{gateway.name}-id"},
    ]


def test_on_gcp_the_nat_serves_the_clusters_subnetwork():
    mocks = run("gcp", spec())
    [router] = mocks.of_type("gcp:compute/router:Router")
    [nat] = mocks.of_type("gcp:compute/routerNat:RouterNat")
    assert router.inputs["network"] == "hpc-rtl-regression-network-id" and router.inputs["region"] == REGION["gcp"]
    assert nat.inputs["router"] == router.name and nat.inputs["region"] == REGION["gcp"]
    assert nat.inputs["sourceSubnetworkIpRangesToNat"] == "ALL_SUBNETWORKS_ALL_IP_RANGES"


def test_aws_instances_have_encrypted_root_volumes_and_require_imdsv2():
    instances = run("aws", spec(number_of_nodes=2)).of_type(INSTANCE["aws"])
    assert len(instances) == 3
    for instance in instances:
        assert instance.inputs["rootBlockDevice"]["encrypted"] is True, instance.name
        assert instance.inputs["metadataOptions"]["httpTokens"] == "required", instance.name


def test_the_managed_database_refuses_connections_without_tls(cloud):
    mocks = run(cloud, spec())
    [database] = mocks.of_type(DATABASE[cloud])
    if cloud == "aws":
        [group] = mocks.of_type("aws:rds/parameterGroup:ParameterGroup")
        assert group.inputs["family"] == "postgres16"
        assert {"name": "rds.force_ssl", "value": "1"}.items() <= group.inputs["parameters"][0].items()
        assert database.inputs["parameterGroupName"] == group.name
    elif cloud == "gcp":
        assert database.inputs["settings"]["ipConfiguration"]["sslMode"] == "ENCRYPTED_ONLY"
    else:
        # On by default; said explicitly so that it stays on.
        [setting] = mocks.of_type("azure-native:dbforpostgresql:Configuration")
        assert setting.inputs["configurationName"] == "require_secure_transport" and setting.inputs["value"] == "on"
        assert setting.inputs["serverName"] == database.name


def test_an_aws_provider_that_names_its_account_runs_in_that_account_only():
    mocks = run("aws", spec(provider_config={"sshCidr": ADMIN_RANGE, "accountId": "123456789012"}))
    [provider] = mocks.of_type("pulumi:providers:aws")
    # Provider inputs reach the provider as JSON.
    assert json.loads(provider.inputs["allowedAccountIds"]) == ["123456789012"]
    assert provider.inputs["region"] == REGION["aws"]
    aws_resources = [r for r in mocks.resources if r.typ.startswith("aws:")]
    assert aws_resources and all(r.provider and provider.name in r.provider for r in aws_resources)
    assert mocks.calls and all(c.provider and provider.name in c.provider for c in mocks.calls)
    # Without an account, the stack's default provider as before (existing stacks keep their resources).
    assert run("aws", spec()).of_type("pulumi:providers:aws") == []


def test_an_azure_provider_that_names_its_subscription_builds_in_that_subscription():
    subscription = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d"
    mocks = run("azure", spec(provider_config={"sshCidr": ADMIN_RANGE, "subscriptionId": subscription}))
    [provider] = mocks.of_type("pulumi:providers:azure-native")
    assert provider.inputs["subscriptionId"] == subscription
    azure_resources = [r for r in mocks.resources if r.typ.startswith("azure-native:")]
    assert azure_resources and all(r.provider and provider.name in r.provider for r in azure_resources)
    assert run("azure", spec()).of_type("pulumi:providers:azure-native") == []


# --- elastic clusters -------------------------------------------------------------------------------

CLUSTER_ID = "5e0c3c0e-1111-4222-8333-944455556666"
# What each cloud's program makes only so that the head node can power nodes up and down.
POWER_RESOURCES = {
    "aws": {
        LAUNCH_TEMPLATE,
        "aws:iam/role:Role",
        "aws:iam/rolePolicy:RolePolicy",
        "aws:iam/instanceProfile:InstanceProfile",
    },
    "gcp": {
        "gcp:compute/instanceTemplate:InstanceTemplate",
        "gcp:serviceaccount/account:Account",
        "gcp:projects/iAMCustomRole:IAMCustomRole",
        "gcp:projects/iAMMember:IAMMember",
    },
    "azure": {"azure-native:authorization:RoleAssignment"},
}
ROLE_ASSIGNMENT = "azure-native:authorization:RoleAssignment"
# The instance's name, the compute nodes' instances have as Pulumi resources.
NODE_INSTANCE = "hpc-rtl-regression-node-{}"


def elastic(**changes) -> ClusterSpec:
    """Four nodes, the first always up, the others up for jobs and down after five idle minutes."""
    return spec(**{"number_of_nodes": 4, "scaling": Scaling(min_nodes=1, idle_seconds=300), **changes})


def head_of(cloud: str, mocks: CloudMocks) -> pulumi.runtime.MockResourceArgs:
    [head] = [r for r in mocks.of_type(INSTANCE[cloud]) if r.name.endswith("-head")]
    return head


# Where an instance has its boot script, as Pulumi property paths of its inputs (the head node's on AWS is
# in either, compressed for an elastic cluster).
BOOT_SCRIPT_INPUTS = {
    "aws": {"userData", "userDataBase64"},
    "gcp": {'metadata["startup-script"]'},
    "azure": {"osProfile.customData"},
}


def at_path(inputs: dict, path: str):
    """The value at a Pulumi property path (`a.b`, `a["b-c"]`) of a resource's inputs; None if there is none."""
    value = inputs
    for name, key in re.findall(r'(\w+)|\["([^"]+)"\]', path):
        value = value.get(name or key) if isinstance(value, dict) else None
    return value


def boot_script(cloud: str, instance: pulumi.runtime.MockResourceArgs) -> str:
    [(path, script)] = [
        (path, at_path(instance.inputs, path))
        for path in BOOT_SCRIPT_INPUTS[cloud]
        if at_path(instance.inputs, path) is not None
    ]
    if path == "userDataBase64":
        return gzip.decompress(base64.b64decode(script)).decode()
    return base64.b64decode(script).decode() if cloud == "azure" else script


def written_files(script: str) -> dict[str, str]:
    """The files a boot script writes with `cat > <path> <<'<END>'`, by path."""
    return {
        path: text
        for path, end, text in re.findall(r"^cat > (\S+) <<'(\w+)'\n(.*?)^\2$", script, flags=re.MULTILINE | re.DOTALL)
    }


def command(mocks: CloudMocks, what: str) -> pulumi.runtime.MockResourceArgs:
    """The stack's command `<prefix>-<what>` on the head node."""
    return mocks.named(f"hpc-rtl-regression-{what}")


def delivered_conf(mocks: CloudMocks) -> str:
    """The slurm.conf the stack gives the head node (on the stdin of its slurm-conf command)."""
    return command(mocks, "slurm-conf").inputs["stdin"]


def conf_lines(mocks: CloudMocks) -> list[str]:
    return delivered_conf(mocks).splitlines()


def instance_labels(cloud: str, instance: pulumi.runtime.MockResourceArgs) -> dict[str, str]:
    return instance.inputs["labels"] if cloud == "gcp" else instance.inputs["tags"]


def test_an_elastic_cluster_s_stack_has_the_floor_s_instances_and_what_the_head_launches_others_with(cloud):
    mocks = run(cloud, elastic())
    assert sorted(r.name for r in mocks.of_type(INSTANCE[cloud])) == [
        "hpc-rtl-regression-head",
        NODE_INSTANCE.format(0),
    ]
    assert POWER_RESOURCES[cloud] <= {r.typ for r in mocks.resources}
    # The floor carries the node's tag, by which metering and the head node find it.
    [node] = [r for r in mocks.of_type(INSTANCE[cloud]) if r.name == NODE_INSTANCE.format(0)]
    assert instance_labels(cloud, node)["hpcinfra-node"] == "node-0"
    assert instance_labels(cloud, node)["hpcinfra-cluster-id"] == CLUSTER_ID

    no_floor = run(cloud, elastic(scaling=Scaling(min_nodes=0, idle_seconds=300)))
    assert [r.name for r in no_floor.of_type(INSTANCE[cloud])] == ["hpc-rtl-regression-head"]


def test_a_static_cluster_has_no_template_role_or_identity_and_no_power_saving(cloud):
    mocks = run(cloud, spec(number_of_nodes=4))
    assert POWER_RESOURCES[cloud].isdisjoint(r.typ for r in mocks.resources)
    head = head_of(cloud, mocks)
    assert not {"iamInstanceProfile", "serviceAccount", "identity"} & head.inputs.keys()
    script = boot_script(cloud, head)
    conf = delivered_conf(mocks)
    assert "State=CLOUD" not in conf and "ResumeProgram" not in conf and "NodeName=node-3 " in conf
    assert not {"awscli", "google-cloud-cli", "azure-cli"} & set(script.split())
    # The nodes keep the tags static clusters always had.
    for node in mocks.of_type(INSTANCE[cloud]):
        assert "hpcinfra-node" not in instance_labels(cloud, node), node.name


def test_an_elastic_cluster_s_slurm_powers_the_nodes_above_the_floor_up_and_down(cloud):
    mocks = run(cloud, elastic())
    script = boot_script(cloud, head_of(cloud, mocks))
    lines = conf_lines(mocks)
    states = {line.split()[0]: line.split()[-1] for line in lines if line.startswith("NodeName=")}
    assert states == {
        "NodeName=node-0": "State=UNKNOWN",
        "NodeName=node-1": "State=CLOUD",
        "NodeName=node-2": "State=CLOUD",
        "NodeName=node-3": "State=CLOUD",
    }
    assert {
        f"ResumeProgram={RESUME_PROGRAM}",
        f"SuspendProgram={SUSPEND_PROGRAM}",
        "SuspendTime=300",
        "SuspendExcNodes=node-0",
        "PrivateData=cloud",
        "ReturnToService=2",
        "ResumeRate=0",
        "SuspendRate=0",
    } <= set(lines)
    settings = dict(line.split("=", 1) for line in lines if "=" in line and " " not in line)
    assert int(settings["ResumeTimeout"]) >= 600 and int(settings["SuspendTimeout"]) > 0
    # The programs are the head node's, root's, and anyone may run them.
    assert {RESUME_PROGRAM, SUSPEND_PROGRAM} <= written_files(script).keys()
    assert f"chown root:root {RESUME_PROGRAM} {SUSPEND_PROGRAM}" in script
    assert f"chmod 755 {RESUME_PROGRAM} {SUSPEND_PROGRAM}" in script
    # Slurm's programs need the cloud's CLI, installed before slurmctld starts: with slurm.conf, once the
    # head node's boot script has finished.
    cli = {"aws": "apt-get install -y awscli", "gcp": "google-cloud-cli", "azure": "apt-get install -y azure-cli"}
    assert script.index(cli[cloud]) < script.index(f"touch {READY_MARKER}")
    assert not re.search(r"systemctl (re)?start .*slurmctld", script)
    assert (
        command(mocks, "slurm-conf")
        .inputs["create"]
        .startswith(f"sudo --preserve-env bash -c 'until [ -f {READY_MARKER} ]")
    )

    no_floor = conf_lines(run(cloud, elastic(scaling=Scaling(0, 300))))
    assert not any(line.startswith("SuspendExcNodes") for line in no_floor)
    assert sum(line.endswith("State=CLOUD") for line in no_floor) == 4


def test_a_launched_node_boots_the_script_a_floor_node_has_with_its_own_name(cloud):
    mocks = run(cloud, elastic())
    template = written_files(boot_script(cloud, head_of(cloud, mocks)))[COMPUTE_BOOT_TEMPLATE]
    plan = ClusterPlan.of(replace(elastic(), region=REGION[cloud]))
    for i in range(4):
        assert template.replace("@node@", f"node-{i}") == plan.compute_script(i)
    [floor] = [r for r in mocks.of_type(INSTANCE[cloud]) if r.name == NODE_INSTANCE.format(0)]
    assert boot_script(cloud, floor) == plan.compute_script(0)


@pytest.mark.parametrize(
    "floor, among",
    [(2, '-n node-0,node-1 -o %N | sort -u | wc -l)" -ge 2 ]'), (0, "sinfo -h > /dev/null && exit 0")],
)
def test_an_elastic_cluster_is_up_when_its_floor_is_idle(cloud, floor, among):
    mocks = run(cloud, elastic(scaling=Scaling(floor, 300)))
    [ready] = [c for c in mocks.of_type(TOOL) if c.name.endswith("-slurm-ready")]
    # Powered-down nodes are `idle~` to sinfo: only the floor's are counted.
    assert among in ready.inputs["create"]
    if floor == 0:
        assert "-t idle" not in ready.inputs["create"]


def test_an_elastic_cluster_s_resources_carry_tenant_and_cluster_too(cloud):
    mocks = run(cloud, elastic())
    tagged = [
        r for r in mocks.resources if r.typ in POWER_RESOURCES[cloud] and ("tags" in r.inputs or "labels" in r.inputs)
    ]
    assert tagged or cloud == "azure"
    for resource in tagged:
        tags = resource.inputs.get("tags") or resource.inputs["labels"]
        assert tags["hpcinfra-cluster-id"] == CLUSTER_ID, resource.name


def test_a_large_elastic_cluster_s_head_node_fits_in_ec2_user_data():
    """EC2 takes at most 16 KB of user data; an elastic head node's carries the compute nodes' boot
    script and the power programs as well."""
    mocks = run("aws", elastic(number_of_nodes=64, scaling=Scaling(63, 300)))
    head = head_of("aws", mocks)
    assert len(base64.b64decode(head.inputs["userDataBase64"])) < 16 * 1024
    assert RESUME_PROGRAM in boot_script("aws", head) and "NodeName=node-63 " in delivered_conf(mocks)


# AWS: the head node's instance role.

AWS_ACTIONS_ON_INSTANCES = re.compile(
    r"ec2:(\*|Terminate|Stop|Start|Modify|Reboot|Delete|Attach|Detach|Associate|Replace)"
)


def policy_of_head(mocks: CloudMocks) -> list[dict]:
    """The statements of the head node's instance role, checked to be the head node's."""
    head = head_of("aws", mocks)
    [profile] = mocks.of_type("aws:iam/instanceProfile:InstanceProfile")
    [role] = mocks.of_type("aws:iam/role:Role")
    [policy] = mocks.of_type("aws:iam/rolePolicy:RolePolicy")
    assert head.inputs["iamInstanceProfile"] == profile.name
    assert profile.inputs["role"] == role.name == policy.inputs["role"].removesuffix("-id")
    assert json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    # Nodes launched by the head node have no role of their own.
    [template] = mocks.of_type(LAUNCH_TEMPLATE)
    assert "iamInstanceProfile" not in template.inputs
    statements = json.loads(policy.inputs["policy"])["Statement"]
    assert all(statement["Effect"] == "Allow" for statement in statements)
    return statements


def actions(statement: dict) -> list[str]:
    return [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]


def resources(statement: dict) -> list[str]:
    return [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]


def test_on_aws_the_head_node_may_launch_only_tagged_nodes_from_the_template():
    mocks = run("aws", elastic())
    statements = policy_of_head(mocks)
    template_arn = "arn:aws:ec2:eu-west-1:123456789012:launch-template/hpc-rtl-regression-node-template-id"
    assert {action for statement in statements for action in actions(statement)} == {
        "ec2:RunInstances",
        "ec2:CreateTags",
        "ec2:TerminateInstances",
        "ec2:DescribeInstances",
    }
    launches = [s for s in statements if "ec2:RunInstances" in actions(s)]
    assert launches
    for statement in launches:
        assert statement["Condition"]["StringEquals"]["ec2:LaunchTemplate"] == template_arn
    # An instance only with the cluster's tag in the request; the other statement grants no instance.
    on_instances = [s for s in launches if any(":instance/" in r or r == "*" for r in resources(s))]
    assert len(on_instances) == 1
    assert on_instances[0]["Condition"]["StringEquals"]["aws:RequestTag/hpcinfra-cluster-id"] == CLUSTER_ID
    [tagging] = [s for s in statements if "ec2:CreateTags" in actions(s)]
    assert tagging["Condition"] == {"StringEquals": {"ec2:CreateAction": "RunInstances"}}


def test_on_aws_the_head_node_cannot_touch_instances_not_tagged_as_this_cluster_s_nodes():
    statements = policy_of_head(run("aws", elastic()))
    for statement in statements:
        for action in actions(statement):
            if AWS_ACTIONS_ON_INSTANCES.match(action):
                condition = statement.get("Condition", {})
                assert condition["StringEquals"]["ec2:ResourceTag/hpcinfra-cluster-id"] == CLUSTER_ID, action
                # Not the head node itself (no node tag), nor the floor.
                assert condition["Null"] == {"ec2:ResourceTag/hpcinfra-node": "false"}, action
                assert condition["StringNotEquals"] == {"ec2:ResourceTag/hpcinfra-node": ["node-0"]}, action
        if "*" in resources(statement):
            assert actions(statement) == ["ec2:DescribeInstances"], statement


def test_on_aws_the_launch_template_makes_nodes_like_the_floor_s():
    mocks = run("aws", elastic())
    [template] = mocks.of_type(LAUNCH_TEMPLATE)
    inputs = template.inputs
    assert inputs["imageId"] == "ami-debian12" and inputs["instanceType"] == NODE_TYPES["large"].instance_types["aws"]
    assert inputs["vpcSecurityGroupIds"] == ["hpc-rtl-regression-firewall-id"]
    assert inputs["metadataOptions"]["httpTokens"] == "required" and inputs["monitoring"] == {"enabled": True}
    [root] = inputs["blockDeviceMappings"]
    assert (
        root["deviceName"] == "/dev/xvda" and root["ebs"]["encrypted"] == "true" and root["ebs"]["volumeType"] == "gp3"
    )
    assert {spec["resourceType"] for spec in inputs["tagSpecifications"]} == {"instance", "volume"}
    assert all(spec["tags"]["hpcinfra-cluster-id"] == CLUSTER_ID for spec in inputs["tagSpecifications"])
    # No public address for a node: the subnet gives none, and the template asks for none.
    assert "networkInterfaces" not in inputs


# GCP: the head node's service account.


def test_on_gcp_the_head_node_s_role_is_granted_for_this_cluster_s_nodes_only():
    mocks = run("gcp", elastic())
    [account] = mocks.of_type("gcp:serviceaccount/account:Account")
    [role] = mocks.of_type("gcp:projects/iAMCustomRole:IAMCustomRole")
    [binding] = mocks.of_type("gcp:projects/iAMMember:IAMMember")
    email = f"{account.inputs['accountId']}@{PROJECT}.iam.gserviceaccount.com"
    assert head_of("gcp", mocks).inputs["serviceAccount"]["email"] == email
    assert binding.inputs["member"] == f"serviceAccount:{email}"
    assert binding.inputs["role"] == f"projects/{PROJECT}/roles/{role.inputs['roleId']}"
    assert binding.inputs["project"] == role.inputs["project"] == PROJECT
    permissions = role.inputs["permissions"]
    assert {"compute.instances.create", "compute.instances.delete"} <= set(permissions)
    assert not [p for p in permissions if "*" in p or "IamPolicy" in p or "serviceAccounts" in p]
    # Every clause of the condition names this cluster's resources: no grant on another's instance.
    clauses = binding.inputs["condition"]["expression"].split(" || ")
    zone = f"projects/{PROJECT}/zones/{REGION['gcp']}-a"
    assert f'resource.name.startsWith("{zone}/instances/hpc-rtl-regression-node-")' in clauses
    assert f'resource.name.startsWith("{zone}/disks/hpc-rtl-regression-node-")' in clauses
    assert all(
        re.fullmatch(r'resource\.name(\.startsWith\(| == )"projects/[^"]+/hpc-rtl-regression-[^"]+"\)?', c)
        for c in clauses
    )
    # The nodes it makes have no service account (and so no access to the project).
    [template] = mocks.of_type("gcp:compute/instanceTemplate:InstanceTemplate")
    assert "serviceAccounts" not in template.inputs and "serviceAccount" not in template.inputs
    assert template.inputs["networkInterfaces"] == [{"subnetwork": "hpc-rtl-regression-subnet-id"}]


# Azure: the head node's managed identity.


def test_on_azure_the_head_node_s_identity_has_a_role_in_the_cluster_s_resource_group_only():
    mocks = run("azure", elastic())
    [group] = mocks.of_type("azure-native:resources:ResourceGroup")
    group_id = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group.name}"
    head = head_of("azure", mocks)
    assert head.inputs["identity"]["type"] == "SystemAssigned"
    assignments = mocks.of_type(ROLE_ASSIGNMENT)
    assert assignments
    for assignment in assignments:
        assert assignment.inputs["scope"] == group_id
        assert not re.fullmatch(r"/subscriptions/[^/]+/?", assignment.inputs["scope"])
        assert assignment.inputs["principalId"] == f"{head.name}-principal"
        # Virtual Machine Contributor: neither Owner nor Contributor, and no right to the network's rules.
        assert assignment.inputs["roleDefinitionId"].endswith("/roleDefinitions/9980e02c-c2be-4d73-94e8-173b1dc7cf3c")
    # The compute nodes have no identity.
    assert [r.name for r in mocks.of_type(INSTANCE["azure"]) if "identity" in r.inputs] == [head.name]


# The power programs, run against fake CLIs that record their calls.

# Per cloud: the fake CLI's answer to "is there an instance of this node?", by the fake's state.
FAKE_CLI = {
    "aws": """aws() {
  echo "aws $*" >> "$CALLS"
  case "$2" in
    describe-instances) case "$*" in *instance-state-name,Values=pending,running*) cat "$STATE/$(echo "$*" | grep -o 'hpcinfra-node,Values=node-[0-9]*' | cut -d= -f2)" 2> /dev/null || true ;; esac ;;
  esac
}""",
    "gcp": """gcloud() {
  echo "gcloud $*" >> "$CALLS"
  case "$3" in
    describe) cat "$STATE/${4#hpc-rtl-regression-}" 2> /dev/null || return 1 ;;
  esac
}""",
    "azure": """az() {
  echo "az $*" >> "$CALLS"
  case "$2" in
    show) cat "$STATE/$(echo "$*" | grep -o 'hpc-rtl-regression-node-[0-9]*' | sed 's/hpc-rtl-regression-//')" 2> /dev/null || return 3 ;;
  esac
}""",
}
# What the fake says of a node that has an instance.
EXISTING = {"aws": "i-0123456789", "gcp": "RUNNING", "azure": "Succeeded"}
LAUNCH = {"aws": "aws ec2 run-instances", "gcp": "gcloud compute instances create", "azure": "az vm create"}
REMOVE = {"aws": "aws ec2 terminate-instances", "gcp": "gcloud compute instances delete", "azure": "az vm delete"}


def run_power_program(cloud: str, tmp_path, program: str, hostlist: str, existing: set[str]) -> list[str]:
    """Run the head node's `program` for `hostlist` with the cloud's CLI faked (the nodes in `existing`
    have an instance) and return the CLI calls it made."""
    mocks = run(cloud, elastic())
    files = {**written_files(boot_script(cloud, head_of(cloud, mocks))), SLURM_CONF: delivered_conf(mocks)}
    paths = {
        SLURM_CONF: tmp_path / "slurm.conf",
        COMPUTE_BOOT_TEMPLATE: tmp_path / "compute-boot.sh",
        POWER_LOG: tmp_path / "power.log",
    }
    text = files[program]
    for path, local in paths.items():
        text = text.replace(path, str(local))
        if path in files:
            local.write_text(files[path])
    (tmp_path / "program").write_text(text)
    state = tmp_path / "state"
    state.mkdir()
    for node in existing:
        (state / node).write_text(EXISTING[cloud] + "\n")
    calls = tmp_path / "calls"
    fakes = f"""{FAKE_CLI[cloud]}
scontrol() {{ echo "$3" | tr , '\\n'; }}
export -f scontrol {FAKE_CLI[cloud].split("(")[0]}
"""
    environment = {"PATH": os.environ["PATH"], "CALLS": str(calls), "STATE": str(state)}
    finished = subprocess.run(
        ["bash", "-c", f'{fakes}bash {tmp_path / "program"} "$0"', hostlist],
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert finished.returncode == 0, (tmp_path / "power.log").read_text()
    return calls.read_text().splitlines() if calls.exists() else []


def test_the_resume_program_launches_each_missing_node_with_its_address_boot_script_and_tags(cloud, tmp_path):
    calls = run_power_program(cloud, tmp_path, RESUME_PROGRAM, "node-1,node-3", existing={"node-3"})
    [launch] = [call for call in calls if call.startswith(LAUNCH[cloud])]
    # node-3 has an instance already: Slurm asking again launches nothing more.
    assert "node-1" in launch and "node-3" not in launch
    assert re.search(r"--private-ip-address 10\.20\.1\.21\b|--private-network-ip=10\.20\.1\.21\b", launch)
    if cloud == "aws":
        assert "--launch-template LaunchTemplateId=hpc-rtl-regression-node-template-id,Version=1" in launch
        [tag_specification] = json.loads(launch.split("--tag-specifications ")[1].split(" --query")[0])
        tags = {tag["Key"]: tag["Value"] for tag in tag_specification["Tags"]}
        assert tag_specification["ResourceType"] == "instance" and tags["Name"] == "hpc-rtl-regression-node-1"
    elif cloud == "gcp":
        assert launch.startswith("gcloud compute instances create hpc-rtl-regression-node-1 ")
        assert "--source-instance-template=hpc-rtl-regression-node-template" in launch
        tags = dict(pair.split("=") for pair in launch.split("--labels=")[1].split(","))
    else:
        assert "--name hpc-rtl-regression-node-1 " in launch and "--public-ip-address  --nsg " in launch
        tags = dict(pair.split("=") for pair in re.findall(r"(hpcinfra-[a-z-]+=[^ ]+)", launch))
    assert tags["hpcinfra-cluster-id"] == CLUSTER_ID and tags["hpcinfra-node"] == "node-1"
    # The boot script given is the node's own, gone once handed over.
    boot = re.search(r"(?:file://|startup-script=|--custom-data )(\S+)", launch).group(1)
    assert not os.path.exists(boot)


def test_the_suspend_program_removes_the_nodes_instances_and_succeeds_for_one_already_gone(cloud, tmp_path):
    calls = run_power_program(cloud, tmp_path, SUSPEND_PROGRAM, "node-1,node-2", existing={"node-2"})
    removals = [call for call in calls if call.startswith(REMOVE[cloud])]
    assert len(removals) == 1
    if cloud == "aws":
        assert removals[0].startswith("aws ec2 terminate-instances --instance-ids i-0123456789")
    else:
        assert "hpc-rtl-regression-node-2" in removals[0] and "node-1" not in removals[0]


# --- resizes: slurm.conf from the stack, no boot script of the size, drains -----------------------

GCP_TEMPLATE = "gcp:compute/instanceTemplate:InstanceTemplate"
HEAD = "hpc-rtl-regression-head"


@pytest.mark.parametrize(
    "before, after",
    [
        (spec(number_of_nodes=2), spec(number_of_nodes=4)),
        (elastic(number_of_nodes=2), elastic(number_of_nodes=4)),
        (elastic(scaling=Scaling(1, 300)), elastic(scaling=Scaling(2, 600))),
    ],
    ids=["static-size", "elastic-size", "elastic-floor"],
)
def test_a_resize_changes_no_machine_s_boot_script(cloud, before, after):
    """On AWS a new boot script stops and starts the instance (and cloud-init would not run it again)."""
    small, large = run(cloud, before), run(cloud, after)
    for name in (HEAD, NODE_INSTANCE.format(0)):
        assert boot_script(cloud, small.named(name)) == boot_script(cloud, large.named(name)), name
        assert small.named(name).inputs == large.named(name).inputs, name  # nothing else of theirs either
        assert "NodeName=node-" not in boot_script(cloud, small.named(name))
    # Nor what the head node launches nodes with.
    templates = [r for r in small.resources if r.typ in (LAUNCH_TEMPLATE, GCP_TEMPLATE)]
    assert len(templates) == (cloud != "azure" and before.scaling is not None)
    for template in templates:
        assert template.inputs == large.named(template.name).inputs
    if before.scaling:
        [small_boot, large_boot] = [
            written_files(boot_script(cloud, m.named(HEAD)))[COMPUTE_BOOT_TEMPLATE] for m in (small, large)
        ]
        assert small_boot == large_boot
    # What does change: slurm.conf, delivered again.
    assert delivered_conf(small) != delivered_conf(large)
    assert command(small, "slurm-conf").inputs["triggers"] != command(large, "slurm-conf").inputs["triggers"]


@pytest.mark.parametrize("cluster", [spec(), elastic()], ids=["static", "elastic"])
def test_pulumi_keeps_the_boot_script_every_instance_was_created_with(cloud, cluster):
    """Cloud-init runs it once: a new one (from a cluster made before, or a script changed since) would only
    stop and start (AWS) or replace (Azure) the running machine. Templates are not instances: a new version
    of one is for the instances launched from it next."""
    mocks = run(cloud, cluster)
    instances = mocks.of_type(INSTANCE[cloud])
    assert len(instances) == 1 + cluster.floor
    for instance in instances:
        assert set(mocks.ignored_changes[instance.name]) == BOOT_SCRIPT_INPUTS[cloud], instance.name
        assert boot_script(cloud, instance).startswith("#!/bin/bash\n")  # found at one of those paths
    ignoring = {name for name, ignored in mocks.ignored_changes.items() if ignored}
    assert ignoring == {instance.name for instance in instances}


def test_the_head_node_gets_slurm_conf_from_a_command_of_the_stack(cloud):
    mocks = run(cloud, spec(number_of_nodes=4))
    conf = delivered_conf(mocks)
    assert conf == ClusterPlan.of(replace(spec(number_of_nodes=4), region=REGION[cloud])).slurm_conf()
    assert [line.split()[0] for line in conf.splitlines() if line.startswith("NodeName=")] == [
        f"NodeName=node-{i}" for i in range(4)
    ]
    assert "SlurmctldParameters=enable_configless" in conf.splitlines()
    slurm_conf = command(mocks, "slurm-conf")
    assert slurm_conf.inputs["create"].startswith("sudo --preserve-env bash -c ")
    # Given again to a new head node, and the check that Slurm is up runs after it, again with it.
    assert slurm_conf.inputs["triggers"][0] == f"{HEAD}-id"
    assert HEAD in mocks.dependencies[slurm_conf.name]
    ready = command(mocks, "slurm-ready")
    assert slurm_conf.name in mocks.dependencies[ready.name]
    assert ready.inputs["triggers"] == slurm_conf.inputs["triggers"]
    assert all(ready.name in mocks.dependencies[tool.name] for tool in mocks.of_type(TOOL) if "-tool-" in tool.name)
    # No machine has it in its boot script: the compute nodes' slurmd take it from slurmctld.
    for instance in mocks.of_type(INSTANCE[cloud]):
        assert SLURM_CONF not in boot_script(cloud, instance), instance.name
    node = boot_script(cloud, mocks.named(NODE_INSTANCE.format(0)))
    assert "echo 'SLURMD_OPTIONS=\"--conf-server 10.20.1.10:6817\"' > /etc/default/slurmd" in node
    assert node.index("/etc/default/slurmd") < node.index("systemctl restart slurmd")
    assert "hostnamectl set-hostname node-0" in node


def test_on_aws_slurm_conf_waits_for_the_head_node_s_role_to_let_it_end_nodes_leaving_the_floor():
    mocks = run("aws", elastic())
    assert "hpc-rtl-regression-head-policy" in mocks.dependencies[command(mocks, "slurm-conf").name]


def test_a_floor_instance_of_an_elastic_cluster_is_named_as_the_head_node_s_programs_find_it(cloud):
    """A node that leaves a lowered floor keeps its instance until the stack deletes it: the resume program,
    which finds a node's instance by its tag (AWS) or name (GCP, Azure), launches no second one meanwhile."""
    [node] = [r for r in run(cloud, elastic()).of_type(INSTANCE[cloud]) if r.name == NODE_INSTANCE.format(0)]
    name = {
        "aws": lambda: node.inputs["tags"]["Name"],
        "gcp": lambda: node.inputs["name"],
        "azure": lambda: node.inputs["vmName"],
    }
    assert name[cloud]() == NODE_INSTANCE.format(0)
    assert instance_labels(cloud, node)["hpcinfra-node"] == "node-0"
    # A static cluster's keep the names they were made with.
    [static] = [
        r for r in run(cloud, spec(number_of_nodes=1)).of_type(INSTANCE[cloud]) if r.name == NODE_INSTANCE.format(0)
    ]
    assert "name" not in static.inputs and "vmName" not in static.inputs


def test_the_drain_of_a_resize_is_a_command_on_the_head_node_that_reports_the_busy_nodes(cloud):
    draining = run(cloud, elastic(draining=("node-2", "node-3")), drain_request="first", busy="node-3\n")
    drain = command(draining, "drain")
    assert "scontrol update nodename=node-2,node-3 state=drain reason=hpcinfra:resize" in drain.inputs["create"]
    assert "-n node-2,node-3 " in drain.inputs["create"]
    assert draining.exports["busyNodes"] == ["node-3"]
    # Asked again with the same nodes, it runs again.
    assert drain.inputs["triggers"] == ["first"]
    again = command(run(cloud, elastic(draining=("node-2", "node-3")), drain_request="second"), "drain")
    assert again.inputs["triggers"] == ["second"]
    assert command(draining, "slurm-conf").name in draining.dependencies[drain.name]

    plain = run(cloud, elastic())
    assert not [r for r in plain.of_type(TOOL) if r.name.endswith("-drain")]
    assert plain.exports["busyNodes"] == []
    # The drain changes nothing else: slurm.conf is not given again, which would take the drained nodes back.
    assert {r.name: r.inputs for r in draining.resources if r.name != drain.name} == {
        r.name: r.inputs for r in plain.resources
    }


def root_script(command_line: str) -> str:
    """The script a head node's command runs as root."""
    words = shlex.split(command_line)
    assert words[:4] == ["sudo", "--preserve-env", "bash", "-c"] and len(words) == 5
    return words[4]


def run_on_head(tmp_path, script: str, fakes: str, stdin: str = "", files: dict[str, str] | None = None):
    """Run `script` with the shell functions `fakes` for commands of the head node, with each path of `files`
    replaced by its stand-in; the fakes note their calls in the file $CALLS."""
    for path, stand_in in (files or {}).items():
        script = script.replace(path, stand_in)
    calls = tmp_path / "calls"
    names = " ".join(re.findall(r"^(\w+)\(\)", fakes, re.MULTILINE))
    finished = subprocess.run(
        ["bash", "-c", f"{fakes}\nexport -f {names}\n{script}"],
        input=stdin,
        env={"PATH": os.environ["PATH"], "CALLS": str(calls), "HERE": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert finished.returncode == 0, finished.stderr
    return finished.stdout, calls.read_text().splitlines() if calls.exists() else []


def test_the_drain_command_drains_the_nodes_and_prints_those_still_running_jobs(tmp_path):
    from infra.clouds.plan import drain_command

    plan = ClusterPlan.of(elastic(draining=("node-1", "node-2", "node-3")))
    fakes = """scontrol() { echo "scontrol $*" >> "$CALLS"; echo "scontrol says" >&2; }
sinfo() { echo "sinfo $*" >> "$CALLS"; printf 'node-3 drng\\nnode-1 mix*\\nnode-2 drain~\\n'; }"""
    stdout, calls = run_on_head(tmp_path, root_script(drain_command(plan)), fakes)
    assert stdout == "node-1 node-3\n"  # sorted; node-2 drained and idle may go
    assert calls == [
        "scontrol update nodename=node-1,node-2,node-3 state=drain reason=hpcinfra:resize",
        "sinfo -h -N -n node-1,node-2,node-3 -o %N %t",
    ]
    assert drain_command(ClusterPlan.of(elastic())) is None


def run_slurm_conf(tmp_path, old: ClusterSpec | None, new: ClusterSpec, drained: str = "") -> tuple[list[str], str]:
    """Run the slurm-conf command for `new` on a head node whose slurm.conf is `old`'s (None: just booted), with
    systemctl, scontrol, sinfo (whose drained nodes with their reasons are `drained`) and the suspend program
    faked; returns their calls and the slurm.conf it leaves."""
    from infra.clouds.plan import slurm_conf_command

    conf = tmp_path / "slurm.conf"
    if old is not None:
        conf.write_text(ClusterPlan.of(old).slurm_conf())
    (tmp_path / "ready").touch()
    (tmp_path / "drained").write_text(drained)
    suspend = tmp_path / "suspend"
    suspend.write_text('#!/bin/bash\necho "suspend $*" >> "$CALLS"\n')
    suspend.chmod(0o755)
    fakes = """systemctl() { echo "systemctl $*" >> "$CALLS"; }
scontrol() { echo "scontrol $*" >> "$CALLS"; }
sinfo() { case "$*" in *"-t drain"*) cat "$HERE/drained" ;; esac; }"""
    plan = ClusterPlan.of(new)
    files = {SLURM_CONF: str(conf), READY_MARKER: str(tmp_path / "ready"), SUSPEND_PROGRAM: str(suspend)}
    _, calls = run_on_head(tmp_path, root_script(slurm_conf_command(plan)), fakes, plan.slurm_conf(), files)
    assert conf.read_text() == plan.slurm_conf() and not (tmp_path / "slurm.conf.new").exists()
    return calls, conf.read_text()


RESTART = ["systemctl restart slurmctld", "scontrol reconfigure"]


def test_slurm_conf_on_a_new_head_node_starts_slurmctld(tmp_path):
    calls, _ = run_slurm_conf(tmp_path, None, elastic())
    assert calls == RESTART


def test_the_same_slurm_conf_again_restarts_nothing(tmp_path):
    calls, _ = run_slurm_conf(tmp_path, elastic(), elastic())
    assert calls == []


@pytest.mark.parametrize(
    "old, new, ended",
    [
        # The head node launched node-2 and node-3 (if they were up): only it can end them.
        (elastic(), elastic(number_of_nodes=2), ["suspend node-2,node-3"]),
        (elastic(), elastic(number_of_nodes=3, scaling=Scaling(0, 300)), ["suspend node-3"]),
        # The stack's own instances: it deletes them.
        (spec(number_of_nodes=4), spec(number_of_nodes=2), []),
        (elastic(scaling=Scaling(4, 300)), elastic(number_of_nodes=2, scaling=Scaling(2, 300)), []),
    ],
    ids=["elastic", "elastic-no-floor", "static", "floor-removed"],
)
def test_a_shrink_ends_the_instances_the_head_node_launched_for_removed_nodes_then_restarts(tmp_path, old, new, ended):
    calls, conf = run_slurm_conf(tmp_path, old, new)
    assert calls[: len(ended)] == ended  # before slurmctld restarts: its suspend program sees the old conf
    assert calls[len(ended) : len(ended) + 2] == RESTART
    assert "NodeName=node-3 " not in conf


def test_a_grow_restarts_slurmctld_and_ends_nothing(tmp_path):
    calls, conf = run_slurm_conf(tmp_path, elastic(number_of_nodes=2), elastic(number_of_nodes=4))
    assert calls == RESTART and "NodeName=node-3 " in conf


def test_nodes_that_leave_a_lowered_floor_are_powered_down_for_slurm_to_power_up_again(tmp_path):
    """Their instances are the stack's, which deletes them at the end of the update."""
    calls, _ = run_slurm_conf(tmp_path, elastic(scaling=Scaling(3, 300)), elastic(scaling=Scaling(1, 300)))
    assert calls == [*RESTART, "scontrol update nodename=node-1,node-2 state=power_down_force"]


def test_nodes_drained_for_an_earlier_resize_take_jobs_again_and_no_others(tmp_path):
    drained = "node-1 hpcinfra:resize\nnode-0 disk failing\nnode-3 hpcinfra:resize\n"
    calls, _ = run_slurm_conf(tmp_path, elastic(), elastic(), drained)
    assert calls == ["scontrol update nodename=node-1,node-3 state=resume"]
    calls, _ = run_slurm_conf(tmp_path, elastic(), elastic(number_of_nodes=2), "node-1 hpcinfra:resize\n")
    assert calls[-1] == "scontrol update nodename=node-1 state=resume"


def test_the_check_that_slurm_is_up_counts_nodes_running_jobs(tmp_path):
    """After a resize the nodes it kept may be running jobs: they are up."""
    from infra.clouds.plan import slurm_ready_command

    fakes = """sinfo() { case "$*" in *"-t idle,alloc,mix,comp "*) printf 'node-0\\nnode-1\\nnode-2\\n' ;; *"-t idle "*) echo node-0 ;; esac; }
seq() { echo 1; }
sleep() { :; }"""
    files = {READY_MARKER: str(tmp_path / "ready")}
    (tmp_path / "ready").touch()
    run_on_head(tmp_path, slurm_ready_command(ClusterPlan.of(spec(number_of_nodes=3))), fakes, files=files)
    with pytest.raises(AssertionError):
        run_on_head(tmp_path, slurm_ready_command(ClusterPlan.of(spec(number_of_nodes=4))), fakes, files=files)


# PulumiProvider.drain: the stack update with the drain command, through a runner that runs the program under mocks.


class MockedStacks:
    """Stands in for the stack runner: runs each update's program under the mocks, whose drain command
    prints `busy`, and returns the stack's outputs. A refresh finds the stack's first `lost` compute nodes gone."""

    def __init__(self, busy: str = "", lost: int = 0) -> None:
        self.busy = busy
        self.lost = lost
        self.updates: list[CloudMocks] = []

    def up(self, stack, program, config, progress, recover):
        self.updates.append(run_program(program, self.busy))
        return self.updates[-1].exports

    def refresh(self, stack, program):
        outputs = run_program(program, self.busy).exports
        return {**outputs, "nodeIds": outputs["nodeIds"][self.lost :]}


def test_the_pulumi_provider_drains_with_a_stack_update_and_returns_the_busy_nodes():
    stacks = MockedStacks(busy="node-3\n")
    provider = PulumiProvider("aws", stacks)
    cluster = replace(elastic(), region=REGION["aws"])
    assert asyncio.run(provider.drain(cluster, {}, ["node-2", "node-3"])) == ["node-3"]
    assert asyncio.run(provider.drain(cluster, {}, ["node-2", "node-3"])) == ["node-3"]
    first, second = (command(update, "drain") for update in stacks.updates)
    assert "nodename=node-2,node-3 state=drain" in first.inputs["create"]
    # Each call runs the command again; nothing else of the stack changes.
    assert first.inputs["triggers"] != second.inputs["triggers"]
    assert stacks.updates[0].exports["busyNodes"] == ["node-3"]
    assert command(stacks.updates[0], "slurm-conf").inputs == command(run("aws", elastic()), "slurm-conf").inputs
    # No node to drain: no update.
    assert asyncio.run(provider.drain(cluster, {}, [])) == [] and len(stacks.updates) == 2


@pytest.mark.parametrize(
    "outputs, busy",
    [
        ({"busyNodes": ["node-3", "node-2"]}, ["node-2", "node-3"]),
        ({"busyNodes": "node-3 node-2\n"}, ["node-2", "node-3"]),
        ({"busyNodes": ""}, []),
        ({}, []),
    ],
)
def test_busy_nodes_are_read_from_a_list_or_a_string_or_none(outputs, busy):
    assert busy_nodes(outputs) == busy


@pytest.mark.parametrize(
    "cluster, lost, problems",
    [
        (spec(number_of_nodes=3), 0, []),
        (elastic(), 0, []),
        (elastic(scaling=Scaling(0, 300)), 0, []),
        (spec(number_of_nodes=3), 1, ["2 of 3 compute nodes exist"]),
        (elastic(scaling=Scaling(2, 300)), 1, ["1 of the floor's 2 compute nodes exist"]),
    ],
    ids=["static", "elastic", "elastic-no-floor", "static-node-lost", "elastic-floor-node-lost"],
)
def test_the_pulumi_provider_s_health_counts_the_compute_nodes_of_the_floor(cloud, cluster, lost, problems):
    """An elastic cluster's stack has the floor's compute nodes only: the others are up only for jobs."""
    assert cluster.floor < cluster.number_of_nodes or cluster.scaling is None
    provider = PulumiProvider(cloud, MockedStacks(lost=lost))
    assert asyncio.run(provider.health(replace(cluster, region=REGION[cloud]))) == problems
