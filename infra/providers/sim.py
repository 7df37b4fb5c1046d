"""The `sim` provider: a simulated cloud for local use, demos and tests. Nothing is created anywhere.

It walks through the same steps a real cloud would (network, firewall, head node, compute nodes,
storage), waiting `step_seconds` for each. Failure injection comes from the provider's config:
`{"failAt": "compute-nodes"}` fails provisioning at that step; `{"unhealthy": true}` makes every
health check report a problem; `{"stepSeconds": 0.5}` overrides the step duration.
"""

import asyncio
from typing import Any

from infra.providers.base import ClusterOutputs, ClusterSpec, Progress, ProvisioningFailed

STEPS = ("network", "firewall", "head-node", "compute-nodes", "storage")


class SimProvider:
    def __init__(self, step_seconds: float) -> None:
        self.default_step_seconds = step_seconds

    async def up(self, spec: ClusterSpec, progress: Progress) -> ClusterOutputs:
        fail_at = spec.provider_config.get("failAt")
        for step in STEPS:
            await asyncio.sleep(self._step_seconds(spec))
            if step == fail_at:
                raise ProvisioningFailed(step, "simulated failure (failure injection in the provider's config)")
            progress(f"{step}: {self._describe(step, spec)}")
        return ClusterOutputs(
            head_node=f"{spec.name}-head.sim.internal",
            node_ids=[f"sim-{spec.cluster_id[:8]}-node-{i}" for i in range(spec.number_of_nodes)],
            storage_id=f"sim-{spec.cluster_id[:8]}-storage",
        )

    async def destroy(self, spec: ClusterSpec, progress: Progress) -> None:
        for step in reversed(STEPS):
            await asyncio.sleep(self._step_seconds(spec))
            progress(f"{step}: removed (simulated)")

    async def health(self, spec: ClusterSpec, outputs: dict[str, Any]) -> list[str]:
        if spec.provider_config.get("unhealthy"):
            return ["slurmd not responding on one node (simulated)"]
        return []

    def _step_seconds(self, spec: ClusterSpec) -> float:
        return float(spec.provider_config.get("stepSeconds", self.default_step_seconds))

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
