"""What every cloud's program builds, whatever the cloud: the addresses, the tags, and the scripts
that turn plain Debian machines into a Slurm cluster with shared storage, Spack and modules.

Every node gets a fixed private address, so the Slurm configuration is written before any machine
exists and no node waits on another to learn where it is.

No boot script depends on the cluster's size, so that a resize changes no machine's boot script (on AWS
a change stops and starts the instance, and cloud-init would not run it again anyway). Nor does Pulumi
update one once its machine exists (each cloud's `BOOT_SCRIPT_INPUTS`): a cluster made while boot scripts
were otherwise, or a script changed since, stops or replaces no running machine. Slurm runs
configless: only the head node has slurm.conf, delivered over SSH by a command of the stack
(`slurm_conf_command`), and every slurmd takes it from slurmctld. A resize is a stack update that
delivers the new slurm.conf; the nodes it removes were drained first (`drain_command`).

An elastic cluster's head node launches and removes its nodes above the floor itself: slurmctld's
power saving runs programs its boot script writes, which call the cloud's CLI (`PowerControl`, each
cloud's own). A launched node keeps the address slurm.conf has for it, and boots the same script.
"""

import hashlib
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
from infra.providers.local import BUSY_STATES, DRAIN_REASON

NETWORK_CIDR = "10.20.0.0/16"
SUBNET_CIDR = "10.20.1.0/24"
# AWS: the public subnet of the NAT gateway the cluster's subnet goes out through.
NAT_SUBNET_CIDR = "10.20.0.0/28"
# A second range, for the managed database (some clouds want it in a subnet of its own).
DATABASE_CIDR = "10.20.2.0/24"
HEAD_ADDRESS = "10.20.1.10"
FIRST_NODE_HOST = 20
SLURM_PORTS = (6817, 6818)  # slurmctld, slurmd (reachable from inside the network only, like all but SSH)
# Only on the head node: the compute nodes' slurmd take it from slurmctld.
SLURM_CONF = "/etc/slurm/slurm.conf"
SHARED = "/shared"
# Written by a node's boot script when it has finished; software is installed only after it.
READY_MARKER = "/var/lib/hpcinfra-ready"
_WAIT_FOR_BOOT = f"until [ -f {READY_MARKER} ]; do sleep 10; done"
# A Spack release, so that every cluster builds the same recipes.
SPACK_RELEASE = "v0.22.2"
ADMIN_USER = "hpcadmin"
HEAD_NODE_TYPE = "small"

# Elastic clusters: the head node's slurmctld launches the nodes above the floor when jobs queue for them
# and removes them once idle, with these programs (written by its boot script) and the cloud's CLI.
RESUME_PROGRAM = "/usr/local/sbin/hpcinfra-resume"
SUSPEND_PROGRAM = "/usr/local/sbin/hpcinfra-suspend"
POWER_LOG = "/var/log/hpcinfra-power.log"
# The CLI's own files (its sign-in as the head's identity, never a key).
POWER_STATE = "/var/lib/hpcinfra-power"
# The compute nodes' boot script with NODE where the node's name goes: the resume program fills it in.
COMPUTE_BOOT_TEMPLATE = "/etc/hpcinfra/compute-boot.sh"
NODE = "@node@"
# Which node an instance is, on every compute instance of an elastic cluster (metering reads it too).
NODE_TAG = "hpcinfra-node"
# A cloud VM boots and installs Slurm before its slurmd registers: well over five minutes at times.
RESUME_TIMEOUT = 900
SUSPEND_TIMEOUT = 120

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
class PowerControl:
    """How an elastic cluster's head node powers its nodes above the floor up and down on its cloud, with
    the cloud's CLI signed in as the head's own identity (no key on disk). Each is shell: `cli` installs
    the CLI at boot; both programs start with `environment`; `launch` makes node `$node`'s instance `$name`,
    at `$address` and booting the script in the file `$boot`, unless it is there; `remove` removes it if
    it is there. Slurm may ask either again for a node: both succeed when there is nothing to do."""

    cli: str
    environment: str
    launch: str
    remove: str


@dataclass(frozen=True)
class ClusterPlan:
    spec: ClusterSpec
    config: CloudConfig
    # Names one call of Provider.drain: a new one runs the drain command again, even for the same nodes,
    # as each call asks which of them still run jobs. Empty outside a drain.
    drain_request: str = ""

    @classmethod
    def of(cls, spec: ClusterSpec, drain_request: str = "") -> "ClusterPlan":
        try:
            return cls(spec, CloudConfig.model_validate(spec.provider_config), drain_request)
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
        return as_labels(self.tags)

    @property
    def node_names(self) -> list[str]:
        return self.spec.node_names

    @property
    def elastic(self) -> bool:
        return self.spec.scaling is not None

    @property
    def floor_names(self) -> list[str]:
        """The nodes that are always up, as instances of the stack."""
        return self.node_names[: self.spec.floor]

    def instance_name(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    def floor_instance_name(self, node: str) -> str | None:
        """The name the cloud gives the stack's instance of floor node `node`: an elastic cluster's is the
        node's instance name, by which its head node's programs find it (on GCP and Azure), so that none
        launches a second instance for a node that leaves a lowered floor while the stack's is there. A
        static cluster's is Pulumi's own, with a suffix, as it always was (None)."""
        return self.instance_name(node) if self.elastic else None

    def instance_tags(self, node: str) -> dict[str, str]:
        """The tags of compute node `node`'s instance: an elastic cluster's name the node as well, as its
        head node and metering find them by it (a static cluster's keep the tags they always had)."""
        return {**self.tags, NODE_TAG: node} if self.elastic else self.tags

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
            f"NodeName={name} NodeAddr={address} CPUs={node.vcpus} RealMemory={real_memory} "
            f"State={'UNKNOWN' if i < self.spec.floor else 'CLOUD'}"
            for i, (name, address) in enumerate(zip(self.node_names, self.node_addresses, strict=True))
        )
        return f"""ClusterName={self.spec.name}
SlurmctldHost=head({HEAD_ADDRESS})
SlurmctldParameters={",".join(self._slurmctld_parameters())}
# Messages go straight from slurmctld to each node, never through a slurmd whose list of nodes predates a resize.
TreeWidth=65533
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
SelectType=select/cons_tres
SchedulerType=sched/backfill
SlurmctldPort={SLURM_PORTS[0]}
SlurmdPort={SLURM_PORTS[1]}
StateSaveLocation=/var/spool/slurmctld
ReturnToService=2
{self._power_saving()}{nodes}
PartitionName=compute Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""

    def _slurmctld_parameters(self) -> list[str]:
        # An elastic cluster's nodes that went down (their instance gone) are idle again once suspended,
        # so that Slurm powers them up again when jobs need them.
        return ["enable_configless", *(["idle_on_node_suspend"] if self.elastic else [])]

    @property
    def slurm_conf_digest(self) -> str:
        """Changes with slurm.conf: what runs the commands that deliver it, and check it, again."""
        return hashlib.sha256(self.slurm_conf().encode()).hexdigest()

    def _power_saving(self) -> str:
        """An elastic cluster's power saving: slurmctld runs the resume program for nodes above the floor
        (State=CLOUD) that jobs need, and the suspend program for those idle for the cluster's idle seconds."""
        if self.spec.scaling is None:
            return ""
        floor = f"SuspendExcNodes={','.join(self.floor_names)}\n" if self.floor_names else ""
        return f"""ResumeProgram={RESUME_PROGRAM}
SuspendProgram={SUSPEND_PROGRAM}
SuspendTime={self.spec.scaling.idle_seconds}
{floor}ResumeTimeout={RESUME_TIMEOUT}
SuspendTimeout={SUSPEND_TIMEOUT}
ResumeRate=0
SuspendRate=0
# Without it, powered-down cloud nodes are hidden from sinfo and scontrol.
PrivateData=cloud
"""

    def service(self, name: str) -> ServiceSpec | None:
        """The spec's service of that name, if the cluster should have it."""
        return next((s for s in self.spec.services if s.name == name), None)

    def head_script(self, shared_disk: str, power: PowerControl | None = None) -> str:
        """Boot script of the head node: the shared disk (`shared_disk`, a stable device path) exported
        over NFS, the munge key made once on it, slurmctld, and Spack with Lmod on the shared storage.
        An elastic cluster's (and only its) head node also gets the cloud's CLI and the programs that
        power its nodes up and down (`power`). Not slurm.conf, which `slurm_conf_command` delivers (and
        which starts slurmctld) once this script has finished: the script is the same whatever the size."""
        if self.elastic != (power is not None):
            raise ValueError("the head node of an elastic cluster, and only of one, powers nodes up and down")
        return f"""#!/bin/bash
set -euo pipefail
hostnamectl set-hostname head
{install_packages("slurm-wlm munge nfs-kernel-server lmod git python3 build-essential")}
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
{self._power_programs(power) if power else ""}{self._slurm_setup("slurmctld")}
install -d -o slurm -g slurm /var/spool/slurmctld
[ -d {SHARED}/spack ] || git clone --depth=1 --branch {SPACK_RELEASE} https://github.com/spack/spack {SHARED}/spack
mkdir -p {SHARED}/spack/etc/spack
printf 'modules:\n  default:\n    enable: [lmod]\n' > {SHARED}/spack/etc/spack/modules.yaml
touch {READY_MARKER}
"""

    def compute_script(self, index: int) -> str:
        """Boot script of compute node `index`: mount the shared storage, take the munge key, run slurmd
        with slurm.conf from slurmctld. Only the node's name, which is its host name to Slurm, is its own."""
        return self._compute_script(self.node_names[index])

    def _compute_script(self, node: str) -> str:
        slurmctld = f"{HEAD_ADDRESS}:{SLURM_PORTS[0]}"
        return f"""#!/bin/bash
set -euo pipefail
hostnamectl set-hostname {node}
{install_packages("slurm-wlm munge nfs-common lmod")}
mkdir -p {SHARED}
grep -q " {SHARED} " /etc/fstab || echo "{HEAD_ADDRESS}:{SHARED} {SHARED} nfs defaults,_netdev 0 0" >> /etc/fstab
until mount -a && [ -f {SHARED}/.slurm/munge.key ]; do sleep 10; done
{self._slurm_setup("slurmd")}
# Configless: slurmd takes slurm.conf from slurmctld (Debian's unit reads its options here), and may start
# without one of its own; until slurmctld answers, it is started again.
echo 'SLURMD_OPTIONS="--conf-server {slurmctld}"' > /etc/default/slurmd
mkdir -p /etc/systemd/system/slurmd.service.d
printf '[Unit]\nConditionPathExists=\n[Service]\nRestart=on-failure\nRestartSec=10\n' > /etc/systemd/system/slurmd.service.d/configless.conf
systemctl daemon-reload
# slurmctld starts once the head node has booted and the stack has given it slurm.conf.
until timeout 5 bash -c '> /dev/tcp/{HEAD_ADDRESS}/{SLURM_PORTS[0]}' 2> /dev/null; do sleep 10; done
systemctl restart slurmd
touch {READY_MARKER}
"""

    def _power_programs(self, power: PowerControl) -> str:
        """The head node's lines that install the cloud's CLI, the compute nodes' boot script, and the
        resume and suspend programs: after the shared storage, which the floor's nodes wait for (slurmctld,
        which runs the programs, starts only after the whole script)."""
        programs = f"{RESUME_PROGRAM} {SUSPEND_PROGRAM}"
        # A launched node gets the address slurm.conf gives it, and its own boot script.
        resume = f"""  address=$(awk -v node="NodeName=$node" '$1 == node {{ sub("NodeAddr=", "", $2); print $2 }}' {SLURM_CONF})
  boot=$(mktemp)
  sed "s/{NODE}/$node/g" {COMPUTE_BOOT_TEMPLATE} > "$boot"
  launch
  rm -f "$boot"
"""
        suspend = "  remove\n"
        return f"""{power.cli}
install -d -m 700 {POWER_STATE}
install -d /etc/hpcinfra
cat > {COMPUTE_BOOT_TEMPLATE} <<'BOOT'
{self._compute_script(NODE)}BOOT
cat > {RESUME_PROGRAM} <<'RESUME'
{self._power_program(power, "ResumeProgram", "launch", power.launch, resume)}RESUME
cat > {SUSPEND_PROGRAM} <<'SUSPEND'
{self._power_program(power, "SuspendProgram", "remove", power.remove, suspend)}SUSPEND
chown root:root {programs}
chmod 755 {programs}
"""

    def _power_program(self, power: PowerControl, role: str, action: str, body: str, each_node: str) -> str:
        """A program slurmctld runs with a hostlist: `action` (defined by `body`) for each of its nodes,
        by the lines `each_node`."""
        return f"""#!/bin/bash
# Slurm's {role}, written by hpcinfra: {action} the instance of each node of the hostlist $1.
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
exec >> {POWER_LOG} 2>&1
{power.environment}
{action}() {{
{body}
}}
for node in $(scontrol show hostnames "$1"); do
  name={self.instance_name("$node")}
  echo "$(date --iso-8601=seconds) {action} $node ($name)"
{each_node}done
"""

    def _slurm_setup(self, daemon: str) -> str:
        """The lines both kinds of node share: the munge key, the Slurm daemon enabled, and modules in every shell."""
        return f"""install -m 400 -o munge -g munge {SHARED}/.slurm/munge.key /etc/munge/munge.key
systemctl enable munge {daemon}
systemctl restart munge
echo ". {SHARED}/spack/share/spack/setup-env.sh; module use {SHARED}/spack/share/spack/lmod/linux-*/Core" > /etc/profile.d/spack.sh"""


def as_labels(tags: dict[str, str]) -> dict[str, str]:
    """Tags as GCP labels allow them: lower-case letters, digits, `_` and `-`, at most 63."""
    return {key: re.sub(r"[^a-z0-9_-]", "-", value.lower())[:63] for key, value in tags.items()}


def install_packages(packages: str) -> str:
    # apt may be busy at boot (unattended upgrades) or a mirror briefly unreachable: try a few times.
    return f"""export DEBIAN_FRONTEND=noninteractive
for attempt in 1 2 3 4 5; do
  apt-get update && apt-get install -y {packages} && break
  sleep 30
done"""


def vendor_packages(packages: str, keyring: str, key: str, source: str) -> str:
    """Lines that install `packages` from a vendor's apt repository (`source`: its URL and suites),
    signed by the key published at `key`."""
    return f"""{install_packages("curl gpg")}
curl -fsSL --retry 5 {key} | gpg --dearmor --yes -o /usr/share/keyrings/{keyring}.gpg
echo "deb [signed-by=/usr/share/keyrings/{keyring}.gpg] {source}" > /etc/apt/sources.list.d/{keyring}.list
{install_packages(packages)}"""


def slurm_ready_command(plan: ClusterPlan) -> str:
    """Succeeds once `sinfo` on the head node lists every compute node up (up to 15 minutes): idle, or
    running jobs, as a resized cluster's may be. So a stack update that brings a cluster up succeeds only
    with a working Slurm. An elastic cluster's nodes above the floor are powered down (and `idle~` to
    sinfo): only its floor is counted, and with no floor, slurmctld must answer."""
    up = "sinfo -h -N -t idle,alloc,mix,comp"
    if not plan.elastic:
        ready = f'[ "$({up} -o %N | sort -u | wc -l)" -ge {plan.spec.number_of_nodes} ]'
    elif plan.floor_names:
        floor = ",".join(plan.floor_names)
        ready = f'[ "$({up} -n {floor} -o %N | sort -u | wc -l)" -ge {len(plan.floor_names)} ]'
    else:
        ready = "sinfo -h > /dev/null"
    return f"{_WAIT_FOR_BOOT}; for attempt in $(seq 90); do {ready} && exit 0; sleep 10; done; sinfo -N; exit 1"


def slurm_conf_command(plan: ClusterPlan) -> str:
    """The head node's command that installs slurm.conf, given on its stdin, once the head has booted. For a
    conf that changed (a resize): first the instances the head node launched for nodes the new conf no longer
    has are ended (with the suspend program: they are not the stack's, and would run on), then slurmctld
    restarts, as Slurm learns which nodes there are only then (running jobs are kept in its saved state), and
    the compute nodes' slurmd take the new conf. Nodes that leave the floor are powered down: the stack
    deletes their instances (at the end of the update, as Pulumi deletes last), and Slurm powers them up again
    with the resume program when jobs need them. Nodes drained for an earlier resize that kept them (it failed,
    or a later one kept them) take jobs again. Running it again with the same conf changes nothing."""
    script = f"""{_WAIT_FOR_BOOT}
set -euo pipefail
export LC_ALL=C
conf={SLURM_CONF}
cat > "$conf.new"
# The nodes that slurm.conf $1 lists, sorted; with $2, only those it gives that state.
nodes() {{
  [ -f "$1" ] || return 0
  awk -v state="${{2:-}}" '$1 ~ /^NodeName=/ && (state == "" || $NF == "State=" state) {{ sub(/^NodeName=/, "", $1); print $1 }}' "$1" | sort
}}
hostlist() {{ echo "$*" | tr ' ' ,; }}
gone=$(comm -23 <(nodes "$conf" CLOUD) <(nodes "$conf.new"))
[ -z "$gone" ] || {SUSPEND_PROGRAM} "$(hostlist $gone)"
if cmp -s "$conf.new" "$conf"; then
  rm "$conf.new"
else
  leaving_the_floor=$(comm -12 <(nodes "$conf" UNKNOWN) <(nodes "$conf.new" CLOUD))
  mv "$conf.new" "$conf"
  systemctl restart slurmctld
  for attempt in $(seq 60); do sinfo -h > /dev/null 2>&1 && break; sleep 5; done
  scontrol reconfigure
  [ -z "$leaving_the_floor" ] || scontrol update nodename="$(hostlist $leaving_the_floor)" state=power_down_force
fi
drained=$(sinfo -h -N -t drain -o '%N %E' | awk '$2 == "{DRAIN_REASON}" {{ print $1 }}' | sort -u)
[ -z "$drained" ] || scontrol update nodename="$(hostlist $drained)" state=resume
"""
    return _as_root(script)


def drain_command(plan: ClusterPlan) -> str | None:
    """The head node's command that drains the nodes a resize is about to remove (`spec.draining`), as Slurm
    drains: they take no new job. It prints, space-separated and sorted, those still running one (sinfo's %t
    without its suffixes). None when no node is draining."""
    if not plan.spec.draining:
        return None
    nodes = ",".join(plan.spec.draining)
    busy = "|".join(BUSY_STATES)
    return _as_root(f"""set -euo pipefail
export LC_ALL=C
scontrol update nodename={nodes} state=drain reason={DRAIN_REASON} >&2
sinfo -h -N -n {nodes} -o '%N %t' | awk '{{ sub(/[^a-z]+$/, "", $2) }} $2 ~ /^({busy})$/ {{ print $1 }}' | sort -u | paste -sd ' ' -
""")


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
