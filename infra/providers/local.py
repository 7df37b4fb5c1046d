"""The `local` provider: a real Slurm cluster on this machine, with nothing simulated.

Each cluster gets a folder under the data folder holding its slurm.conf, state, logs, shared storage
and services; one slurmctld and `numberOfNodes` slurmd processes (`slurmd -N <node>`) on free ports
form the cluster. An elastic cluster's nodes above its floor are Slurm cloud nodes, whose slurmd its
slurmctld starts when jobs need them and stops once they are idle (infra/providers/local_power.py). The daemons run on their own, so they outlive the worker that started them. Tools
are installed from Debian's packages (or PyPI, into the cluster's own Python environment) and count
as installed only once their smoke test has passed as a Slurm job. PostgreSQL and Redis are real
instances of their own, on their own ports, with the credentials the platform generated.

Needs Debian or Ubuntu, root, slurm-wlm and munge with munged running: `hpcinfra local setup`.
"""

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from core.catalog import SERVICES, TOOLS
from core.providers import (
    ClusterOutputs,
    ClusterSpec,
    FailureClass,
    PowerChange,
    Progress,
    ProviderFailure,
    ServiceSecret,
    ServiceSpec,
    ToolSpec,
    Utilisation,
    cluster_environment,
    threadsafe,
)
from infra.providers import local_power as power
from infra.providers import local_processes as processes
from infra.providers import local_services as services
from infra.providers.local_smoke import SMOKE_FILES, SMOKE_TESTS

SETUP = "hpcinfra local setup"
PARTITION = "compute"
# slurmd makes Unix sockets in its spool folder, whose paths may not exceed 108 bytes: keep it short.
SPOOL_ROOT = Path("/var/spool/hpcinfra")
READY_TIMEOUT = 90
# Node states (sinfo %t, without their suffixes) of a node running a job.
BUSY_STATES = ("alloc", "mix", "comp", "drng")
DRAIN_REASON = "hpcinfra:resize"
SMOKE_TIMEOUT = 600


class LocalConfig(BaseModel):
    """The local provider takes no settings: the machine is the cloud."""

    model_config = ConfigDict(extra="forbid")


class LocalProvider:
    def __init__(self, root: Path) -> None:
        self.root = root

    # --- the cluster -------------------------------------------------------------------------

    async def up(self, spec: ClusterSpec, progress: Progress) -> ClusterOutputs:
        check_prerequisites()
        return await asyncio.to_thread(self._up, spec, threadsafe(progress))

    def _up(self, spec: ClusterSpec, progress: Progress) -> ClusterOutputs:
        home = self._home(spec)
        layout = self._layout(spec)
        if not layout.exists():
            for folder in ("state", "log", "shared", "services"):
                (home / folder).mkdir(parents=True, exist_ok=True)
            (SPOOL_ROOT / spec.cluster_id).mkdir(parents=True, exist_ok=True)
            ports = {"slurmctld": processes.free_port(), **{node: processes.free_port() for node in spec.node_names}}
            layout.write_text(json.dumps({"ports": ports}))
            programs = power.write_programs(home) if spec.scaling else {}
            (home / "slurm.conf").write_text(_slurm_conf(spec, home, ports, programs))
        else:
            self._reconfigure(spec, progress)
        progress(f"slurm.conf: {home / 'slurm.conf'}")
        (home / "shared").mkdir(exist_ok=True)
        progress(f"storage: {spec.storage_gb} GB shared folder at {home / 'shared'} (measured, not enforced)")

        env = self._env(spec)
        conf = str(home / "slurm.conf")  # on every daemon's command line
        if not processes.alive(home / "slurmctld.pid", conf):
            processes.start_daemon(
                ["slurmctld", "-f", conf],
                env,
                home / "slurmctld.pid",
                conf,
                f"start slurmctld (log: {home / 'log'})",
                "head-node",
            )
        progress(f"head-node: slurmctld on port {json.loads(layout.read_text())['ports']['slurmctld']}")
        # The floor: an elastic cluster's other nodes start powered down, and slurmctld powers them up.
        for node in spec.node_names[: spec.floor]:
            if not processes.alive(home / f"slurmd-{node}.pid", conf):
                processes.start_daemon(
                    ["slurmd", "-f", conf, "-N", node],
                    env,
                    home / f"slurmd-{node}.pid",
                    conf,
                    f"start slurmd {node}",
                    "compute-nodes",
                )
        self._wait_idle(spec, env)
        self._resume_drained(spec, env)
        elastic = f", {spec.number_of_nodes - spec.floor} powered down until jobs need them" if spec.scaling else ""
        progress(f"compute-nodes: {spec.floor} node(s) idle in partition {PARTITION}{elastic}")
        return ClusterOutputs(
            head_node=f"localhost (SLURM_CONF={home / 'slurm.conf'})",
            node_ids=spec.node_names,
            storage_id=str(home / "shared"),
            extras={
                "slurmConf": str(home / "slurm.conf"),
                "partition": PARTITION,
                "sharedStorage": str(home / "shared"),
            },
        )

    def _reconfigure(self, spec: ClusterSpec, progress: Progress) -> None:
        """A cluster that exists, perhaps resized: its slurm.conf rewritten for the spec, the slurmd of each node
        it no longer has stopped (drained first: `drain`), and its slurmctld restarted, since Slurm reads
        which nodes there are only when it starts (its jobs are kept in its state folder). Unchanged, nothing."""
        home, layout = self._home(spec), self._layout(spec)
        ports = json.loads(layout.read_text())["ports"]
        for node in spec.node_names:
            ports.setdefault(node, processes.free_port())
        programs = power.write_programs(home) if spec.scaling else {}
        conf_path = home / "slurm.conf"
        conf = _slurm_conf(spec, home, ports, programs)
        if conf_path.read_text() == conf:
            return
        layout.write_text(json.dumps({"ports": ports}))  # a node added again later gets its port back
        for node in set(ports) - {"slurmctld", *spec.node_names}:
            if processes.stop(home / f"slurmd-{node}.pid", str(conf_path)):
                progress(f"compute-nodes: {node} removed")
        processes.stop(home / "slurmctld.pid", str(conf_path))
        conf_path.write_text(conf)
        progress(f"head-node: slurm.conf rewritten for {spec.number_of_nodes} node(s); restarting slurmctld")

    def _resume_drained(self, spec: ClusterSpec, env: dict[str, str]) -> None:
        """Nodes drained for a resize that did not remove them (it failed, or a later one kept them) take jobs again."""
        drained = [node for node, state in self._node_states(spec, env).items() if state in ("drain", "drng")]
        if drained:
            processes.run(
                ["scontrol", "update", f"nodename={','.join(drained)}", "state=resume"],
                env, "take jobs on drained nodes again", "compute-nodes",
            )  # fmt: skip

    async def drain(self, spec: ClusterSpec, outputs: dict[str, Any], nodes: list[str]) -> list[str]:
        return await asyncio.to_thread(self._drain, spec, nodes)

    def _drain(self, spec: ClusterSpec, nodes: list[str]) -> list[str]:
        """Slurm's own drain: the nodes take no new job, and those still running one are `drng`."""
        if not nodes:
            return []
        env = self._env(spec)
        processes.run(
            ["scontrol", "update", f"nodename={','.join(nodes)}", "state=drain", f"reason={DRAIN_REASON}"],
            env, f"drain {', '.join(nodes)}", "compute-nodes",
        )  # fmt: skip
        states = self._node_states(spec, env)
        return [node for node in nodes if states.get(node) in BUSY_STATES]

    async def destroy(self, spec: ClusterSpec, progress: Progress) -> None:
        await asyncio.to_thread(self._destroy, spec, threadsafe(progress))

    def _destroy(self, spec: ClusterSpec, progress: Progress) -> None:
        home = self._home(spec)
        if not home.exists():
            return
        for folder in (home / "services").glob("*"):
            services.stop_service(folder)
            progress(f"service {folder.name}: stopped")
        # Job steps outlive slurmd by design: end the cluster's jobs first, so nothing is left running.
        if (home / "slurm.conf").exists() and processes.alive(home / "slurmctld.pid", str(home / "slurm.conf")):
            self._cancel_jobs(spec)
        for daemon in [f"slurmd-{node}" for node in spec.node_names] + ["slurmctld"]:
            if processes.stop(home / f"{daemon}.pid", str(home / "slurm.conf")):
                progress(f"{daemon}: stopped")
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(SPOOL_ROOT / spec.cluster_id, ignore_errors=True)
        progress(f"folder: {home} removed")

    async def health(self, spec: ClusterSpec) -> list[str]:
        return await asyncio.to_thread(self._health, spec)

    def _health(self, spec: ClusterSpec) -> list[str]:
        home = self._home(spec)
        conf = str(home / "slurm.conf")
        problems = [
            f"{daemon} is not running"
            for daemon in self._daemons(spec)
            if not processes.alive(home / f"{daemon}.pid", conf)
        ]
        if problems:
            return problems
        states = self._node_states(spec, self._env(spec))
        problems += [
            f"node {node} is {state}" for node, state in states.items() if state not in ("idle", "alloc", "mix")
        ]
        used = processes.size_gb(home / "shared")
        if used > spec.storage_gb:
            problems.append(f"shared storage uses {used:.1f} GB of {spec.storage_gb} GB")
        return problems

    async def utilisation(
        self, spec: ClusterSpec, outputs: dict[str, Any], start: datetime, end: datetime
    ) -> dict[datetime, Utilisation]:
        """The machine keeps no history: the reading taken now stands for the window's last minute
        (and, carried forward by the collector, for minutes missed before it)."""
        return {end - timedelta(minutes=1): await asyncio.to_thread(self._utilisation, spec)}

    async def power_changes(
        self, spec: ClusterSpec, outputs: dict[str, Any], since: datetime, until: datetime
    ) -> list[PowerChange]:
        """What the cluster's power programs wrote (infra/providers/local_power.py)."""
        if spec.scaling is None:
            return []
        return await asyncio.to_thread(power.read_log, self._home(spec), since, until)

    def _utilisation(self, spec: ClusterSpec) -> Utilisation:
        """Read from the machine itself: every node of a local cluster shares its CPUs and memory."""
        load = float(Path("/proc/loadavg").read_text().split()[0])
        memory = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        total, available = (int(memory[key].split()[0]) for key in ("MemTotal", "MemAvailable"))
        return Utilisation(
            cpu_percent=min(100.0, 100 * load / (os.cpu_count() or 1)),
            memory_percent=100 * (total - available) / total,
            storage_percent=100 * processes.size_gb(self._home(spec) / "shared") / spec.storage_gb,
        )

    # --- tools -------------------------------------------------------------------------------

    async def install_tool(self, spec: ClusterSpec, tool: ToolSpec, progress: Progress) -> None:
        check_prerequisites()
        await asyncio.to_thread(self._install_tool, spec, tool, threadsafe(progress))

    def _install_tool(self, spec: ClusterSpec, tool: ToolSpec, progress: Progress) -> None:
        offer = TOOLS[tool.name].local
        if offer is None or offer.version != tool.version:
            offered = ", ".join(f"{t.name} {t.local.version}" for t in TOOLS.values() if t.local)
            raise ProviderFailure(
                f"install {tool.name}",
                f"the local provider does not offer {tool.name} {tool.version}; it offers {offered}",
                FailureClass.CONFIGURATION,
            )
        home = self._home(spec)
        if offer.debian_package:
            processes.run(
                ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", offer.debian_package],
                cluster_environment(DEBIAN_FRONTEND="noninteractive"),
                f"apt-get install {offer.debian_package}",
                f"install {tool.name}",
            )
            progress(f"{tool.name}: Debian package {offer.debian_package} installed")
        else:
            venv = home / "shared" / "python"
            if not venv.exists():
                processes.run(
                    [sys.executable, "-m", "venv", str(venv)],
                    cluster_environment(),
                    "create the cluster's Python environment",
                    f"install {tool.name}",
                )
            processes.run(
                [str(venv / "bin" / "pip"), "install", "-q", f"{offer.pip_package}=={tool.version}"],
                cluster_environment(),
                f"pip install {offer.pip_package}=={tool.version}",
                f"install {tool.name}",
            )
            progress(f"{tool.name}: {offer.pip_package} {tool.version} installed in {venv}")
        output = self._smoke_test(spec, tool)
        progress(f"{tool.name}: smoke test passed as a Slurm job ({output})")

    def _smoke_test(self, spec: ClusterSpec, tool: ToolSpec) -> str:
        """Run the tool's smoke test as a batch job on the cluster; its last output line, or a failure."""
        work = Path(tempfile.mkdtemp(prefix=f"smoke-{tool.name}-", dir=self._home(spec) / "shared"))
        for name, text in SMOKE_FILES.items():
            (work / name).write_text(text)
        venv_bin = self._home(spec) / "shared" / "python" / "bin"
        script = work / "job.sh"
        script.write_text(
            f"#!/bin/bash\nset -euo pipefail\ncd {work}\nexport PATH={venv_bin}:$PATH\n{SMOKE_TESTS[tool.name]}\n"
        )
        script.chmod(0o755)
        name = f"smoke-{work.name}"
        try:
            result = subprocess.run(
                # --no-requeue: a job whose launch fails ends failed, instead of being requeued and held.
                ["sbatch", "--wait", "--quiet", "--no-requeue", "-N1", f"--job-name={name}", f"--partition={PARTITION}",
                 f"--output={work}/job.out", str(script)],
                env=self._env(spec), capture_output=True, text=True, timeout=SMOKE_TIMEOUT,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            subprocess.run(["scancel", f"--name={name}"], env=self._env(spec), capture_output=True, timeout=30)
            shutil.rmtree(work, ignore_errors=True)
            raise ProviderFailure(
                f"install {tool.name}",
                f"the smoke test job did not finish within {SMOKE_TIMEOUT} s",
                FailureClass.TIMEOUT,
            ) from None
        output = (work / "job.out").read_text().strip() if (work / "job.out").exists() else ""
        shutil.rmtree(work, ignore_errors=True)
        if result.returncode != 0:
            raise ProviderFailure(
                f"install {tool.name}",
                f"the smoke test job failed ({result.stderr.strip() or 'exit ' + str(result.returncode)}): {output[-500:]}",
                FailureClass.CONFIGURATION,
            )
        return output.splitlines()[-1] if output else "no output"

    # --- services ----------------------------------------------------------------------------

    async def start_service(
        self, spec: ClusterSpec, service: ServiceSpec, secret: ServiceSecret, progress: Progress
    ) -> dict[str, Any]:
        check_prerequisites()
        offered = SERVICES[service.name].local_version
        if service.version != offered:
            raise ProviderFailure(
                f"start {service.name}",
                f"the local provider runs {service.name} {offered} only (Debian's); ask for that version",
                FailureClass.CONFIGURATION,
            )
        return await asyncio.to_thread(self._start_service, spec, service, secret, threadsafe(progress))

    def _start_service(
        self, spec: ClusterSpec, service: ServiceSpec, secret: ServiceSecret, progress: Progress
    ) -> dict[str, Any]:
        folder = self._home(spec) / "services" / service.name
        services.stop_service(folder)  # a retry starts from a clean slate
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        port = processes.free_port()
        if service.name == "postgresql":
            services.start_postgresql(folder, port, service, secret)
        else:
            services.start_redis(folder, port, service, secret)
        (folder / "port").write_text(str(port))
        progress(f"{service.name}: {service.version} listening on 127.0.0.1:{port}")
        return {"host": "127.0.0.1", "port": port}

    async def stop_service(self, spec: ClusterSpec, service: ServiceSpec, progress: Progress) -> None:
        folder = self._home(spec) / "services" / service.name
        await asyncio.to_thread(services.stop_service, folder)
        progress(f"{service.name}: stopped")

    # --- helpers -----------------------------------------------------------------------------

    def _home(self, spec: ClusterSpec) -> Path:
        return self.root / spec.cluster_id

    def _layout(self, spec: ClusterSpec) -> Path:
        return self._home(spec) / "layout.json"

    def _env(self, spec: ClusterSpec) -> dict[str, str]:
        # The daemons, and the jobs the platform submits (which take the submitter's environment), run
        # without the platform's own variables.
        return cluster_environment(SLURM_CONF=str(self._home(spec) / "slurm.conf"))

    def _daemons(self, spec: ClusterSpec) -> list[str]:
        """The daemons that run whenever the cluster is up: an elastic cluster's other nodes come and go."""
        return ["slurmctld"] + [f"slurmd-{node}" for node in spec.node_names[: spec.floor]]

    def _cancel_jobs(self, spec: ClusterSpec, timeout: float = 30) -> None:
        env = self._env(spec)
        subprocess.run(["scancel", "--quiet", "--full", "--user=root"], env=env, capture_output=True, timeout=30)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            queue = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True, timeout=30)
            if queue.returncode != 0 or not queue.stdout.strip():
                return
            time.sleep(0.5)

    def _node_states(self, spec: ClusterSpec, env: dict[str, str]) -> dict[str, str]:
        result = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %t"], env=env, capture_output=True, text=True, timeout=30
        )
        states = dict(line.split() for line in result.stdout.splitlines() if line.strip())
        return {node: states.get(node, "missing").rstrip("*~#!%$@^-") for node in spec.node_names}

    def _wait_idle(self, spec: ClusterSpec, env: dict[str, str]) -> None:
        """Until every node answers: the floor up, an elastic cluster's others powered down (idle~); a
        resized cluster's nodes may be running jobs, or drained for an earlier resize."""
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            states = self._node_states(spec, env)
            if all(state in ("idle", "drain", *BUSY_STATES) for state in states.values()):
                return
            if time.monotonic() > deadline:
                raise ProviderFailure(
                    "compute-nodes",
                    f"not every node became idle within {READY_TIMEOUT} s: {states}; see the logs in {self._home(spec) / 'log'}",
                    FailureClass.TIMEOUT,
                )
            time.sleep(1)


def check_prerequisites() -> None:
    """Debian or Ubuntu, root, Slurm and munge installed and munged running; else fail saying how to fix it."""
    missing = []
    if not Path("/etc/debian_version").exists():
        missing.append("a Debian or Ubuntu machine")
    if os.geteuid() != 0:
        missing.append("a worker running as root")
    missing += [
        f"{command} (package slurm-wlm)"
        for command in ("slurmctld", "slurmd", "sinfo", "sbatch")
        if not shutil.which(command)
    ]
    if not shutil.which("munged"):
        missing.append("munged (package munge)")
    elif not _munge_answers():
        missing.append("a running munged")
    if missing:
        raise ProviderFailure(
            "provision",
            f"the local provider needs {', '.join(missing)}; run `{SETUP}` (as root) to install and start them",
            FailureClass.CONFIGURATION,
        )


def setup() -> list[str]:
    """What `hpcinfra local setup` does: install Slurm and munge with apt, and start munge. Returns what it did."""
    done = []
    env = cluster_environment(DEBIAN_FRONTEND="noninteractive")
    if not (shutil.which("slurmctld") and shutil.which("munged")):
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"], env=env, check=True)
        done.append("installed slurm-wlm and munge")
    if not _munge_answers():
        for folder in ("/etc/munge", "/var/lib/munge", "/var/log/munge"):
            subprocess.run(["chown", "-R", "munge:munge", folder], check=False)
        subprocess.run(["install", "-d", "-o", "munge", "-g", "munge", "-m", "755", "/run/munge"], check=True)
        # --force: a socket left by a munged that was killed does not stop a new one.
        subprocess.run(["runuser", "-u", "munge", "--", "munged", "--force"], check=True)
        done.append("started munged")
    return done


def _munge_answers() -> bool:
    """Whether munged is up: a credential can be made."""
    if not shutil.which("munge"):
        return False
    return subprocess.run(["munge", "-n"], capture_output=True, timeout=10).returncode == 0


# --- processes ---------------------------------------------------------------------------------


def _slurm_conf(spec: ClusterSpec, home: Path, ports: dict[str, int], programs: dict[str, Path]) -> str:
    node = spec.node_type
    host = socket.gethostname()
    nodes = "\n".join(
        f"NodeName={name} NodeHostname={host} NodeAddr=127.0.0.1 Port={ports[name]} "
        f"CPUs={node.vcpus} RealMemory={node.memory_gb * 1024} State={'UNKNOWN' if i < spec.floor else 'CLOUD'}"
        for i, name in enumerate(spec.node_names)
    )
    return f"""# The {spec.name} cluster ({spec.cluster_id}), made by hpcinfra's local provider.
ClusterName=c{spec.cluster_id.replace("-", "")[:12]}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ports["slurmctld"]}
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# Node CPUs and memory are the node type's, not this machine's: the nodes may oversubscribe it.
SlurmdParameters=config_overrides
ReturnToService=2
StateSaveLocation={home}/state
SlurmdSpoolDir={SPOOL_ROOT / spec.cluster_id}/%n
SlurmctldPidFile={home}/slurmctld.pid
SlurmdPidFile={home}/slurmd-%n.pid
SlurmctldLogFile={home}/log/slurmctld.log
SlurmdLogFile={home}/log/slurmd-%n.log
{_power_saving(spec, programs)}{nodes}
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
"""


def _power_saving(spec: ClusterSpec, programs: dict[str, Path]) -> str:
    """An elastic cluster's power saving: its nodes above the floor (State=CLOUD) are powered up by
    slurmctld when jobs need them and down once idle for the cluster's idle seconds."""
    if spec.scaling is None:
        return ""
    floor = spec.node_names[: spec.floor]
    return f"""# Elastic: nodes above the floor are powered up for jobs and down once idle (infra/providers/local_power.py).
ResumeProgram={programs["resume"]}
SuspendProgram={programs["suspend"]}
PrologSlurmctld={programs["prolog"]}
SuspendTime={spec.scaling.idle_seconds}
ResumeTimeout=90
SuspendTimeout=30
ResumeRate=0
SuspendRate=0
{"SuspendExcNodes=" + ",".join(floor) + chr(10) if floor else ""}# Without it, powered-down cloud nodes are hidden from sinfo and scontrol.
PrivateData=cloud
"""
