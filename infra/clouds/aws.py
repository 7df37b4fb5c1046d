"""The cluster on AWS: a VPC and subnet, a security group, EC2 instances for the head and compute
nodes, an EBS volume for shared storage (exported over NFS by the head node), and RDS for PostgreSQL.

Only the head node has a public address, for SSH from the admin range. The cluster's subnet sends the
internet through a NAT gateway (in a small public subnet of its own) and only the admin range straight to
the internet gateway: that is how the head node answers SSH, while every node reaches package mirrors
through the NAT. The head node and compute nodes keep the addresses every cloud gives them.

An elastic cluster's stack has the floor's compute nodes only, and a launch template for the others:
the head node launches them from it and terminates them, as an instance role allows it for this
cluster's tagged instances alone (not the floor's: those of nodes that leave a lowered floor are the
stack's, deleted by it, and the resume program launches none for a node while its instance is there)."""

import base64
import gzip
import json
import shlex
from collections.abc import Callable

import pulumi
import pulumi_aws as aws

from core.providers import SERVICE_USER
from infra.clouds.common import admin_key, export_outputs, install_software, service_password
from infra.clouds.plan import (
    DATABASE_CIDR,
    HEAD_ADDRESS,
    NAT_SUBNET_CIDR,
    NETWORK_CIDR,
    NODE,
    NODE_TAG,
    SUBNET_CIDR,
    ClusterPlan,
    PowerControl,
    install_packages,
)

# Debian's own account for its official images.
DEBIAN_IMAGES_OWNER = "136693071363"
# An instance's boot script, which cloud-init runs once: a new one would only stop and start the instance
# (ending its jobs), so Pulumi keeps the one it was created with. Both, as the head's may be either.
BOOT_SCRIPT_INPUTS = ["userData", "userDataBase64"]


def build(plan: ClusterPlan) -> None:
    p, tags = plan.prefix, plan.tags
    # A provider that names its account gets an AWS provider of its own that refuses any other account
    # (without one, the stack's default provider, as stacks made before had).
    account = plan.config.account("aws")
    explicit = aws.Provider(f"{p}-aws", region=plan.spec.region, allowed_account_ids=[account]) if account else None

    def opts(**options) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(provider=explicit, **options)

    zones = aws.get_availability_zones(state="available", opts=pulumi.InvokeOptions(provider=explicit)).names

    vpc = aws.ec2.Vpc(f"{p}-vpc", cidr_block=NETWORK_CIDR, enable_dns_hostnames=True, tags=tags, opts=opts())
    gateway = aws.ec2.InternetGateway(f"{p}-gateway", vpc_id=vpc.id, tags=tags, opts=opts())
    nat_subnet = aws.ec2.Subnet(
        f"{p}-nat-subnet", vpc_id=vpc.id, cidr_block=NAT_SUBNET_CIDR, availability_zone=zones[0], tags=tags, opts=opts()
    )
    public_routes = aws.ec2.RouteTable(
        f"{p}-nat-routes",
        vpc_id=vpc.id,
        routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=gateway.id)],
        tags=tags,
        opts=opts(),
    )
    nat_egress = aws.ec2.RouteTableAssociation(
        f"{p}-nat-routes-subnet", subnet_id=nat_subnet.id, route_table_id=public_routes.id, opts=opts()
    )
    # An address for a NAT needs the VPC's internet gateway, and the NAT a subnet that routes to it.
    nat_address = aws.ec2.Eip(f"{p}-nat-address", domain="vpc", tags=tags, opts=opts(depends_on=[gateway]))
    nat = aws.ec2.NatGateway(
        f"{p}-nat", subnet_id=nat_subnet.id, allocation_id=nat_address.id, tags=tags, opts=opts(depends_on=[nat_egress])
    )
    subnet = aws.ec2.Subnet(
        f"{p}-subnet",
        vpc_id=vpc.id,
        cidr_block=SUBNET_CIDR,
        availability_zone=zones[0],
        map_public_ip_on_launch=False,
        tags=tags,
        opts=opts(),
    )
    routes = aws.ec2.RouteTable(
        f"{p}-routes",
        vpc_id=vpc.id,
        routes=[
            aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nat.id),
            # Answers to SSH from the admin range leave from the head node's own public address.
            aws.ec2.RouteTableRouteArgs(cidr_block=plan.ssh_cidr, gateway_id=gateway.id),
        ],
        tags=tags,
        opts=opts(),
    )
    egress = aws.ec2.RouteTableAssociation(
        f"{p}-routes-subnet", subnet_id=subnet.id, route_table_id=routes.id, opts=opts()
    )
    firewall = aws.ec2.SecurityGroup(
        f"{p}-firewall",
        vpc_id=vpc.id,
        description="SSH from the admin range; everything, Slurm included, only inside the cluster's network",
        ingress=[
            aws.ec2.SecurityGroupIngressArgs(protocol="tcp", from_port=22, to_port=22, cidr_blocks=[plan.ssh_cidr]),
            aws.ec2.SecurityGroupIngressArgs(protocol="-1", from_port=0, to_port=0, cidr_blocks=[NETWORK_CIDR]),
        ],
        egress=[aws.ec2.SecurityGroupEgressArgs(protocol="-1", from_port=0, to_port=0, cidr_blocks=["0.0.0.0/0"])],
        tags=tags,
        opts=opts(),
    )

    key = admin_key(plan)
    key_pair = aws.ec2.KeyPair(f"{p}-admin", public_key=key.public_key_openssh, tags=tags, opts=opts())
    image = aws.ec2.get_ami(
        most_recent=True,
        owners=[DEBIAN_IMAGES_OWNER],
        filters=[aws.ec2.GetAmiFilterArgs(name="name", values=["debian-12-amd64-*"])],
        opts=pulumi.InvokeOptions(provider=explicit),
    )
    # Instance metadata (and the instance role's credentials) only with a session token: IMDSv2,
    # which a request forwarded by a process on the node, or from further away, cannot get.
    metadata_options = {"http_endpoint": "enabled", "http_tokens": "required", "http_put_response_hop_limit": 1}

    def instance(
        name: str,
        instance_type: str,
        address: str,
        script: pulumi.Input[str],
        public: bool = False,
        instance_tags: dict[str, str] = tags,
        profile: aws.iam.InstanceProfile | None = None,
        compressed: bool = False,
    ) -> aws.ec2.Instance:
        return aws.ec2.Instance(
            f"{p}-{name}",
            instance_type=instance_type,
            ami=image.id,
            subnet_id=subnet.id,
            private_ip=address,
            associate_public_ip_address=public,
            vpc_security_group_ids=[firewall.id],
            key_name=key_pair.key_name,
            user_data=None if compressed else script,
            user_data_base64=pulumi.Output.from_input(script).apply(_gzipped) if compressed else None,
            iam_instance_profile=profile.name if profile else None,
            root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(encrypted=True, volume_type="gp3"),
            metadata_options=aws.ec2.InstanceMetadataOptionsArgs(**metadata_options),
            # One-minute CloudWatch metrics (else every five), so metering reads every minute's CPU.
            monitoring=True,
            tags={**instance_tags, "Name": f"{p}-{name}"},
            # Boot scripts install packages: the subnet must route to the internet first.
            opts=opts(depends_on=[egress, nat], ignore_changes=BOOT_SCRIPT_INPUTS),
        )

    storage = aws.ebs.Volume(
        f"{p}-shared",
        availability_zone=zones[0],
        size=plan.spec.storage_gb,
        type="gp3",
        encrypted=True,
        tags=tags,
        opts=opts(),
    )

    # On Nitro instances an EBS volume appears as an NVMe device whose id carries the volume's id.
    def shared_disk(volume: str) -> str:
        return f"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{volume.replace('-', '')}"

    if plan.elastic:
        template = aws.ec2.LaunchTemplate(
            f"{p}-node-template",
            description="hpcinfra: the compute nodes the head node launches",
            image_id=image.id,
            instance_type=plan.instance_type("aws"),
            key_name=key_pair.key_name,
            # The security group here and the subnet in the request: EC2 refuses a request with a private
            # address for a template whose network interfaces name the subnet.
            vpc_security_group_ids=[firewall.id],
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name=image.root_device_name,
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        encrypted="true", volume_type="gp3", delete_on_termination="true"
                    ),
                )
            ],
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(**metadata_options),
            monitoring=aws.ec2.LaunchTemplateMonitoringArgs(enabled=True),
            tag_specifications=[
                aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type=kind, tags=tags)
                for kind in ("instance", "volume")
            ],
            tags=tags,
            opts=opts(),
        )
        profile, launcher = _node_launcher(plan, template, subnet, firewall, image.id, opts)
        head_script = pulumi.Output.all(
            storage.id, template.arn, template.id, template.latest_version, subnet.id
        ).apply(lambda values: plan.head_script(shared_disk(values[0]), _power_control(plan, *values[1:])))
    else:
        profile, launcher = None, None
        head_script = storage.id.apply(lambda volume: plan.head_script(shared_disk(volume)))
    # An elastic cluster's head node carries the compute nodes' boot script and the power programs too:
    # compressed (cloud-init unpacks it), so that a large cluster's stays within EC2's 16 KB of user data.
    head = instance(
        "head",
        plan.head_instance_type("aws"),
        HEAD_ADDRESS,
        head_script,
        public=True,
        profile=profile,
        compressed=plan.elastic,
    )
    aws.ec2.VolumeAttachment(
        f"{p}-shared-on-head",
        device_name="/dev/sdf",
        volume_id=storage.id,
        instance_id=head.id,
        # The volume is mounted and exported: stop the head before detaching it, or the detach hangs.
        stop_instance_before_detaching=True,
        opts=opts(),
    )
    nodes = [
        instance(
            name,
            plan.instance_type("aws"),
            plan.node_addresses[i],
            plan.compute_script(i),
            instance_tags=plan.instance_tags(name),
        )
        for i, name in enumerate(plan.floor_names)
    ]

    # Nodes that leave a lowered floor are powered down with slurm.conf: the role must allow it by then.
    services = install_software(plan, head, head.public_ip, key, after=[launcher] if launcher else [])
    postgresql = plan.service("postgresql")
    if postgresql is not None:
        database_subnet = aws.ec2.Subnet(
            f"{p}-database-subnet",
            vpc_id=vpc.id,
            cidr_block=DATABASE_CIDR,
            availability_zone=zones[1],
            tags=tags,
            opts=opts(),
        )
        subnets = aws.rds.SubnetGroup(
            f"{p}-database", subnet_ids=[subnet.id, database_subnet.id], tags=tags, opts=opts()
        )
        database_firewall = aws.ec2.SecurityGroup(
            f"{p}-database-firewall",
            vpc_id=vpc.id,
            description="PostgreSQL from inside the cluster's network only",
            ingress=[
                aws.ec2.SecurityGroupIngressArgs(
                    protocol="tcp", from_port=postgresql.port, to_port=postgresql.port, cidr_blocks=[NETWORK_CIDR]
                )
            ],
            tags=tags,
            opts=opts(),
        )
        major = postgresql.version.split(".")[0]
        # Refuse connections without TLS (PostgreSQL 15 and later on RDS do by default; earlier ones do not).
        parameters = aws.rds.ParameterGroup(
            f"{p}-postgresql-parameters",
            family=f"postgres{major}",
            description="hpcinfra: TLS required",
            parameters=[aws.rds.ParameterGroupParameterArgs(name="rds.force_ssl", value="1")],
            tags=tags,
            opts=opts(),
        )
        database = aws.rds.Instance(
            f"{p}-postgresql",
            engine="postgres",
            engine_version=postgresql.version,
            instance_class="db.t4g.micro",
            allocated_storage=20,
            storage_encrypted=True,
            db_name=postgresql.config.get("databaseName", "postgres"),
            username=SERVICE_USER,
            password=service_password(plan, "postgresql"),
            db_subnet_group_name=subnets.name,
            parameter_group_name=parameters.name,
            vpc_security_group_ids=[database_firewall.id],
            publicly_accessible=False,
            skip_final_snapshot=True,
            tags=tags,
            opts=opts(),
        )
        services["postgresql"] = {"host": database.address, "port": postgresql.port}

    export_outputs(head.public_ip, [n.id for n in nodes], storage.id, services)


def _gzipped(script: str) -> str:
    # No time stamp in the archive: the same script is the same user data, and no update of the head node.
    return base64.b64encode(gzip.compress(script.encode(), mtime=0)).decode()


def _node_launcher(
    plan: ClusterPlan,
    template: aws.ec2.LaunchTemplate,
    subnet: aws.ec2.Subnet,
    firewall: aws.ec2.SecurityGroup,
    image: str,
    opts: Callable[..., pulumi.ResourceOptions],
) -> tuple[aws.iam.InstanceProfile, aws.iam.RolePolicy]:
    """The head node's instance role: launch compute nodes from the template, tagged as this cluster's,
    and terminate this cluster's compute nodes; nothing else. Returns its profile and its policy."""
    p = plan.prefix
    role = aws.iam.Role(
        f"{p}-head-role",
        description="hpcinfra: the head node powers the cluster's compute nodes up and down",
        assume_role_policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
                ],
            }
        ),
        tags=plan.tags,
        opts=opts(),
    )
    policy = aws.iam.RolePolicy(
        f"{p}-head-policy",
        role=role.id,
        policy=pulumi.Output.all(template.arn, subnet.id, firewall.id).apply(
            lambda values: json.dumps(_launcher_policy(plan, *values, image))
        ),
        opts=opts(),
    )
    return aws.iam.InstanceProfile(f"{p}-head-profile", role=role.name, tags=plan.tags, opts=opts()), policy


def _launcher_policy(plan: ClusterPlan, template: str, subnet: str, firewall: str, image: str) -> dict:
    # Every ARN of the cluster's partition, region and account, which the template's ARN names.
    _, partition, _, region, account, _ = template.split(":", 5)
    ec2 = f"arn:{partition}:ec2:{region}"
    cluster_id = plan.spec.cluster_id
    not_the_floor = {"StringNotEquals": {f"ec2:ResourceTag/{NODE_TAG}": plan.floor_names}} if plan.floor_names else {}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                # The instance is launched from the template only, and only tagged as this cluster's.
                "Sid": "LaunchTheClustersNodes",
                "Effect": "Allow",
                "Action": "ec2:RunInstances",
                "Resource": f"{ec2}:{account}:instance/*",
                "Condition": {
                    "StringEquals": {
                        "ec2:LaunchTemplate": template,
                        "aws:RequestTag/hpcinfra-cluster-id": cluster_id,
                    }
                },
            },
            {
                # What else a launch from the template uses or makes; no instance without the grant above.
                "Sid": "LaunchFromTheTemplate",
                "Effect": "Allow",
                "Action": "ec2:RunInstances",
                "Resource": [
                    template,
                    f"{ec2}:{account}:subnet/{subnet}",
                    f"{ec2}:{account}:security-group/{firewall}",
                    f"{ec2}:{account}:key-pair/*",
                    f"{ec2}:{account}:volume/*",
                    f"{ec2}:{account}:network-interface/*",
                    f"{ec2}::image/{image}",
                    f"{ec2}::snapshot/*",
                ],
                "Condition": {"StringEquals": {"ec2:LaunchTemplate": template}},
            },
            {
                "Sid": "TagOnlyWhileLaunching",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": f"{ec2}:{account}:*/*",
                "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}},
            },
            {
                # The cluster's compute nodes, not its head node (which has no node tag) nor its floor.
                "Sid": "TerminateTheClustersNodes",
                "Effect": "Allow",
                "Action": "ec2:TerminateInstances",
                "Resource": f"{ec2}:{account}:instance/*",
                "Condition": {
                    "StringEquals": {"ec2:ResourceTag/hpcinfra-cluster-id": cluster_id},
                    "Null": {f"ec2:ResourceTag/{NODE_TAG}": "false"},
                    **not_the_floor,
                },
            },
            {
                # Which instances a node has: AWS does not limit DescribeInstances to some resources.
                "Sid": "FindTheNodes",
                "Effect": "Allow",
                "Action": "ec2:DescribeInstances",
                "Resource": "*",
            },
        ],
    }


def _power_control(plan: ClusterPlan, template_arn: str, template_id: str, version: int, subnet: str) -> PowerControl:
    """The resume and suspend programs' AWS CLI commands: run-instances from the template, tagged as the
    cluster's and the node's, and terminate-instances of the node's instances, found by their tags."""
    region = template_arn.split(":")[3]
    tag_specifications = [
        {
            "ResourceType": "instance",
            "Tags": [
                {"Key": key, "Value": value}
                for key, value in {**plan.instance_tags(NODE), "Name": plan.instance_name(NODE)}.items()
            ],
        }
    ]
    of_the_cluster = f"Name=tag:hpcinfra-cluster-id,Values={plan.spec.cluster_id}"
    return PowerControl(
        cli=install_packages("awscli"),
        # The CLI signs in as the instance role, through the instance metadata.
        environment=f"""export AWS_DEFAULT_REGION={region}
# The ids of node $1's instances in the states $2 (a comma-separated list).
instances() {{
  aws ec2 describe-instances --filters {of_the_cluster} "Name=tag:{NODE_TAG},Values=$1" "Name=instance-state-name,Values=$2" \\
    --query 'Reservations[].Instances[].InstanceId' --output text
}}""",
        launch=f"""  [ -z "$(instances "$node" pending,running)" ] || return 0
  tag_specifications={shlex.quote(json.dumps(tag_specifications))}
  # One still shutting down holds the node's address.
  leaving=$(instances "$node" shutting-down)
  [ -z "$leaving" ] || aws ec2 wait instance-terminated --instance-ids $leaving
  aws ec2 run-instances --launch-template LaunchTemplateId={template_id},Version={version} \\
    --subnet-id {subnet} --private-ip-address "$address" --user-data "file://$boot" \\
    --tag-specifications "${{tag_specifications//{NODE}/$node}}" --query 'Instances[].InstanceId' --output text""",
        remove="""  running=$(instances "$node" pending,running,stopping,stopped)
  [ -z "$running" ] || aws ec2 terminate-instances --instance-ids $running --output text""",
    )
