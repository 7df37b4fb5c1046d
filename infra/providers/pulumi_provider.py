"""Providers `aws`, `gcp` and `azure`: the cluster's Pulumi program, applied by the stack runner.

The whole cluster (network, nodes, storage, tools, services) is one stack described by the spec,
so installing a tool or starting a service is a stack update, and so is stopping a service. So are a
resize and the drain before it: the drain's update adds a command on the head node that drains the nodes
and reports those still running jobs as the stack's output `busyNodes`.
"""

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

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
    threadsafe,
)
from infra.clouds import aws, azure, gcp
from infra.clouds.monitoring import read_utilisation
from infra.clouds.plan import ClusterPlan
from infra.clouds.power import read_power
from infra.clouds.runner import StackRunner, stack_name

PROGRAMS: dict[str, Callable[[ClusterPlan], None]] = {"aws": aws.build, "gcp": gcp.build, "azure": azure.build}


class PulumiProvider:
    def __init__(self, cloud: str, runner: StackRunner, recover: bool = False) -> None:
        self.cloud = cloud
        self.runner = runner
        # Set on a retried attempt: clear what a dead earlier run may have left (lock, pending operations).
        self.recover = recover

    async def up(self, spec: ClusterSpec, progress: Progress) -> ClusterOutputs:
        outputs = await self._apply(spec, progress)
        return ClusterOutputs(outputs["headNode"], list(outputs["nodeIds"]), outputs["storageId"])

    async def destroy(self, spec: ClusterSpec, progress: Progress) -> None:
        plan = self._plan(spec)
        await self._in_thread(
            spec,
            plan,
            lambda report: self.runner.destroy(self._stack(spec), self._program(plan), report, self.recover),
            progress,
        )

    async def health(self, spec: ClusterSpec) -> list[str]:
        """What is wrong with the stack as the cloud has it. Its compute nodes are the floor's: those of an
        elastic cluster above the floor are the head node's, up only for jobs (none at all without a floor)."""
        plan = self._plan(spec)
        current = await asyncio.to_thread(self.runner.refresh, self._stack(spec), self._program(plan))
        missing = [key for key in ("headNode", "nodeIds", "storageId") if current.get(key) in (None, "")]
        problems = [f"the stack has no {key}" for key in missing]
        nodes = len(current.get("nodeIds") or [])
        if nodes != spec.floor:
            floor = f"the floor's {spec.floor}" if plan.elastic else str(spec.floor)
            problems.append(f"{nodes} of {floor} compute nodes exist")
        return problems

    async def install_tool(self, spec: ClusterSpec, tool: ToolSpec, progress: Progress) -> None:
        await self._apply(spec, progress)  # the spec lists the tool: the update adds its install command

    async def start_service(
        self, spec: ClusterSpec, service: ServiceSpec, secret: ServiceSecret, progress: Progress
    ) -> dict[str, Any]:
        outputs = await self._apply(spec, progress)
        return dict(outputs["services"][service.name])

    async def stop_service(self, spec: ClusterSpec, service: ServiceSpec, progress: Progress) -> None:
        without = replace(
            spec,
            services=tuple(s for s in spec.services if s.name != service.name),
            secrets={name: s for name, s in spec.secrets.items() if name != service.name},
        )
        await self._apply(without, progress)

    async def drain(self, spec: ClusterSpec, outputs: dict[str, Any], nodes: list[str]) -> list[str]:
        """A stack update with the drain command for `nodes` (infra/clouds/common.py); returns those still
        running jobs. The time of the call is in the command's triggers, so that each call runs it again."""
        if not nodes:
            return []
        draining = replace(spec, draining=tuple(nodes))
        plan = replace(self._plan(draining), drain_request=datetime.now(UTC).isoformat())
        return busy_nodes(await self._apply(draining, lambda line: None, plan))

    async def utilisation(
        self, spec: ClusterSpec, outputs: dict[str, Any], start: datetime, end: datetime
    ) -> dict[datetime, Utilisation]:
        """From the cloud's monitoring API (CloudWatch, Cloud Monitoring, Azure Monitor)."""
        config = self._plan(spec).config
        node_ids = list(outputs.get("nodeIds") or [])
        return await asyncio.to_thread(read_utilisation, self.cloud, spec.region, config, node_ids, outputs, start, end)

    async def power_changes(
        self, spec: ClusterSpec, outputs: dict[str, Any], since: datetime, until: datetime
    ) -> list[PowerChange]:
        """From the cloud's list of the cluster's instances (infra/clouds/power.py); none for a static cluster."""
        return await asyncio.to_thread(read_power, self.cloud, self._plan(spec), outputs, since, until)

    async def _apply(self, spec: ClusterSpec, progress: Progress, plan: ClusterPlan | None = None) -> dict[str, Any]:
        plan = plan or self._plan(spec)
        config = self._cloud_config(spec)
        return await self._in_thread(
            spec,
            plan,
            lambda report: self.runner.up(self._stack(spec), self._program(plan), config, report, self.recover),
            progress,
        )

    async def _in_thread(
        self, spec: ClusterSpec, plan: ClusterPlan, work: Callable[[Progress], Any], progress: Progress
    ) -> Any:
        """Run blocking Pulumi work in a thread, passing its progress back to this event loop. If the
        activity is cancelled, ask Pulumi to stop and wait for it to record what it did, then give up."""
        running = asyncio.ensure_future(asyncio.to_thread(work, threadsafe(progress)))
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            await asyncio.to_thread(self.runner.cancel, self._stack(spec), self._program(plan))
            await asyncio.wait({running})
            raise

    def _cloud_config(self, spec: ClusterSpec) -> dict[str, str]:
        if self.cloud == "aws":
            return {"aws:region": spec.region}
        if self.cloud == "gcp":
            project = self._plan(spec).config.project
            return {"gcp:region": spec.region, **({"gcp:project": project} if project else {})}
        return {}

    @staticmethod
    def _plan(spec: ClusterSpec) -> ClusterPlan:
        try:
            return ClusterPlan.of(spec)
        except ValueError as e:
            raise ProviderFailure("provision", str(e), FailureClass.CONFIGURATION) from None

    def _program(self, plan: ClusterPlan) -> Callable[[], None]:
        build = PROGRAMS[self.cloud]
        return lambda: build(plan)

    @staticmethod
    def _stack(spec: ClusterSpec) -> str:
        return stack_name(spec.tenant, spec.cluster_id)


def busy_nodes(outputs: dict[str, Any]) -> list[str]:
    """The stack's `busyNodes`, sorted: a list, or space-separated, or none (a stack made before drains)."""
    busy = outputs.get("busyNodes") or []
    return sorted(busy.split() if isinstance(busy, str) else busy)
