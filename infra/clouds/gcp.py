"""The cluster on GCP: a VPC network and subnetwork, firewall rules, a Cloud Router with Cloud NAT for
outbound traffic, Compute Engine instances for the head and compute nodes (only the head node has an
external address, for SSH), a persistent disk for shared storage (exported over NFS by the head node),
and Cloud SQL for PostgreSQL on a private IP in the cluster's network, TLS only.

An elastic cluster's stack has the floor's compute nodes only, and an instance template for the others:
the head node creates them from it and deletes them, as its service account, whose role is granted
under a condition that names this cluster's instances. The floor's instances have the names the head
node's programs give theirs, so that they find one whose node leaves a lowered floor until the stack
deletes it."""

import pulumi
import pulumi_gcp as gcp

from core.providers import SERVICE_USER
from infra.clouds.common import admin_key, export_outputs, install_software, service_password
from infra.clouds.plan import (
    ADMIN_USER,
    HEAD_ADDRESS,
    NODE_TAG,
    POWER_STATE,
    SUBNET_CIDR,
    ClusterPlan,
    PowerControl,
    as_labels,
    vendor_packages,
)

IMAGE = "debian-cloud/debian-12"
# An instance's boot script: Pulumi keeps the one it was created with, as on the other clouds (where a new
# one stops or replaces the instance). Here a new one would be set in place and run at the next boot only.
BOOT_SCRIPT_INPUTS = ['metadata["startup-script"]']
# What the head node needs to create and delete a compute node from the template (no more).
NODE_LAUNCHER_PERMISSIONS = [
    "compute.instances.create",
    "compute.instances.delete",
    "compute.instances.get",
    "compute.instances.setMetadata",
    "compute.instances.setLabels",
    "compute.disks.create",
    "compute.disks.delete",
    "compute.subnetworks.use",
    "compute.instanceTemplates.useReadOnly",
]


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
    ssh_keys = key.public_key_openssh.apply(lambda k: f"{ADMIN_USER}:{k}")
    storage = gcp.compute.Disk(f"{p}-shared", zone=zone, size=plan.spec.storage_gb, type="pd-balanced", labels=labels)

    def instance(
        name: str,
        machine_type: str,
        address: str,
        script: pulumi.Input[str],
        disks=None,
        public: bool = False,
        instance_labels: dict[str, str] = labels,
        account: gcp.serviceaccount.Account | None = None,
        instance_name: str | None = None,
    ) -> gcp.compute.Instance:
        return gcp.compute.Instance(
            f"{p}-{name}",
            name=instance_name,
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
            metadata={"ssh-keys": ssh_keys, "startup-script": script},
            labels=instance_labels,
            service_account=gcp.compute.InstanceServiceAccountArgs(
                # Its roles say what it may do; the scope leaves that to them.
                email=account.email,
                scopes=["https://www.googleapis.com/auth/cloud-platform"],
            )
            if account
            else None,
            opts=pulumi.ResourceOptions(ignore_changes=BOOT_SCRIPT_INPUTS),
        )

    shared_disk = "/dev/disk/by-id/google-shared"
    if plan.elastic:
        project = plan.config.project or gcp.organizations.get_client_config().project
        template = gcp.compute.InstanceTemplate(
            f"{p}-node-template",
            description="hpcinfra: the compute nodes the head node creates",
            machine_type=plan.instance_type("gcp"),
            disks=[gcp.compute.InstanceTemplateDiskArgs(source_image=IMAGE, boot=True, auto_delete=True)],
            # No access config: no external address; the nodes go out through the NAT.
            network_interfaces=[gcp.compute.InstanceTemplateNetworkInterfaceArgs(subnetwork=subnet.id)],
            metadata={"ssh-keys": ssh_keys},
            labels=labels,
        )
        account = _node_launcher(plan, project, zone, subnet, template)
        head_script = template.name.apply(
            lambda name: plan.head_script(shared_disk, _power_control(plan, project, zone, name))
        )
    else:
        account = None
        head_script = plan.head_script(shared_disk)
    head = instance(
        "head",
        plan.head_instance_type("gcp"),
        HEAD_ADDRESS,
        head_script,
        disks=[gcp.compute.InstanceAttachedDiskArgs(source=storage.id, device_name="shared")],
        public=True,
        account=account,
    )
    nodes = [
        instance(
            name,
            plan.instance_type("gcp"),
            plan.node_addresses[i],
            plan.compute_script(i),
            instance_labels=as_labels(plan.instance_tags(name)),
            instance_name=plan.floor_instance_name(name),
        )
        for i, name in enumerate(plan.floor_names)
    ]
    head_address = head.network_interfaces.apply(lambda nics: nics[0].access_configs[0].nat_ip)

    services = install_software(plan, head, head_address, key)
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


def _node_launcher(
    plan: ClusterPlan,
    project: str,
    zone: str,
    subnet: gcp.compute.Subnetwork,
    template: gcp.compute.InstanceTemplate,
) -> gcp.serviceaccount.Account:
    """The head node's service account, with a role that creates and deletes instances from the template
    under a condition: only those named as this cluster's compute nodes, and their boot disks (named as
    their instance), in the cluster's zone."""
    p, cluster = plan.prefix, plan.spec.cluster_id.replace("-", "")
    account = gcp.serviceaccount.Account(
        f"{p}-head-account",
        project=project,
        # At most 30 characters, unique to the cluster.
        account_id=f"hpc-head-{cluster[:21]}",
        display_name=f"hpcinfra: head node of {plan.spec.name}",
    )
    role = gcp.projects.IAMCustomRole(
        f"{p}-node-launcher",
        project=project,
        # A deleted custom role keeps its id for weeks: one per cluster id, never per name.
        role_id=f"hpcinfra_nodes_{cluster}",
        title=f"hpcinfra: {plan.spec.name}'s compute nodes",
        description="Create and delete the cluster's compute nodes from its instance template",
        permissions=NODE_LAUNCHER_PERMISSIONS,
    )
    zonal = f"projects/{project}/zones/{zone}"
    nodes = plan.instance_name("node-")
    condition = pulumi.Output.all(subnet.name, template.name).apply(
        lambda names: " || ".join(
            [
                f'resource.name.startsWith("{zonal}/instances/{nodes}")',
                f'resource.name.startsWith("{zonal}/disks/{nodes}")',
                f'resource.name == "projects/{project}/regions/{plan.spec.region}/subnetworks/{names[0]}"',
                f'resource.name == "projects/{project}/global/instanceTemplates/{names[1]}"',
            ]
        )
    )
    gcp.projects.IAMMember(
        f"{p}-head-launches-nodes",
        project=project,
        role=role.name,
        member=account.member,
        condition=gcp.projects.IAMMemberConditionArgs(
            title=f"{p} compute nodes",
            description="Only this cluster's compute nodes, their disks, its subnetwork and its template",
            expression=condition,
        ),
    )
    return account


def _power_control(plan: ClusterPlan, project: str, zone: str, template: str) -> PowerControl:
    """The resume and suspend programs' gcloud commands: create the node's instance from the template
    with its address and labels, and delete it. Both return at once (`--async`): slurmctld waits for
    the node itself, and the permission to wait on an operation cannot be limited to this cluster."""
    labels = ",".join(f"{key}={value}" for key, value in plan.labels.items())
    return PowerControl(
        # Debian's images on Compute Engine come with the CLI; another image gets Google's packages.
        cli=f"""command -v gcloud > /dev/null || {{
{vendor_packages("google-cloud-cli", "cloud.google", "https://packages.cloud.google.com/apt/doc/apt-key.gpg", "https://packages.cloud.google.com/apt cloud-sdk main")}
}}""",
        # The CLI signs in as the instance's service account, through the metadata server.
        environment=f"""export CLOUDSDK_CONFIG={POWER_STATE}/gcloud CLOUDSDK_CORE_DISABLE_PROMPTS=1
export CLOUDSDK_CORE_PROJECT={project} CLOUDSDK_COMPUTE_ZONE={zone}
# The status of the instance $1, empty if there is none.
status() {{
  gcloud compute instances describe "$1" --format='value(status)' 2> /dev/null || true
}}""",
        launch=f"""  for attempt in $(seq 60); do
    case "$(status "$name")" in
      "") break ;;
      PROVISIONING | STAGING | RUNNING) return 0 ;;
      # Stopped, it holds the node's name and address (asked again while going, deleting fails: no matter).
      TERMINATED | SUSPENDED) gcloud compute instances delete "$name" --quiet --async || true ;;
    esac
    # STOPPING while it is deleted.
    sleep 10
  done
  gcloud compute instances create "$name" --async --source-instance-template={template} \\
    --private-network-ip="$address" --metadata-from-file=startup-script="$boot" \\
    --labels={labels},{NODE_TAG}="$node\"""",
        remove="""  case "$(status "$name")" in
    # Gone, or going.
    "" | STOPPING) return 0 ;;
  esac
  gcloud compute instances delete "$name" --quiet --async""",
    )
