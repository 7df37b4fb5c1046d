"""The cluster on Azure: a resource group, a virtual network and subnet with a network security group
and a NAT gateway for outbound traffic, VMs for the head and compute nodes, a managed disk for shared
storage (exported over NFS by the head node), and Azure Database for PostgreSQL flexible server
inside the cluster's network, TLS only.

An elastic cluster's stack has the floor's compute nodes only: the head node creates the others in the
cluster's resource group and deletes them, as its managed identity, whose one role is scoped to that group.
The floor's VMs have the names the head node's programs give theirs, so that they find one whose node
leaves a lowered floor until the stack deletes it."""

import base64
import shlex

import pulumi
import pulumi_azure_native as azure_native
from pulumi_azure_native import authorization, compute, dbforpostgresql, network, privatedns, resources

from core.providers import SERVICE_USER
from infra.clouds.common import admin_key, export_outputs, install_software, service_password
from infra.clouds.plan import (
    ADMIN_USER,
    DATABASE_CIDR,
    HEAD_ADDRESS,
    NETWORK_CIDR,
    NODE_TAG,
    POWER_STATE,
    SUBNET_CIDR,
    ClusterPlan,
    PowerControl,
    vendor_packages,
)

# Azure's built-in role: virtual machines, their disks and network interfaces, and joining a subnet
# (what creating a node needs), without the right to change the network or its security rules.
VIRTUAL_MACHINE_CONTRIBUTOR = "9980e02c-c2be-4d73-94e8-173b1dc7cf3c"
IMAGE = "Debian:debian-12:12:latest"
# A VM's boot script, which cloud-init runs once: a new one would replace the VM (Azure cannot change it),
# so Pulumi keeps the one it was created with.
BOOT_SCRIPT_INPUTS = ["osProfile.customData"]


def build(plan: ClusterPlan) -> None:
    p, tags, location = plan.prefix, plan.tags, plan.spec.region
    # A provider that names its subscription gets an Azure provider of its own, in that subscription
    # (without one, the stack's default provider, as stacks made before had).
    subscription = plan.config.account("azure")
    explicit = azure_native.Provider(f"{p}-azure", subscription_id=subscription) if subscription else None

    def opts(**options) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(provider=explicit, **options)

    group = resources.ResourceGroup(f"{p}-group", location=location, tags=tags, opts=opts())
    rg = group.name

    vnet = network.VirtualNetwork(
        f"{p}-network",
        resource_group_name=rg,
        location=location,
        address_space=network.AddressSpaceArgs(address_prefixes=[NETWORK_CIDR]),
        tags=tags,
        opts=opts(),
    )
    firewall = network.NetworkSecurityGroup(
        f"{p}-firewall",
        resource_group_name=rg,
        location=location,
        security_rules=[
            _allow("ssh-from-admins", 100, plan.ssh_cidr, "Tcp", "22"),
            _allow("inside-the-cluster", 110, NETWORK_CIDR, "*", "*"),
            network.SecurityRuleArgs(
                name="nothing-else",
                priority=4000,
                direction="Inbound",
                access="Deny",
                protocol="*",
                source_address_prefix="*",
                source_port_range="*",
                destination_address_prefix="*",
                destination_port_range="*",
            ),
        ],
        tags=tags,
        opts=opts(),
    )
    outbound_address = _public_address(f"{p}-outbound", rg, location, tags, opts())
    outbound = network.NatGateway(
        f"{p}-outbound",
        resource_group_name=rg,
        location=location,
        sku=network.NatGatewaySkuArgs(name="Standard"),
        public_ip_addresses=[network.SubResourceArgs(id=outbound_address.id)],
        tags=tags,
        opts=opts(),
    )
    subnet = network.Subnet(
        f"{p}-subnet",
        resource_group_name=rg,
        virtual_network_name=vnet.name,
        address_prefix=SUBNET_CIDR,
        network_security_group=network.NetworkSecurityGroupArgs(id=firewall.id),
        nat_gateway=network.SubResourceArgs(id=outbound.id),
        opts=opts(),
    )

    key = admin_key(plan)
    storage = compute.Disk(
        f"{p}-shared",
        resource_group_name=rg,
        location=location,
        disk_size_gb=plan.spec.storage_gb,
        sku=compute.DiskSkuArgs(name="Premium_LRS"),
        creation_data=compute.CreationDataArgs(create_option="Empty"),
        tags=tags,
        opts=opts(),
    )

    def vm(
        name: str,
        size: str,
        address: str,
        script: pulumi.Input[str],
        public=None,
        disks=None,
        vm_tags: dict[str, str] = tags,
        identity: compute.VirtualMachineIdentityArgs | None = None,
        vm_name: str | None = None,
    ) -> compute.VirtualMachine:
        nic = network.NetworkInterface(
            f"{p}-{name}-nic",
            resource_group_name=rg,
            location=location,
            ip_configurations=[
                network.NetworkInterfaceIPConfigurationArgs(
                    name="primary",
                    subnet=network.SubnetArgs(id=subnet.id),
                    private_ip_allocation_method="Static",
                    private_ip_address=address,
                    public_ip_address=network.PublicIPAddressArgs(id=public.id) if public else None,
                )
            ],
            tags=tags,
            opts=opts(),
        )
        return compute.VirtualMachine(
            f"{p}-{name}",
            vm_name=vm_name,
            resource_group_name=rg,
            location=location,
            hardware_profile=compute.HardwareProfileArgs(vm_size=size),
            network_profile=compute.NetworkProfileArgs(
                network_interfaces=[compute.NetworkInterfaceReferenceArgs(id=nic.id, primary=True)]
            ),
            os_profile=compute.OSProfileArgs(
                computer_name=name,
                admin_username=ADMIN_USER,
                custom_data=pulumi.Output.from_input(script).apply(
                    lambda text: base64.b64encode(text.encode()).decode()
                ),
                linux_configuration=compute.LinuxConfigurationArgs(
                    disable_password_authentication=True,
                    ssh=compute.SshConfigurationArgs(
                        public_keys=[
                            compute.SshPublicKeyArgs(
                                path=f"/home/{ADMIN_USER}/.ssh/authorized_keys", key_data=key.public_key_openssh
                            )
                        ]
                    ),
                ),
            ),
            storage_profile=compute.StorageProfileArgs(
                image_reference=compute.ImageReferenceArgs(
                    publisher="Debian", offer="debian-12", sku="12", version="latest"
                ),
                os_disk=compute.OSDiskArgs(create_option="FromImage"),
                data_disks=disks or [],
            ),
            identity=identity,
            tags=vm_tags,
            opts=opts(ignore_changes=BOOT_SCRIPT_INPUTS),
        )

    shared_disk = "/dev/disk/azure/scsi1/lun0"
    if plan.elastic:
        head_script = pulumi.Output.all(rg, subnet.id, key.public_key_openssh).apply(
            lambda values: plan.head_script(shared_disk, _power_control(plan, *values))
        )
    else:
        head_script = plan.head_script(shared_disk)
    head_public = _public_address(f"{p}-head", rg, location, tags, opts())
    head = vm(
        "head",
        plan.head_instance_type("azure"),
        HEAD_ADDRESS,
        head_script,
        public=head_public,
        disks=[
            compute.DataDiskArgs(
                lun=0, create_option="Attach", managed_disk=compute.ManagedDiskParametersArgs(id=storage.id)
            )
        ],
        # The identity the head node's CLI signs in as: no secret on the machine.
        identity=compute.VirtualMachineIdentityArgs(type=compute.ResourceIdentityType.SYSTEM_ASSIGNED)
        if plan.elastic
        else None,
    )
    if plan.elastic:
        subscription_id = (
            subscription
            or authorization.get_client_config(opts=pulumi.InvokeOptions(provider=explicit)).subscription_id
        )
        authorization.RoleAssignment(
            f"{p}-head-manages-nodes",
            principal_id=head.identity.apply(lambda identity: identity.principal_id),
            principal_type=authorization.PrincipalType.SERVICE_PRINCIPAL,
            role_definition_id=(
                f"/subscriptions/{subscription_id}/providers/Microsoft.Authorization/roleDefinitions/"
                f"{VIRTUAL_MACHINE_CONTRIBUTOR}"
            ),
            # The cluster's own resource group, never the subscription.
            scope=group.id,
            description=f"hpcinfra: the head node of {plan.spec.name} creates and deletes its compute nodes",
            opts=opts(),
        )
    nodes = [
        vm(
            name,
            plan.instance_type("azure"),
            plan.node_addresses[i],
            plan.compute_script(i),
            vm_tags=plan.instance_tags(name),
            vm_name=plan.floor_instance_name(name),
        )
        for i, name in enumerate(plan.floor_names)
    ]
    head_address = head_public.ip_address
    services = install_software(plan, head, head_address, key)
    postgresql = plan.service("postgresql")
    if postgresql is not None:
        database_subnet = network.Subnet(
            f"{p}-database-subnet",
            resource_group_name=rg,
            virtual_network_name=vnet.name,
            address_prefix=DATABASE_CIDR,
            delegations=[
                network.DelegationArgs(name="postgresql", service_name="Microsoft.DBforPostgreSQL/flexibleServers")
            ],
            opts=opts(),
        )
        zone = privatedns.PrivateZone(
            f"{p}-database-zone",
            resource_group_name=rg,
            location="Global",
            private_zone_name=f"{p}.private.postgres.database.azure.com",
            tags=tags,
            opts=opts(),
        )
        zone_link = privatedns.VirtualNetworkLink(
            f"{p}-database-zone-link",
            resource_group_name=rg,
            private_zone_name=zone.name,
            location="Global",
            virtual_network=privatedns.SubResourceArgs(id=vnet.id),
            registration_enabled=False,
            tags=tags,
            opts=opts(),
        )
        server = dbforpostgresql.Server(
            f"{p}-postgresql",
            resource_group_name=rg,
            location=location,
            version=postgresql.version,
            sku=dbforpostgresql.SkuArgs(name="Standard_B1ms", tier="Burstable"),
            storage=dbforpostgresql.StorageArgs(storage_size_gb=32),
            administrator_login=SERVICE_USER,
            administrator_login_password=service_password(plan, "postgresql"),
            network=dbforpostgresql.NetworkArgs(
                delegated_subnet_resource_id=database_subnet.id,
                private_dns_zone_arm_resource_id=zone.id,
                public_network_access="Disabled",
            ),
            tags=tags,
            opts=opts(depends_on=[zone_link]),  # the server resolves through the linked zone
        )
        # On by default: said here so that it stays on.
        tls_only = dbforpostgresql.Configuration(
            f"{p}-postgresql-tls",
            resource_group_name=rg,
            server_name=server.name,
            configuration_name="require_secure_transport",
            value="on",
            source="user-override",
            opts=opts(),
        )
        database_name = postgresql.config.get("databaseName", "postgres")
        if database_name != "postgres":  # the server makes that one itself
            dbforpostgresql.Database(
                f"{p}-postgresql-database",
                resource_group_name=rg,
                server_name=server.name,
                database_name=database_name,
                # The server takes one change at a time.
                opts=opts(depends_on=[tls_only]),
            )
        services["postgresql"] = {"host": server.fully_qualified_domain_name, "port": postgresql.port}

    export_outputs(head_address, [n.vm_id for n in nodes], storage.id, services)


def _power_control(plan: ClusterPlan, group: str, subnet: str, ssh_key: str) -> PowerControl:
    """The resume and suspend programs' az commands: create the node's VM in the cluster's resource group
    and subnet, with its address and tags and no public address nor security group of its own (the
    subnet's applies), and delete it with its disk and network interface. Both return at once
    (`--no-wait`): slurmctld waits for the node itself."""
    where = f'--resource-group {group} --name "$name"'
    tags = " ".join(shlex.quote(f"{key}={value}") for key, value in plan.tags.items())
    return PowerControl(
        cli=vendor_packages(
            "azure-cli",
            "microsoft",
            "https://packages.microsoft.com/keys/microsoft.asc",
            "https://packages.microsoft.com/repos/azure-cli/ bookworm main",
        ),
        environment=f"""export AZURE_CONFIG_DIR={POWER_STATE}/azure
# As the head node's managed identity.
az login --identity --output none
# The provisioning state of the VM $name, empty if there is none.
state() {{
  az vm show {where} --query provisioningState --output tsv 2> /dev/null || true
}}""",
        launch=f"""  case "$(state)" in
    "") ;;
    # Still holding the node's name and address.
    Deleting) az vm wait {where} --deleted ;;
    *) return 0 ;;
  esac
  az vm create {where} --location {plan.spec.region} --image {IMAGE} \\
    --size {plan.instance_type("azure")} --subnet {subnet} --private-ip-address "$address" \\
    --public-ip-address "" --nsg "" --nic-delete-option Delete --os-disk-delete-option Delete \\
    --admin-username {ADMIN_USER} --ssh-key-values {shlex.quote(ssh_key)} --custom-data "$boot" \\
    --tags {tags} "{NODE_TAG}=$node" --no-wait --output none""",
        remove=f"""  case "$(state)" in
    # Gone, or going.
    "" | Deleting) return 0 ;;
  esac
  az vm delete {where} --yes --no-wait --output none""",
    )


def _allow(name: str, priority: int, source: str, protocol: str, port: str) -> network.SecurityRuleArgs:
    return network.SecurityRuleArgs(
        name=name,
        priority=priority,
        direction="Inbound",
        access="Allow",
        protocol=protocol,
        source_address_prefix=source,
        source_port_range="*",
        destination_address_prefix="*",
        destination_port_range=port,
    )


def _public_address(
    name: str, rg: pulumi.Input[str], location: str, tags: dict[str, str], opts: pulumi.ResourceOptions
) -> network.PublicIPAddress:
    return network.PublicIPAddress(
        f"{name}-address",
        resource_group_name=rg,
        location=location,
        public_ip_address_name=f"{name}-address",
        sku=network.PublicIPAddressSkuArgs(name="Standard"),
        public_ip_allocation_method="Static",
        tags=tags,
        opts=opts,
    )
