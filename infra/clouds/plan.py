"""What every cloud's program builds, whatever the cloud: the addresses, the tags, and the scripts
that turn plain Debian machines into a Slurm cluster with shared storage, Spack and modules.

Every node gets a fixed private address, so the Slurm configuration is written before any machine
exists and no node waits on another to learn where it is.
"""

import re
import shlex
from dataclasses import dataclass
from ipaddress import ip_network

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.catalog import NODE_TYPES, TOOLS
from core.providers import (
    ACCOUNT_KEYS,
    AWS_ACCOUNT,
    AZURE_SUBSCRIPTION,
    ClusterSpec,
    ServiceSpec,
    ToolSpec,
    describe_validation_error,
)

NETWORK_CIDR = "10.20.0.0/16"
SUBNET_CIDR = "10.20.1.0/24"
# AWS: the public subnet of the NAT gateway the cluster's subnet goes out through.
NAT_SUBNET_CIDR = "10.20.0.0/28"
# A second range, for the managed database (some clouds want it in a subnet of its own).
DATABASE_CIDR = "10.20.2.0/24"
HEAD_ADDRESS = "10.20.1.10"
FIRST_NODE_HOST = 20
SLURM_PORTS = (6817, 6818)  # slurmctld, slurmd (reachable from inside the network only, like all but SSH)
SHARED = "/shared"
# Written by a node's boot script when it has finished; software is installed only after it.
READY_MARKER = "/var/lib/hpcinfra-ready"
_WAIT_FOR_BOOT = f"until [ -f {READY_MARKER} ]; do sleep 10; done"
# A Spack release, so that every cluster builds the same recipes.
SPACK_RELEASE = "v0.22.2"
ADMIN_USER = "hpcadmin"
HEAD_NODE_TYPE = "small"

# The widest range `sshCidr` may be: a /8 is already 16 million addresses.
MAX_SSH_PREFIX = 8

# Which cloud each cloud-specific config key is for.
CLOUD_OF_KEY = {"accountId": "aws", "project": "gcp", "zone": "gcp", "subscriptionId": "azure"}


class CloudConfig(BaseModel):
    """The config of an `aws`, `gcp` or `azure` provider, as registered; anything else in it is refused.
    Cloud credentials are not here: they come from each cloud SDK's own environment on the worker."""

    model_config = ConfigDict(extra="forbid")

    # Named as the JSON keys people write in the config.
    # Where SSH to the head node may come from: the operators' range, and the workers' (they install tools).
    sshCidr: str
    project: str | None = None  # GCP: the project (else the SDK's default)
    zone: str | None = None  # GCP: the zone in the region (else <region>-a)
    # AWS: the account; a run whose credentials are another account's fails (else whichever they are).
    accountId: str | None = Field(default=None, pattern=AWS_ACCOUNT)
    subscriptionId: str | None = Field(default=None, pattern=AZURE_SUBSCRIPTION)  # Azure (else the SDK's default)

    @field_validator("sshCidr")
    @classmethod
    def _a_narrow_range(cls, value: str) -> str:
        try:
            network = ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not an address range such as 198.51.100.0/24") from None
        if network.version != 4:
            raise ValueError("must be an IPv4 range: the clusters' networks and head nodes have IPv4 addresses only")
        if network.prefixlen < MAX_SSH_PREFIX:
            raise ValueError(
                f"{network} is wider than a /{MAX_SSH_PREFIX}: name the range SSH comes from, not a part of the internet"
            )
        if network.subnet_of(ip_network(NETWORK_CIDR)):
            raise ValueError(
                f"{network} is inside the cluster's own network ({NETWORK_CIDR}); name where SSH comes from"
            )
        return str(network)

    def account(self, cloud: str) -> str | None:
        """The account, project or subscription this config names on `cloud`, if it names one."""
        return getattr(self, ACCOUNT_KEYS[cloud])


@dataclass(frozen=True)
class ClusterPlan:
    spec: ClusterSpec
    config: CloudConfig

    @classmethod
    def of(cls, spec: ClusterSpec) -> "ClusterPlan":
        try:
            return cls(spec, CloudConfig.model_validate(spec.provider_config))
        except ValidationError as e:
            raise ValueError(f"the provider's config cannot be used: {describe_validation_error(e)}") from None

    @property
    def ssh_cidr(self) -> str:
        return self.config.sshCidr

    @property
    def prefix(self) -> str:
        """A short, cloud-safe name stem for every resource of the cluster."""
        return f"hpc-{self.spec.name}"[:40].rstrip("-")

    @property
    def tags(self) -> dict[str, str]:
        return {
            "hpcinfra-tenant": self.spec.tenant,
            "hpcinfra-cluster-id": self.spec.cluster_id,
            "hpcinfra-cluster-name": self.spec.name,
        }

    @property
    def labels(self) -> dict[str, str]:
        """The tags as GCP labels allow them: lower-case letters, digits, `_` and `-`, at most 63."""
        return {key: re.sub(r"[^a-z0-9_-]", "-", value.lower())[:63] for key, value in self.tags.items()}

    @property
    def node_names(self) -> list[str]:
        return self.spec.node_names

    @property
    def node_addresses(self) -> list[str]:
        subnet = ip_network(SUBNET_CIDR)
        return [str(subnet[FIRST_NODE_HOST + i]) for i in range(self.spec.number_of_nodes)]

    def instance_type(self, cloud: str) -> str:
        return self.spec.node_type.instance_types[cloud]

    def head_instance_type(self, cloud: str) -> str:
        return NODE_TYPES[HEAD_NODE_TYPE].instance_types[cloud]

    def slurm_conf(self) -> str:
        node = self.spec.node_type
        real_memory = int(node.memory_gb * 1024 * 0.9)  # leave room for the system
        nodes = "\n".join(
            f"NodeName={name} NodeAddr={address} CPUs={node.vcpus} RealMemory={real_memory} State=UNKNOWN"
            for name, address in zip(self.node_names, self.node_addresses, strict=True)
        )
        return f"""ClusterName={self.spec.name}
SlurmctldHost=head({HEAD_ADDRESS})
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
SelectType=select/cons_tres
SchedulerType=sched/backfill
SlurmctldPort={SLURM_PORTS[0]}
SlurmdPort={SLURM_PORTS[1]}
StateSaveLocation=/var/spool/slurmctld
ReturnToService=2
{nodes}
PartitionName=compute Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""

    def service(self, name: str) -> ServiceSpec | None:
        """The spec's service of that name, if the cluster should have it."""
        return next((s for s in self.spec.services if s.name == name), None)

    def head_script(self, shared_disk: str) -> str:
        """Boot script of the head node: the shared disk (`shared_disk`, a stable device path) exported
        over NFS, the munge key made once on it, slurmctld, and Spack with Lmod on the shared storage."""
        return f"""#!/bin/bash
set -euo pipefail
hostnamectl set-hostname head
{_install_packages("slurm-wlm munge nfs-kernel-server lmod git python3 build-essential")}
until [ -e {shared_disk} ]; do sleep 5; done
blkid {shared_disk} || mkfs.ext4 -q {shared_disk}
mkdir -p {SHARED}
grep -q " {SHARED} " /etc/fstab || echo "{shared_disk} {SHARED} ext4 defaults,nofail 0 2" >> /etc/fstab
mount -a
echo "{SHARED} {SUBNET_CIDR}(rw,sync,no_root_squash,no_subtree_check)" > /etc/exports
exportfs -ra
systemctl enable --now nfs-server
install -d -m 700 {SHARED}/.slurm
if [ ! -f {SHARED}/.slurm/munge.key ]; then
  # Written aside and moved into place: a node never copies half a key.
  dd if=/dev/urandom bs=1024 count=1 of={SHARED}/.slurm/munge.key.new status=none
  mv {SHARED}/.slurm/munge.key.new {SHARED}/.slurm/munge.key
fi
{self._slurm_setup("slurmctld")}
install -d -o slurm -g slurm /var/spool/slurmctld
systemctl restart slurmctld
[ -d {SHARED}/spack ] || git clone --depth=1 --branch {SPACK_RELEASE} https://github.com/spack/spack {SHARED}/spack
mkdir -p {SHARED}/spack/etc/spack
printf 'modules:\n  default:\n    enable: [lmod]\n' > {SHARED}/spack/etc/spack/modules.yaml
touch {READY_MARKER}
"""

    def compute_script(self, index: int) -> str:
        """Boot script of compute node `index`: mount the shared storage, take the munge key, run slurmd."""
        return f"""#!/bin/bash
set -euo pipefail
hostnamectl set-hostname {self.node_names[index]}
{_install_packages("slurm-wlm munge nfs-common lmod")}
mkdir -p {SHARED}
grep -q " {SHARED} " /etc/fstab || echo "{HEAD_ADDRESS}:{SHARED} {SHARED} nfs defaults,_netdev 0 0" >> /etc/fstab
until mount -a && [ -f {SHARED}/.slurm/munge.key ]; do sleep 10; done
{self._slurm_setup("slurmd")}
systemctl restart slurmd
touch {READY_MARKER}
"""

    def _slurm_setup(self, daemon: str) -> str:
        """The lines both kinds of node share: the munge key, slurm.conf, and modules in every shell."""
        return f"""install -m 400 -o munge -g munge {SHARED}/.slurm/munge.key /etc/munge/munge.key
cat > /etc/slurm/slurm.conf <<'SLURM'
{self.slurm_conf()}SLURM
systemctl enable munge {daemon}
systemctl restart munge
echo ". {SHARED}/spack/share/spack/setup-env.sh; module use {SHARED}/spack/share/spack/lmod/linux-*/Core" > /etc/profile.d/spack.sh"""


def _install_packages(packages: str) -> str:
    # apt may be busy at boot (unattended upgrades) or a mirror briefly unreachable: try a few times.
    return f"""export DEBIAN_FRONTEND=noninteractive
for attempt in 1 2 3 4 5; do
  apt-get update && apt-get install -y {packages} && break
  sleep 30
done"""


def slurm_ready_command(nodes: int) -> str:
    """Succeeds once `sinfo` on the head node lists every compute node idle (up to 15 minutes), so a
    stack update that brings a cluster up succeeds only with a working Slurm."""
    return (
        f"{_WAIT_FOR_BOOT}; for attempt in $(seq 90); do"
        f' [ "$(sinfo -h -N -t idle -o %N | sort -u | wc -l)" -ge {nodes} ] && exit 0; sleep 10; done;'
        " sinfo -N; exit 1"
    )


def tool_install_command(tool: ToolSpec) -> str:
    """Build a tool with Spack on the shared storage and expose it as an environment module
    (`module load <tool>/<version>` on every node), once cloud-init has finished."""
    package = shlex.quote(f"{TOOLS[tool.name].spack_package}@{tool.version}")
    return _as_root(
        f"{_WAIT_FOR_BOOT}; . {SHARED}/spack/share/spack/setup-env.sh"
        f" && spack install --fail-fast {package} && spack module lmod refresh -y {package}"
    )


def tool_remove_command(tool: ToolSpec) -> str:
    package = shlex.quote(f"{TOOLS[tool.name].spack_package}@{tool.version}")
    return _as_root(f". {SHARED}/spack/share/spack/setup-env.sh && spack uninstall -y {package}")


def _as_root(script: str) -> str:
    # --preserve-env keeps nothing secret: secrets come in on the command's stdin.
    return f"sudo --preserve-env bash -c {shlex.quote(script)}"


# Redis runs on the head node; its password comes in through the command's (secret) environment.
REDIS_INSTALL = _as_root(
    f"{_WAIT_FOR_BOOT}; read -r REDIS_PASSWORD; export DEBIAN_FRONTEND=noninteractive"
    " && apt-get install -y redis-server"
    ' && printf "bind 0.0.0.0\\nprotected-mode yes\\nrequirepass %s\\n" "$REDIS_PASSWORD" > /etc/redis/hpcinfra.conf'
    " && chmod 640 /etc/redis/hpcinfra.conf && chown redis:redis /etc/redis/hpcinfra.conf"
    " && (grep -q hpcinfra.conf /etc/redis/redis.conf || echo 'include /etc/redis/hpcinfra.conf' >> /etc/redis/redis.conf)"
    " && systemctl restart redis-server"
)
REDIS_REMOVE = _as_root("systemctl disable --now redis-server; apt-get remove -y redis-server")
