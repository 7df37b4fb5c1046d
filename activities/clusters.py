"""Activities of the cluster workflow: the step log, status changes, and provider runs."""

import asyncio
import uuid
from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from hpcinfra.db import transaction
from hpcinfra.messages import ClusterRef, HealthReport, ProvisionOutcome, StatusChange, StepRecord
from hpcinfra.models import CloudProvider, Cluster, ClusterEvent, Tenant, utcnow
from infra.catalog import NODE_TYPES
from infra.providers import get_provider
from infra.providers.base import ClusterSpec, Provider, ProviderUnavailable, ProvisioningFailed

T = TypeVar("T")

HEARTBEAT_EVERY = timedelta(seconds=5)


class ClusterActivities:
    def __init__(self, sessions: sessionmaker[Session], sim_step_seconds: float) -> None:
        self.sessions = sessions
        self.sim_step_seconds = sim_step_seconds

    @activity.defn(name="RecordClusterStep")
    def record_step(self, record: StepRecord) -> None:
        with transaction(self.sessions) as session:
            _log_step(
                session,
                uuid.UUID(record.key),
                record.cluster_id,
                record.step,
                record.status,
                record.message,
                record.time,
            )

    @activity.defn(name="SetClusterStatus")
    def set_status(self, change: StatusChange) -> None:
        """The status and its line in the step log change together, so readers never see one without the other."""
        with transaction(self.sessions) as session:
            cluster = session.get(Cluster, uuid.UUID(change.cluster_id))
            if cluster is None:
                raise ApplicationError(
                    f"cluster {change.cluster_id} does not exist", type="NotFound", non_retryable=True
                )
            cluster.status = change.status
            cluster.status_reason = change.reason
            message = change.reason or f"cluster is {change.status}"
            _log_step(session, uuid.UUID(change.key), change.cluster_id, "status", change.status, message, change.time)

    @activity.defn(name="ProvisionCluster")
    async def provision(self, ref: ClusterRef) -> ProvisionOutcome:
        """Bring the cluster up through its provider. Each step the provider reports goes to the
        step log as it happens and to the heartbeat, so a stalled run is noticed and retried."""
        spec, provider = await asyncio.to_thread(self._load, ref.cluster_id)
        info = activity.info()
        lines: asyncio.Queue[str | None] = asyncio.Queue()

        async def write_lines() -> None:
            # One writer, so the step log keeps the order the provider reported in.
            while (line := await lines.get()) is not None:
                step, _, message = line.partition(": ")
                # Keyed by run, activity and line: a retried attempt that reports the same step adds nothing.
                key = uuid.uuid5(uuid.NAMESPACE_URL, f"{info.workflow_run_id}/{info.activity_id}/{line}")
                await asyncio.to_thread(self._write_event, key, ref.cluster_id, step, "succeeded", message, utcnow())

        def progress(line: str) -> None:
            lines.put_nowait(line)
            activity.heartbeat(line)

        writer = asyncio.create_task(write_lines())
        try:
            outputs = await _heartbeating(provider.up(spec, progress))
        except ProvisioningFailed as failure:
            raise ApplicationError(
                f"provisioning failed at step {failure.step}: {failure.message}",
                failure.step,
                type="ProvisioningFailed",
                non_retryable=True,
            ) from None
        finally:
            lines.put_nowait(None)
            await writer
        await asyncio.to_thread(self._save_outputs, ref.cluster_id, outputs.as_dict())
        n = spec.node_type
        summary = (
            f"{spec.number_of_nodes} x {n.name} nodes, {spec.storage_gb} GB storage; head node {outputs.head_node}"
        )
        return ProvisionOutcome(outputs=outputs.as_dict(), summary=summary)

    @activity.defn(name="CheckClusterHealth")
    async def check_health(self, ref: ClusterRef) -> HealthReport:
        spec, provider = await asyncio.to_thread(self._load, ref.cluster_id)
        outputs = await asyncio.to_thread(self._outputs, ref.cluster_id)
        problems = await _heartbeating(provider.health(spec, outputs))
        if problems:
            return HealthReport(healthy=False, message="; ".join(problems))
        return HealthReport(healthy=True, message=f"all {spec.number_of_nodes} nodes healthy")

    def _load(self, cluster_id: str) -> tuple[ClusterSpec, Provider]:
        with transaction(self.sessions) as session:
            cluster = session.get(Cluster, uuid.UUID(cluster_id))
            if cluster is None:
                raise ApplicationError(f"cluster {cluster_id} does not exist", type="NotFound", non_retryable=True)
            cloud = session.get_one(CloudProvider, cluster.cloud_provider_id)
            tenant = session.get_one(Tenant, cluster.tenant_id)
            spec = ClusterSpec(
                cluster_id=cluster_id,
                tenant=tenant.name,
                name=cluster.name,
                region=cloud.region,
                number_of_nodes=cluster.number_of_nodes,
                node_type=NODE_TYPES[cluster.node_type],
                storage_gb=cluster.storage_gb,
                provider_config=dict(cloud.config),
            )
            kind = cloud.kind
        try:
            return spec, get_provider(kind, sim_step_seconds=self.sim_step_seconds)
        except ProviderUnavailable as e:
            raise ApplicationError(str(e), type="ProviderUnavailable", non_retryable=True) from None

    def _save_outputs(self, cluster_id: str, outputs: dict) -> None:
        with transaction(self.sessions) as session:
            session.get_one(Cluster, uuid.UUID(cluster_id)).outputs = outputs

    def _outputs(self, cluster_id: str) -> dict:
        with self.sessions() as session:
            return dict(session.get_one(Cluster, uuid.UUID(cluster_id)).outputs)

    def _write_event(
        self, key: uuid.UUID, cluster_id: str, step: str, status: str, message: str, time: datetime
    ) -> None:
        with transaction(self.sessions) as session:
            _log_step(session, key, cluster_id, step, status, message, time)


def _log_step(
    session: Session, key: uuid.UUID, cluster_id: str, step: str, status: str, message: str, time: datetime
) -> None:
    """Add a line to the step log unless a line with this key is there: a retried write adds nothing."""
    if session.scalar(select(ClusterEvent.id).where(ClusterEvent.key == key)) is None:
        session.add(
            ClusterEvent(
                key=key, cluster_id=uuid.UUID(cluster_id), step=step, status=status, message=message, time=time
            )
        )


async def _heartbeating(work: Awaitable[T]) -> T:
    """Await `work` while heartbeating on a timer, for providers that report no progress of their own."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY.total_seconds())
        if done:
            return task.result()
        activity.heartbeat()
