"""The `sim` provider: a simulated cloud for local use, demos and tests. Nothing is created anywhere.

It walks through the steps a real cloud would take (network, firewall, head node, compute nodes,
storage), waiting `step_seconds` for each, and keeps what it "created" in a JSON file per cluster
under its state folder, so teardown and compensation can be checked: after a destroy, nothing is left.

Failure injection comes from the provider's config:
- `failAt`: a provisioning step (network, firewall, head-node, compute-nodes, storage) that fails;
- `failTools`, `failServices`: lists of tool or service names whose installation fails;
- `failWith`: what kind of failure: `capacity`, `quota`, `configuration` (the default), `outage`, `timeout`;
- `failTimes`: how many times each injected failure happens before the step succeeds (default: always);
- `unhealthy: true`: every health check reports a problem;
- `stepSeconds`: the duration of each simulated step, overriding the setting.

Demand, for elastic clusters (a cluster with `scaling`): `demand` is a list of jobs, each
`{"at": seconds after the cluster became available, "nodes": how many, "seconds": how long it runs}`,
repeated every `demandRepeatSeconds` if set (86400: the same day every day). The nodes above the
floor power up when the jobs running need them (the lowest-numbered first), taking `bootSeconds` to
come up and to go down, and power down once idle for the cluster's `idleSeconds`, as Slurm's power
saving does. Jobs beyond the cluster's nodes wait for none: a job that needs more nodes than there are
is simply run on all of them.
"""

import asyncio
import json
import math
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.enums import NodeState
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
)

STEPS = ("network", "firewall", "head-node", "compute-nodes", "storage")
FAILURE_CLASSES = {
    "capacity": FailureClass.CAPACITY_OR_QUOTA,
    "quota": FailureClass.CAPACITY_OR_QUOTA,
    "configuration": FailureClass.CONFIGURATION,
    "outage": FailureClass.OUTAGE,
    "timeout": FailureClass.TIMEOUT,
}


class SimJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: float = Field(ge=0)
    nodes: int = Field(ge=1, le=1000)
    seconds: float = Field(gt=0, le=30 * 86400)


class SimConfig(BaseModel):
    """The sim provider's config, as registered; anything else in it is refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # Named as the JSON keys people write in the config.

    failAt: Literal[STEPS] | None = None
    failTools: list[str] = []
    failServices: list[str] = []
    failWith: Literal[tuple(FAILURE_CLASSES)] = "configuration"
    failTimes: int | None = Field(default=None, ge=0)
    unhealthy: bool = False
    stepSeconds: float | None = Field(default=None, ge=0, le=60)
    demand: list[SimJob] = Field(default=[], max_length=10_000)
    demandRepeatSeconds: float | None = Field(default=None, ge=60, le=366 * 86400)
    bootSeconds: float = Field(default=0, ge=0, le=3600)


class SimProvider:
    def __init__(self, step_seconds: float, state_dir: Path) -> None:
        self.default_step_seconds = step_seconds
        self.state_dir = state_dir

    async def up(self, spec: ClusterSpec, progress: Progress) -> ClusterOutputs:
        state = self._load(spec)
        for step in STEPS:
            await self._pause(spec)
            if _config(spec).failAt == step:
                self._maybe_fail(spec, state, step, step)
            state["resources"][step] = self._describe(step, spec)
            self._save(spec, state)
            progress(f"{step}: {state['resources'][step]}")
        return ClusterOutputs(
            head_node=self._head_node(spec),
            node_ids=[f"sim-{spec.cluster_id[:8]}-node-{i}" for i in range(spec.number_of_nodes)],
            storage_id=f"sim-{spec.cluster_id[:8]}-storage",
        )

    async def destroy(self, spec: ClusterSpec, progress: Progress) -> None:
        state = self._load(spec)
        for name in list(state["services"]):
            del state["services"][name]
            progress(f"service {name}: stopped (simulated)")
        state["tools"].clear()
        for step in reversed(STEPS):
            if step in state["resources"]:
                await self._pause(spec)
                del state["resources"][step]
                self._save(spec, state)
                progress(f"{step}: removed (simulated)")
        self._save(spec, state)

    async def health(self, spec: ClusterSpec) -> list[str]:
        if _config(spec).unhealthy:
            return ["slurmd not responding on one node (simulated)"]
        missing = [step for step in STEPS if step not in self._load(spec)["resources"]]
        return [f"{step} is missing (simulated)" for step in missing]

    async def install_tool(self, spec: ClusterSpec, tool: ToolSpec, progress: Progress) -> None:
        state = self._load(spec)
        await self._pause(spec)
        if tool.name in _config(spec).failTools:
            self._maybe_fail(spec, state, f"tool:{tool.name}", f"install {tool.name}")
        state["tools"][tool.name] = tool.version
        self._save(spec, state)
        progress(
            f"{tool.name}: {tool.version} built with Spack on shared storage, `module load {tool.name}/{tool.version}` (simulated)"
        )

    async def start_service(
        self, spec: ClusterSpec, service: ServiceSpec, secret: ServiceSecret, progress: Progress
    ) -> dict[str, Any]:
        state = self._load(spec)
        await self._pause(spec)
        if service.name in _config(spec).failServices:
            self._maybe_fail(spec, state, f"service:{service.name}", f"start {service.name}")
        # The simulated service keeps who may log in, not the password: nothing here is secret.
        state["services"][service.name] = {"version": service.version, "port": service.port, "user": secret.username}
        self._save(spec, state)
        progress(f"{service.name}: {service.version} running on the head node, port {service.port} (simulated)")
        return {"host": self._head_node(spec), "port": service.port}

    async def stop_service(self, spec: ClusterSpec, service: ServiceSpec, progress: Progress) -> None:
        state = self._load(spec)
        await self._pause(spec)
        state["services"].pop(service.name, None)
        self._save(spec, state)
        progress(f"{service.name}: stopped (simulated)")

    async def utilisation(
        self, spec: ClusterSpec, outputs: dict[str, Any], start: datetime, end: datetime
    ) -> dict[datetime, Utilisation]:
        readings = {}
        minute = start
        while minute < end:
            readings[minute] = simulated_use(spec.cluster_id, minute)
            minute += timedelta(minutes=1)
        return readings

    async def power_changes(
        self, spec: ClusterSpec, outputs: dict[str, Any], since: datetime, until: datetime
    ) -> list[PowerChange]:
        """Each change the demand makes in [since, until], then each node's state at `until` (which changes
        nothing where the changes brought it there: it moves a node that left the floor in a resize)."""
        config = _config(spec)
        if spec.scaling is None or spec.available_since is None:
            return []
        boot = timedelta(seconds=config.bootSeconds)
        changes = []
        for position, node in enumerate(spec.node_names):
            if position < spec.floor:
                continue
            now = NodeState.DOWN
            for up, down in _powered(config, spec, position, since, until) if config.demand else []:
                moments = [(up, NodeState.POWERING_UP), (up + boot, NodeState.UP)]
                if down is not None:
                    moments += [(down, NodeState.POWERING_DOWN), (down + boot, NodeState.DOWN)]
                for at, state in moments:
                    if at <= until and (boot or state in (NodeState.UP, NodeState.DOWN)):
                        now = state
                        if at >= since:
                            changes.append(PowerChange(node, state, at))
            changes.append(PowerChange(node, now, until))
        return sorted(changes, key=lambda change: change.at)

    async def drain(self, spec: ClusterSpec, outputs: dict[str, Any], nodes: list[str]) -> list[str]:
        """The nodes whose simulated jobs still run (the demand's: jobs run on the lowest-numbered nodes)."""
        config, now = _config(spec), datetime.now(UTC)
        if spec.available_since is None or not config.demand:
            return []
        needed = next((n for moment, n in reversed(_needed(config, spec, now, now)) if moment <= now), 0)
        return [node for node in nodes if spec.node_names.index(node) < needed]

    def state(self, cluster_id: str) -> dict[str, Any]:
        """What the simulated cloud holds for a cluster, and the failures it injected (to look at)."""
        path = self.state_dir / f"{cluster_id}.json"
        return json.loads(path.read_text()) if path.exists() else _empty()

    def _maybe_fail(self, spec: ClusterSpec, state: dict[str, Any], point: str, step: str) -> None:
        config = _config(spec)
        failed = state["failures"].get(point, 0)
        if config.failTimes is not None and failed >= config.failTimes:
            return
        state["failures"][point] = failed + 1
        self._save(spec, state)
        failure_class = FAILURE_CLASSES[config.failWith]
        raise ProviderFailure(
            step, f"simulated {failure_class} (failure injection in the provider's config)", failure_class
        )

    async def _pause(self, spec: ClusterSpec) -> None:
        step_seconds = _config(spec).stepSeconds
        await asyncio.sleep(self.default_step_seconds if step_seconds is None else step_seconds)

    def _load(self, spec: ClusterSpec) -> dict[str, Any]:
        return self.state(spec.cluster_id)

    def _save(self, spec: ClusterSpec, state: dict[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / f"{spec.cluster_id}.json"
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps(state, indent=1))
        os.replace(partial, path)

    @staticmethod
    def _head_node(spec: ClusterSpec) -> str:
        return f"{spec.name}-head.sim.internal"

    @staticmethod
    def _describe(step: str, spec: ClusterSpec) -> str:
        n = spec.node_type
        return {
            "network": f"private network and subnet in {spec.region} (simulated)",
            "firewall": "SSH from the admin range, Slurm inside the network (simulated)",
            "head-node": "slurmctld running (simulated)",
            "compute-nodes": f"{spec.number_of_nodes} x {n.name} ({n.vcpus} vCPU, {n.memory_gb} GB) idle (simulated)",
            "storage": f"{spec.storage_gb} GB shared storage mounted on every node (simulated)",
        }[step]


def simulated_use(cluster_id: str, at: datetime) -> Utilisation:
    """A plausible reading (simulated), the same whenever it is asked for: busy in working hours, quiet at
    night, each cluster at its own level; storage fills slowly over the days."""
    level = (int(cluster_id.replace("-", "")[:8], 16) % 40) / 100  # 0.00 to 0.39, per cluster
    hours = at.timestamp() / 3600
    day = 0.5 - 0.5 * math.cos(2 * math.pi * (hours % 24) / 24)  # 0 at midnight, 1 at noon (UTC)
    return Utilisation(
        cpu_percent=round(100 * min(1.0, 0.1 + level + 0.5 * day), 1),
        memory_percent=round(100 * min(1.0, 0.2 + level + 0.3 * day), 1),
        storage_percent=round(min(100.0, 5 + (hours / 24) % 30), 1),
    )


def _powered(
    config: SimConfig, spec: ClusterSpec, position: int, since: datetime, until: datetime
) -> list[tuple[datetime, datetime | None]]:
    """The spans [power up, power down) of the node at `position` (from 0) that may touch [since, until]:
    it is wanted while the jobs running need more than `position` nodes, and stays up until it has been
    idle for the cluster's idle seconds (so two wants closer than that are one span)."""
    idle = timedelta(seconds=spec.scaling.idle_seconds)
    spans: list[tuple[datetime, datetime | None]] = []
    wanted_from = None
    for moment, needed in _needed(config, spec, since, until, spec.scaling.idle_seconds):
        if needed > position and wanted_from is None:
            wanted_from = moment
        elif needed <= position and wanted_from is not None:
            if spans and wanted_from <= spans[-1][1]:
                spans[-1] = (spans[-1][0], moment + idle)
            else:
                spans.append((wanted_from, moment + idle))
            wanted_from = None
    if wanted_from is not None:
        spans.append((wanted_from, None))  # wanted still: it has not powered down
    return spans


def _needed(
    config: SimConfig, spec: ClusterSpec, since: datetime, until: datetime, margin_seconds: float = 0
) -> list[tuple[datetime, int]]:
    """How many nodes the running jobs need, from each moment it changes, for the rounds of the demand
    that may touch [since, until] (`margin_seconds`: how long after its jobs a round still counts)."""
    origin, period = spec.available_since, config.demandRepeatSeconds
    longest = max(job.seconds for job in config.demand) + margin_seconds + 2 * config.bootSeconds
    if period is None:
        rounds = [0.0]
    else:
        first = max(0, math.floor(((since - origin).total_seconds() - longest) / period))
        last = math.floor((until - origin).total_seconds() / period)
        rounds = [k * period for k in range(first, last + 1)]
    steps: dict[datetime, int] = {}
    for offset in rounds:
        for job in config.demand:
            start = origin + timedelta(seconds=offset + job.at)
            steps[start] = steps.get(start, 0) + job.nodes
            end = start + timedelta(seconds=job.seconds)
            steps[end] = steps.get(end, 0) - job.nodes
    needed, timeline = 0, []
    for moment in sorted(steps):
        needed += steps[moment]
        timeline.append((moment, needed))
    return timeline


def _config(spec: ClusterSpec) -> SimConfig:
    return SimConfig.model_validate(spec.provider_config)


def _empty() -> dict[str, Any]:
    # `failures` counts injected failures per point and outlives a destroy, so `failTimes` holds across retries.
    return {"resources": {}, "tools": {}, "services": {}, "failures": {}}
