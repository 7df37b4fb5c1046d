"""The Pulumi programs for AWS, GCP and Azure, run under Pulumi's own mocks (no cloud, no CLI):
what each would create follows the spec and the catalog, is tagged with tenant and cluster, opens
nothing to the internet but SSH from the admin range, and keeps the database private and its
password secret."""

import asyncio
import base64
import json
from dataclasses import replace

import pulumi
import pytest
from pulumi.runtime import rpc

from core.catalog import NODE_TYPES
from core.providers import ClusterSpec, ServiceSecret, ServiceSpec, ToolSpec
from infra.clouds import aws, azure, gcp
from infra.clouds.plan import ClusterPlan

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
# Resources the programs refer to by name.
NAMED_BY_PULUMI = {
    "aws:rds/parameterGroup:ParameterGroup",
    "gcp:compute/router:Router",
    "azure-native:dbforpostgresql:Server",
}


class CloudMocks(pulumi.runtime.Mocks):
    """Records every resource the program registers; answers the few look-ups the programs make."""

    def __init__(self) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []
        self.calls: list[pulumi.runtime.MockCallArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.resources.append(args)
        outputs = dict(args.inputs)
        if args.typ == "tls:index/privateKey:PrivateKey":
            outputs.update(publicKeyOpenssh="ssh-ed25519 AAAAmock", privateKeyOpenssh="mock private key")
        if args.typ == INSTANCE["aws"]:
            outputs["publicIp"] = "203.0.113.10"
        if args.typ in NAMED_BY_PULUMI:
            outputs.setdefault("name", args.name)  # as Pulumi names them when the program does not
        return [f"{args.name}-id", outputs]

    def call(self, args: pulumi.runtime.MockCallArgs):
        self.calls.append(args)
        if args.token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            return {"names": ["zone-a", "zone-b"], "zoneIds": ["a", "b"], "id": "zones"}
        if args.token == "aws:ec2/getAmi:getAmi":
            return {"id": "ami-debian12", "architecture": "x86_64"}
        return {}

    def of_type(self, typ: str) -> list[pulumi.runtime.MockResourceArgs]:
        return [r for r in self.resources if r.typ == typ]


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


def run(cloud: str, cluster: ClusterSpec) -> CloudMocks:
    """Run the cloud's program for `cluster` under mocks and return what it registered."""
    mocks = CloudMocks()
    # Pulumi's test runner uses the thread's current event loop, which an earlier asyncio.run() closes.
    asyncio.set_event_loop(asyncio.new_event_loop())
    pulumi.runtime.set_mocks(mocks, project="hpcinfra", stack="test", preview=False)

    @pulumi.runtime.test
    def program():
        PROGRAMS[cloud](ClusterPlan.of(replace(cluster, region=REGION[cloud])))

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
