"""The parts of a cluster's Pulumi program that are the same on every cloud: the SSH key that
installs software, the tools (Spack on the head node), Redis, the service passwords, the outputs."""

from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_tls as tls
from pulumi_command import remote

from infra.clouds.plan import (
    ADMIN_USER,
    HEAD_ADDRESS,
    REDIS_INSTALL,
    REDIS_REMOVE,
    ClusterPlan,
    slurm_ready_command,
    tool_install_command,
    tool_remove_command,
)


def service_password(plan: ClusterPlan, service: str) -> pulumi.Output[str]:
    """The platform's generated password, as a Pulumi secret: encrypted in the stack's state, never
    on a command line (it goes into the program itself, not through `pulumi config`)."""
    return pulumi.Output.secret(plan.spec.secrets[service].password)


def admin_key(plan: ClusterPlan) -> tls.PrivateKey:
    """The key the platform installs software with; it lives only in the stack's (encrypted) state."""
    return tls.PrivateKey(f"{plan.prefix}-admin-key", algorithm="ED25519")


def install_software(
    plan: ClusterPlan, head_host: pulumi.Input[str], key: tls.PrivateKey, after: Sequence[pulumi.Resource]
) -> dict[str, Any]:
    """Tools as Spack builds and Redis, as commands on the head node: adding one is a stack update that
    adds a resource, and removing one runs its delete command. Both wait until Slurm lists every compute
    node idle. Returns the endpoints of what it started."""
    connection = remote.ConnectionArgs(host=head_host, user=ADMIN_USER, private_key=key.private_key_openssh)
    slurm_ready = remote.Command(
        f"{plan.prefix}-slurm-ready",
        connection=connection,
        create=slurm_ready_command(plan.spec.number_of_nodes),
        # Asked again whenever the number of nodes changes.
        triggers=[plan.spec.number_of_nodes],
        opts=pulumi.ResourceOptions(depends_on=list(after)),
    )
    opts = pulumi.ResourceOptions(depends_on=[slurm_ready])
    for tool in plan.spec.tools:
        remote.Command(
            f"{plan.prefix}-tool-{tool.name}-{tool.version}",
            connection=connection,
            create=tool_install_command(tool),
            delete=tool_remove_command(tool),
            opts=opts,
        )
    endpoints: dict[str, Any] = {}
    redis = plan.service("redis")
    if redis is not None:
        remote.Command(
            f"{plan.prefix}-redis",
            connection=connection,
            create=REDIS_INSTALL,
            delete=REDIS_REMOVE,
            # On stdin: SSH servers pass no environment but LANG and LC_*, and a command line is visible.
            stdin=service_password(plan, "redis").apply(lambda password: password + "\n"),
            opts=opts,
        )
        endpoints["redis"] = {"host": HEAD_ADDRESS, "port": redis.port}
    return endpoints


def export_outputs(
    head_address: pulumi.Input[str],
    node_ids: Sequence[pulumi.Input[str]],
    storage_id: pulumi.Input[str],
    services: dict[str, Any],
) -> None:
    pulumi.export("headNode", head_address)
    pulumi.export("nodeIds", list(node_ids))
    pulumi.export("storageId", storage_id)
    pulumi.export("services", services)
