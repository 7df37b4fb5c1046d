"""The power programs of an elastic local cluster, which its slurmctld runs (Slurm's power saving):

    python -m infra.providers.local_power resume|suspend|prolog [HOSTLIST]

`resume` starts the real `slurmd` of each node of HOSTLIST, `suspend` stops it; each writes the change
to the cluster's power log (`power.log` beside its slurm.conf: `<UTC time> <node> <state>` lines), which
the provider reads with each metering collection. `prolog` (PrologSlurmctld) returns once every node
of the starting job has registered, so that the job starts then rather than at slurmctld's next
periodic check, up to 30 s later; it always succeeds, since a failing one would requeue the job.

slurmctld runs them as its user, with next to no environment (no PATH; the prolog not even SLURM_CONF,
which the scripts name), and with most signals blocked: the mask
is cleared before a slurmd is started, or it would ignore the SIGTERM that stops it. A slurmd is
started with `-b`, so that it reports its own start as the node's boot, without which slurmctld does
not count the node as resumed.
"""

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from core.enums import NodeState
from core.providers import PowerChange
from infra.providers import local_processes as processes

LOG = "power.log"
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
PROLOG_PATIENCE = 150  # seconds: beyond slurmctld's ResumeTimeout, which ends a resume that hangs


def write_programs(home: Path) -> dict[str, Path]:
    """The programs slurm.conf names, by action: scripts that run this module with the worker's Python."""
    root = Path(__file__).resolve().parents[2]  # where the `infra` package is
    programs = {}
    for action in ("resume", "suspend", "prolog"):
        path = programs[action] = home / f"power-{action}"
        path.write_text(
            # slurmctld gives its PrologSlurmctld no SLURM_CONF: the script names it.
            f"#!/bin/sh\nSLURM_CONF={home / 'slurm.conf'} PYTHONPATH={root} "
            f'exec {sys.executable} -m infra.providers.local_power {action} "$@"\n'
        )
        path.chmod(0o755)
    return programs


def read_log(home: Path, since: datetime, until: datetime) -> list[PowerChange]:
    """The power changes written in [since, until], oldest first."""
    try:
        lines = (home / LOG).read_text().splitlines()
    except FileNotFoundError:
        return []
    changes = []
    for line in lines:
        moment, node, state = line.split()
        at = datetime.fromisoformat(moment)
        if since <= at <= until:
            changes.append(PowerChange(node, NodeState(state), at))
    return changes


def _note(home: Path, node: str, state: NodeState) -> None:
    with open(home / LOG, "a") as log:
        log.write(f"{datetime.now(UTC).isoformat()} {node} {state}\n")


def _hostnames(hostlist: str, env: dict[str, str]) -> list[str]:
    result = subprocess.run(["scontrol", "show", "hostnames", hostlist], env=env, capture_output=True, text=True)
    return result.stdout.split()


def resume(home: Path, conf: str, env: dict[str, str], hostlist: str) -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, [])  # inherited by the slurmd started below
    for node in _hostnames(hostlist, env):
        pidfile = home / f"slurmd-{node}.pid"
        if processes.alive(pidfile, conf):
            continue
        _note(home, node, NodeState.POWERING_UP)
        spool = Path(_spool_of(conf).replace("%n", node))
        spool.mkdir(parents=True, exist_ok=True)
        # Its output goes to a file, not to a pipe of this short-lived program: the daemon's job steps
        # inherit it, and would fail writing to a pipe nobody reads any more.
        with open(home / "log" / f"resume-{node}.out", "ab") as out:
            started = subprocess.run(
                ["slurmd", "-f", conf, "-N", node, "-b"], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        deadline = time.monotonic() + 15
        while started.returncode == 0 and not processes.alive(pidfile, conf) and time.monotonic() < deadline:
            time.sleep(0.05)
        _note(home, node, NodeState.UP if processes.alive(pidfile, conf) else NodeState.FAILED)


def suspend(home: Path, conf: str, env: dict[str, str], hostlist: str) -> None:
    for node in _hostnames(hostlist, env):
        _note(home, node, NodeState.POWERING_DOWN)
        processes.stop(home / f"slurmd-{node}.pid", conf)
        _note(home, node, NodeState.DOWN)


def prolog(env: dict[str, str]) -> None:
    nodes = os.environ.get("SLURM_JOB_NODELIST", "")
    deadline = time.monotonic() + PROLOG_PATIENCE
    while nodes and time.monotonic() < deadline:
        shown = subprocess.run(["scontrol", "-o", "show", "node", nodes], env=env, capture_output=True, text=True)
        states = [word for word in shown.stdout.split() if word.startswith("State=")]
        if states and not any(
            w in state for state in states for w in ("POWERING_UP", "POWERED_DOWN", "NOT_RESPONDING")
        ):
            return
        time.sleep(0.5)


def _spool_of(conf: str) -> str:
    for line in Path(conf).read_text().splitlines():
        if line.startswith("SlurmdSpoolDir="):
            return line.split("=", 1)[1]
    raise RuntimeError(f"no SlurmdSpoolDir in {conf}")


def main(argv: list[str]) -> int:
    conf = os.environ["SLURM_CONF"]
    env = {"PATH": PATH, "SLURM_CONF": conf}
    action, hostlist = argv[0], argv[1] if len(argv) > 1 else ""
    home = Path(conf).parent
    if action == "resume":
        resume(home, conf, env, hostlist)
    elif action == "suspend":
        suspend(home, conf, env, hostlist)
    elif action == "prolog":
        prolog(env)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
