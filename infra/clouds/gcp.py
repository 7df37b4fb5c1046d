"""The cluster on GCP: a VPC network and subnetwork, firewall rules, a Cloud Router with Cloud NAT for
outbound traffic, Compute Engine instances for the head and compute nodes (only the head node has an
external address, for SSH), a persistent disk for shared storage (exported over NFS by the head node),
and Cloud SQL for PostgreSQL on a private IP in the cluster's network, TLS only."""

import pulumi
import pulumi_gcp as gcp

from core.providers import SERVICE_USER
from infra.clouds.common import admin_key, export_outputs, install_software, service_password
from infra.clouds.plan import ADMIN_USER, HEAD_ADDRESS, SUBNET_CIDR, ClusterPlan

IMAGE = "debian-cloud/debian-12"


def build(plan: ClusterPlan) -> None:
    p, labels, region = plan.prefix, plan.labels, plan.spec.region
    zone = plan.config.zone or f"{region}-a"

    network = gcp.compute.Network(f"{p}-network", auto_create_subnetworks=False)
    subnet = gcp.compute.Subnetwork(f"{p}-subnet", network=network.id, region=region, ip_cidr_range=SUBNET_CIDR)
    gcp.compute.Firewall(
        f"{p}-ssh",
        network=network.id,
        description="SSH from the admin range only",
        allows=[gcp.compute.FirewallAllowArgs(protocol="tcp", ports=["22"])],
        source_ranges=[plan.ssh_cidr],
    )
    gcp.compute.Firewall(
        f"{p}-internal",
        network=network.id,
        description="Slurm, NFS and everything else only inside the cluster's network",
        allows=[gcp.compute.FirewallAllowArgs(protocol=protocol) for protocol in ("tcp", "udp", "icmp")],
        source_ranges=[SUBNET_CIDR],
    )
    # Outbound traffic of the nodes without an external address (the compute nodes): package mirrors.
    router = gcp.compute.Router(f"{p}-router", network=network.id, region=region)
    gcp.compute.RouterNat(
        f"{p}-nat",
        router=router.name,
        region=region,
        nat_ip_allocate_option="AUTO_ONLY",
        source_subnetwork_ip_ranges_to_nat="ALL_SUBNETWORKS_ALL_IP_RANGES",
    )

    key = admin_key(plan)
    storage = gcp.compute.Disk(f"{p}-shared", zone=zone, size=plan.spec.storage_gb, type="pd-balanced", labels=labels)

    def instance(
        name: str, machine_type: str, address: str, script: str, disks=None, public: bool = False
    ) -> gcp.compute.Instance:
        return gcp.compute.Instance(
            f"{p}-{name}",
            zone=zone,
            machine_type=machine_type,
            boot_disk=gcp.compute.InstanceBootDiskArgs(
                initialize_params=gcp.compute.InstanceBootDiskInitializeParamsArgs(image=IMAGE)
            ),
            attached_disks=disks or [],
            network_interfaces=[
                gcp.compute.InstanceNetworkInterfaceArgs(
                    subnetwork=subnet.id,
                    network_ip=address,
                    # The head node's external address is for SSH (what the firewall rules allow); the
                    # compute nodes have none, and go out through the NAT.
                    access_configs=[gcp.compute.InstanceNetworkInterfaceAccessConfigArgs()] if public else [],
                )
            ],
            metadata={
                "ssh-keys": key.public_key_openssh.apply(lambda k: f"{ADMIN_USER}:{k}"),
                "startup-script": script,
            },
            labels=labels,
        )

    head = instance(
        "head",
        plan.head_instance_type("gcp"),
        HEAD_ADDRESS,
        plan.head_script("/dev/disk/by-id/google-shared"),
        disks=[gcp.compute.InstanceAttachedDiskArgs(source=storage.id, device_name="shared")],
        public=True,
    )
    nodes = [
        instance(name, plan.instance_type("gcp"), address, plan.compute_script(i))
        for i, (name, address) in enumerate(zip(plan.node_names, plan.node_addresses, strict=True))
    ]
    head_address = head.network_interfaces.apply(lambda nics: nics[0].access_configs[0].nat_ip)

    services = install_software(plan, head_address, key, after=[head])
    postgresql = plan.service("postgresql")
    if postgresql is not None:
        # Cloud SQL joins the network through a peering range of its own.
        peering_range = gcp.compute.GlobalAddress(
            f"{p}-database-range", network=network.id, purpose="VPC_PEERING", address_type="INTERNAL", prefix_length=20
        )
        peering = gcp.servicenetworking.Connection(
            f"{p}-database-peering",
            network=network.id,
            service="servicenetworking.googleapis.com",
            reserved_peering_ranges=[peering_range.name],
            # Deleting the peering fails while Google still holds it for the deleted database.
            deletion_policy="ABANDON",
        )
        database = gcp.sql.DatabaseInstance(
            f"{p}-postgresql",
            region=region,
            database_version=f"POSTGRES_{postgresql.version}",
            deletion_protection=False,
            settings=gcp.sql.DatabaseInstanceSettingsArgs(
                tier="db-custom-1-3840",
                user_labels=labels,
                ip_configuration=gcp.sql.DatabaseInstanceSettingsIpConfigurationArgs(
                    ipv4_enabled=False, private_network=network.id, ssl_mode="ENCRYPTED_ONLY"
                ),
            ),
            opts=pulumi.ResourceOptions(depends_on=[peering]),
        )
        gcp.sql.User(
            f"{p}-postgresql-user",
            instance=database.name,
            name=SERVICE_USER,
            password=service_password(plan, "postgresql"),
            deletion_policy="ABANDON",  # a user owning objects cannot be dropped; the instance goes anyway
        )
        database_name = postgresql.config.get("databaseName", "postgres")
        if database_name != "postgres":  # Cloud SQL makes that one itself
            gcp.sql.Database(f"{p}-postgresql-database", instance=database.name, name=database_name)
        services["postgresql"] = {"host": database.private_ip_address, "port": postgresql.port}

    export_outputs(head_address, [n.instance_id for n in nodes], storage.id, services)
