"""The cluster on AWS: a VPC and subnet, a security group, EC2 instances for the head and compute
nodes, an EBS volume for shared storage (exported over NFS by the head node), and RDS for PostgreSQL.

Only the head node has a public address, for SSH from the admin range. The cluster's subnet sends the
internet through a NAT gateway (in a small public subnet of its own) and only the admin range straight to
the internet gateway: that is how the head node answers SSH, while every node reaches package mirrors
through the NAT. The head node and compute nodes keep the addresses every cloud gives them."""

import pulumi
import pulumi_aws as aws

from core.providers import SERVICE_USER
from infra.clouds.common import admin_key, export_outputs, install_software, service_password
from infra.clouds.plan import DATABASE_CIDR, HEAD_ADDRESS, NAT_SUBNET_CIDR, NETWORK_CIDR, SUBNET_CIDR, ClusterPlan

# Debian's own account for its official images.
DEBIAN_IMAGES_OWNER = "136693071363"


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
    ).id

    def instance(
        name: str, instance_type: str, address: str, script: pulumi.Input[str], public: bool = False
    ) -> aws.ec2.Instance:
        return aws.ec2.Instance(
            f"{p}-{name}",
            instance_type=instance_type,
            ami=image,
            subnet_id=subnet.id,
            private_ip=address,
            associate_public_ip_address=public,
            vpc_security_group_ids=[firewall.id],
            key_name=key_pair.key_name,
            user_data=script,
            root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(encrypted=True, volume_type="gp3"),
            # Instance metadata (and the instance role's credentials) only with a session token: IMDSv2,
            # which a request forwarded by a process on the node, or from further away, cannot get.
            metadata_options=aws.ec2.InstanceMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1
            ),
            # One-minute CloudWatch metrics (else every five), so metering reads every minute's CPU.
            monitoring=True,
            tags={**tags, "Name": f"{p}-{name}"},
            # Boot scripts install packages: the subnet must route to the internet first.
            opts=opts(depends_on=[egress, nat]),
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
    head_script = storage.id.apply(
        lambda volume: plan.head_script(f"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{volume.replace('-', '')}")
    )
    head = instance("head", plan.head_instance_type("aws"), HEAD_ADDRESS, head_script, public=True)
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
        instance(name, plan.instance_type("aws"), address, plan.compute_script(i))
        for i, (name, address) in enumerate(zip(plan.node_names, plan.node_addresses, strict=True))
    ]

    services = install_software(plan, head.public_ip, key, after=[head])
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
