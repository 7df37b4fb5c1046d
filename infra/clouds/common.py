"""The parts of a cluster's Pulumi program that are the same on every cloud: the SSH key that
installs software, slurm.conf and the drain of a resize (commands on the head node), the tools (Spack on
the head node), Redis, the service passwords, the outputs."""

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
    drain_command,
    slurm_conf_command,
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
    plan: ClusterPlan,
    head: pulumi.CustomResource,
    head_host: pulumi.Input[str],
    key: tls.PrivateKey,
    after: Sequence[pulumi.Resource] = (),
) -> dict[str, Any]:
    """Slurm's configuration (`configure_slurm`), then tools as Spack builds and Redis, as commands on the
    head node: adding one is a stack update that adds a resource, and removing one runs its delete command.
    Both wait until Slurm lists every compute node that is always up. Returns the endpoints of what it started.
    `after`: what slurm.conf must wait for besides the head node."""
    connection = remote.ConnectionArgs(host=head_host, user=ADMIN_USER, private_key=key.private_key_openssh)
    slurm_ready = configure_slurm(plan, head, connection, after)
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


def configure_slurm(
    plan: ClusterPlan, head: pulumi.CustomResource, connection: remote.ConnectionArgs, after: Sequence[pulumi.Resource]
) -> remote.Command:
    """slurm.conf given to the head node (`<prefix>-slurm-conf`), the nodes a resize is about to remove
    drained (`<prefix>-drain`, only then; `busyNodes` are those still running jobs), and the check that
    Slurm is up, which is returned. A resize changes these commands only: no machine's boot script.

    Pulumi deletes what the program no longer has at the end of an update, after every create and update:
    the instances of the floor's nodes that a resize removes (or that leave a lowered floor) are deleted
    only once slurm.conf without them (or with them powered down) is in place."""
    # A new slurm.conf, or a new head node (a replaced one has none), runs both commands again.
    delivered = [head.id, plan.slurm_conf_digest]
    slurm_conf = remote.Command(
        f"{plan.prefix}-slurm-conf",
        connection=connection,
        create=slurm_conf_command(plan),
        stdin=plan.slurm_conf(),
        triggers=delivered,
        opts=pulumi.ResourceOptions(depends_on=[head, *after]),
    )
    drain = drain_command(plan)
    if drain is None:
        pulumi.export("busyNodes", [])
    else:
        draining = remote.Command(
            f"{plan.prefix}-drain",
            connection=connection,
            create=drain,
            # Each call asks again, with the same nodes too.
            triggers=[plan.drain_request],
            opts=pulumi.ResourceOptions(depends_on=[slurm_conf]),
        )
        pulumi.export("busyNodes", draining.stdout.apply(lambda out: sorted((out or "").split())))
    return remote.Command(
        f"{plan.prefix}-slurm-ready",
        connection=connection,
        create=slurm_ready_command(plan),
        triggers=delivered,
        opts=pulumi.ResourceOptions(depends_on=[slurm_conf]),
    )


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
