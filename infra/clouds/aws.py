"""The cluster on AWS: a VPC and subnet, a security group, EC2 instances for the head and compute
nodes, an EBS volume for shared storage (exported over NFS by the head node), and RDS for PostgreSQL."""

import pulumi
import pulumi_aws as aws

from infra.clouds.common import admin_key, export_outputs, install_software, service_password
from infra.clouds.plan import DATABASE_CIDR, HEAD_ADDRESS, NETWORK_CIDR, SUBNET_CIDR, ClusterPlan
from infra.providers.base import SERVICE_USER

# Debian's own account for its official images.
DEBIAN_IMAGES_OWNER = "136693071363"


def build(plan: ClusterPlan) -> None:
    p, tags = plan.prefix, plan.tags
    zones = aws.get_availability_zones(state="available").names

    vpc = aws.ec2.Vpc(f"{p}-vpc", cidr_block=NETWORK_CIDR, enable_dns_hostnames=True, tags=tags)
    gateway = aws.ec2.InternetGateway(f"{p}-gateway", vpc_id=vpc.id, tags=tags)
    subnet = aws.ec2.Subnet(
        f"{p}-subnet",
        vpc_id=vpc.id,
        cidr_block=SUBNET_CIDR,
        availability_zone=zones[0],
        map_public_ip_on_launch=True,
        tags=tags,
    )
    routes = aws.ec2.RouteTable(
        f"{p}-routes",
        vpc_id=vpc.id,
        routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=gateway.id)],
        tags=tags,
    )
    egress = aws.ec2.RouteTableAssociation(f"{p}-routes-subnet", subnet_id=subnet.id, route_table_id=routes.id)
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
    )

    key = admin_key(plan)
    key_pair = aws.ec2.KeyPair(f"{p}-admin", public_key=key.public_key_openssh, tags=tags)
    image = aws.ec2.get_ami(
        most_recent=True,
        owners=[DEBIAN_IMAGES_OWNER],
        filters=[aws.ec2.GetAmiFilterArgs(name="name", values=["debian-12-amd64-*"])],
    ).id

    def instance(name: str, instance_type: str, address: str, script: pulumi.Input[str]) -> aws.ec2.Instance:
        return aws.ec2.Instance(
            f"{p}-{name}",
            instance_type=instance_type,
            ami=image,
            subnet_id=subnet.id,
            private_ip=address,
            vpc_security_group_ids=[firewall.id],
            key_name=key_pair.key_name,
            user_data=script,
            # One-minute CloudWatch metrics (else every five), so metering reads every minute's CPU.
            monitoring=True,
            tags={**tags, "Name": f"{p}-{name}"},
            # Boot scripts install packages: the subnet must route to the internet first.
            opts=pulumi.ResourceOptions(depends_on=[egress]),
        )

    storage = aws.ebs.Volume(
        f"{p}-shared", availability_zone=zones[0], size=plan.spec.storage_gb, type="gp3", encrypted=True, tags=tags
    )
    # On Nitro instances an EBS volume appears as an NVMe device whose id carries the volume's id.
    head_script = storage.id.apply(
        lambda volume: plan.head_script(f"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{volume.replace('-', '')}")
    )
    head = instance("head", plan.head_instance_type("aws"), HEAD_ADDRESS, head_script)
    aws.ec2.VolumeAttachment(
        f"{p}-shared-on-head",
        device_name="/dev/sdf",
        volume_id=storage.id,
        instance_id=head.id,
        # The volume is mounted and exported: stop the head before detaching it, or the detach hangs.
        stop_instance_before_detaching=True,
    )
    nodes = [
        instance(name, plan.instance_type("aws"), address, plan.compute_script(i))
        for i, (name, address) in enumerate(zip(plan.node_names, plan.node_addresses, strict=True))
    ]

    services = install_software(plan, head.public_ip, key, after=[head])
    postgresql = plan.service("postgresql")
    if postgresql is not None:
        database_subnet = aws.ec2.Subnet(
            f"{p}-database-subnet", vpc_id=vpc.id, cidr_block=DATABASE_CIDR, availability_zone=zones[1], tags=tags
        )
        subnets = aws.rds.SubnetGroup(f"{p}-database", subnet_ids=[subnet.id, database_subnet.id], tags=tags)
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
            vpc_security_group_ids=[database_firewall.id],
            publicly_accessible=False,
            skip_final_snapshot=True,
            tags=tags,
        )
        services["postgresql"] = {"host": database.address, "port": postgresql.port}

    export_outputs(head.public_ip, [n.id for n in nodes], storage.id, services)
