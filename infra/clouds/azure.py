"""The cluster on Azure: a resource group, a virtual network and subnet with a network security group
and a NAT gateway for outbound traffic, VMs for the head and compute nodes, a managed disk for shared
storage (exported over NFS by the head node), and Azure Database for PostgreSQL flexible server
inside the cluster's network, TLS only."""

import base64

import pulumi
import pulumi_azure_native as azure_native
from pulumi_azure_native import compute, dbforpostgresql, network, privatedns, resources

from core.providers import SERVICE_USER
from infra.clouds.common import admin_key, export_outputs, install_software, service_password
from infra.clouds.plan import ADMIN_USER, DATABASE_CIDR, HEAD_ADDRESS, NETWORK_CIDR, SUBNET_CIDR, ClusterPlan


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

    def vm(name: str, size: str, address: str, script: str, public=None, disks=None) -> compute.VirtualMachine:
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
            resource_group_name=rg,
            location=location,
            hardware_profile=compute.HardwareProfileArgs(vm_size=size),
            network_profile=compute.NetworkProfileArgs(
                network_interfaces=[compute.NetworkInterfaceReferenceArgs(id=nic.id, primary=True)]
            ),
            os_profile=compute.OSProfileArgs(
                computer_name=name,
                admin_username=ADMIN_USER,
                custom_data=base64.b64encode(script.encode()).decode(),
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
            tags=tags,
            opts=opts(),
        )

    head_public = _public_address(f"{p}-head", rg, location, tags, opts())
    head = vm(
        "head",
        plan.head_instance_type("azure"),
        HEAD_ADDRESS,
        plan.head_script("/dev/disk/azure/scsi1/lun0"),
        public=head_public,
        disks=[
            compute.DataDiskArgs(
                lun=0, create_option="Attach", managed_disk=compute.ManagedDiskParametersArgs(id=storage.id)
            )
        ],
    )
    nodes = [
        vm(name, plan.instance_type("azure"), address, plan.compute_script(i))
        for i, (name, address) in enumerate(zip(plan.node_names, plan.node_addresses, strict=True))
    ]
    head_address = head_public.ip_address
    services = install_software(plan, head_address, key, after=[head])
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
