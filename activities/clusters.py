"""Activities of the cluster workflow: the step log, statuses, and provider runs (provision, health,
installs, services, teardown). Provider failures become `ApplicationError`s of type "ProviderFailure"
whose detail is a FailureDetail (step, failure class); only the retryable classes are retried by Temporal."""

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core import catalog
from core.catalog import NODE_TYPES, SERVICES
from core.credentials import CredentialBox, generate_password
from core.db import transaction
from core.enums import ClusterStatus, ServiceStatus, ToolStatus
from core.messages import (
    INSTALL_STEP,
    PROVIDER_FAILURE,
    AddService,
    AddTool,
    ClusterRef,
    FailureDetail,
    HealthReport,
    ItemFailed,
    ItemRef,
    Lease,
    LeaseExtension,
    LeaseNotice,
    Operation,
    PendingInstalls,
    ProvisionOutcome,
    Registration,
    ResizeAsk,
    ResizeRef,
    ServiceRequest,
    StatusChange,
    StepOutcome,
    StepRecord,
    ToolRequest,
)
from core.models import CloudProvider, Cluster, ClusterEvent, ClusterService, ClusterTool, Tenant, User, utcnow
from core.providers import (
    SERVICE_USER,
    ClusterSpec,
    FailureClass,
    Progress,
    Provider,
    ProviderFailure,
    ProviderUnavailable,
    Scaling,
    ServiceSecret,
    ServiceSpec,
    ToolSpec,
)
from core.refusals import Refused
from infra.providers import ProviderSettings, get_provider, refuse_unallowed_account
from services import audit, clusters, credits, nodes
from services.leases import LeasePolicy
from services.outbox import CLUSTER_EVENTS, Outbox, cluster_changed, install_finished

T = TypeVar("T")

HEARTBEAT_EVERY = timedelta(seconds=5)
STEP_CHARS = ClusterEvent.step.type.length


class ClusterActivities:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        credentials: CredentialBox,
        providers: ProviderSettings,
        webhooks: Outbox | None = None,
        min_runway_hours: float = 0,
        leases: LeasePolicy | None = None,
    ) -> None:
        self.sessions = sessions
        self.credentials = credentials
        self.providers = providers
        # Tells the tenant's webhooks of statuses and finished installs, with the transaction that writes them.
        self.webhooks = webhooks
        # The budget guard (services/credits.py shortfall) for what raises a cluster's rate: a retry, a
        # service or a priced tool added; 0 turns it off.
        self.min_runway_hours = min_runway_hours
        # The default lease a cluster gets once provisioned, the longest a CAD manager may extend to, the warning.
        self.leases = leases or LeasePolicy()

    # --- the step log and statuses -----------------------------------------------------------

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
            self._write_status(session, find_cluster(session, change.cluster_id), change)

    @activity.defn(name="AdmitClusterRetry")
    def admit_retry(self, change: StatusChange) -> None:
        """A cluster in error provisioned again: `set_status` once the budget guard lets its rate start
        counting again, in the same transaction (so two retries, or a retry and an approval, cannot both
        count on the same balance). A refusal is a Conflict. An attempt after one that committed finds the
        cluster no longer in error and writes the same change again (the step log keeps one line of it)."""
        with transaction(self.sessions) as session:
            cluster = find_cluster(session, change.cluster_id)
            if cluster.status == ClusterStatus.ERROR:
                self._guard(session, cluster.tenant_id, credits.rate_of(cluster), "the cluster")
            self._write_status(session, cluster, change)

    def _write_status(self, session: Session, cluster: Cluster, change: StatusChange) -> None:
        # Metering follows availability (see services/metering.py).
        if change.status == ClusterStatus.AVAILABLE:
            cluster.metering_from, cluster.metering_to = change.time, None
            nodes.came_up(session, cluster, change.time)
        elif cluster.status == ClusterStatus.AVAILABLE:
            cluster.metering_to = change.time
            nodes.went_away(session, cluster, change.time)
        cluster.status = change.status
        cluster.status_reason = change.reason
        message = change.reason or f"cluster is {change.status}"
        _log_step(session, uuid.UUID(change.key), change.cluster_id, "status", change.status, message, change.time)
        if change.status in CLUSTER_EVENTS:
            self._tell(session, cluster.tenant_id, CLUSTER_EVENTS[change.status], cluster_changed(cluster), change.key)

    @activity.defn(name="MarkItemFailed")
    def mark_item_failed(self, failure: ItemFailed) -> None:
        with transaction(self.sessions) as session:
            item = _item(session, failure.kind, failure.item_id)
            failed = ToolStatus.FAILED if failure.kind == "tool" else ServiceStatus.FAILED
            item.status, item.status_reason = failed, failure.reason
            _log_step(
                session,
                uuid.UUID(failure.key),
                failure.cluster_id,
                failure.step,
                "failed",
                failure.reason,
                failure.time,
            )
            tenant_id = find_cluster(session, failure.cluster_id).tenant_id
            data = install_finished(failure.cluster_id, failure.kind, item, failure.reason)
            self._tell(session, tenant_id, "install.finished", data, failure.key)

    # --- leases ------------------------------------------------------------------------------

    @activity.defn(name="ExtendClusterLease")
    def extend_lease(self, extension: LeaseExtension) -> Lease:
        """Move the lease's end to `extension.until`, if its actor may (services/leases.py), audited and in the
        step log; a refusal is the activity's error of its kind (Invalid, NotAllowed, Conflict)."""
        with transaction(self.sessions) as session:
            cluster = find_cluster(session, extension.cluster_id)
            actor = session.get_one(User, uuid.UUID(extension.actor_id))
            if cluster.expires_at != extension.until:  # else an attempt after one that committed
                try:
                    if cluster.status != ClusterStatus.AVAILABLE:
                        raise Refused(
                            "Conflict",
                            f"the cluster is {cluster.status}; only an available cluster's lease is extended",
                        )
                    self._leases_of(session, cluster).require_extension(cluster.expires_at, extension.until, actor)
                except Refused as e:
                    raise ApplicationError(e.message, type=e.kind, non_retryable=True) from None
                cluster.expires_at = extension.until
                audit.record(
                    session, cluster.tenant_id, actor.id, "cluster.extend", f"cluster {cluster.id}",
                    extension.source, until=extension.until.isoformat(),
                )  # fmt: skip
                message = f"lease extended to {extension.until.isoformat()} by {actor.email}"
                _log_step(
                    session,
                    uuid.UUID(extension.key),
                    extension.cluster_id,
                    "lease",
                    "extended",
                    message,
                    extension.time,
                )
            return self.leases.lease(cluster.expires_at)

    @activity.defn(name="NoteClusterLease")
    def note_lease(self, notice: LeaseNotice) -> None:
        """A lease about to end (in the step log, and cluster.expiring for the tenant's webhooks) or ended."""
        with transaction(self.sessions) as session:
            cluster = find_cluster(session, notice.cluster_id)
            end = notice.expires_at.isoformat()
            if notice.ending:
                message = (
                    f"the lease ends at {end}; extend it (POST /clusters/{{clusterId}}/extend) to keep the cluster"
                )
                self._tell(
                    session,
                    cluster.tenant_id,
                    "cluster.expiring",
                    {**cluster_changed(cluster), "expiresAt": end},
                    notice.key,
                )
            else:
                message = f"the lease ended at {end}: tearing the cluster down"
            _log_step(
                session,
                uuid.UUID(notice.key),
                notice.cluster_id,
                "lease",
                "ending" if notice.ending else "ended",
                message,
                notice.time,
            )

    # --- resizing ----------------------------------------------------------------------------

    @activity.defn(name="AdmitClusterResize")
    def admit_resize(self, ask: ResizeAsk) -> bool:
        """Hold a resize to what its actor may ask (services/clusters.py admit_resize), audited and in the step
        log; whether there is anything to do. A refusal is the activity's error of its kind."""
        with transaction(self.sessions) as session:
            cluster = find_cluster(session, ask.cluster_id)
            actor = session.get_one(User, uuid.UUID(ask.actor_id))
            try:
                changes = clusters.admit_resize(
                    session, cluster, actor, ask.to, self.min_runway_hours, approved=ask.request_id is not None
                )
            except Refused as e:
                raise ApplicationError(e.message, type=e.kind, non_retryable=True) from None
            if changes:
                audit.record(
                    session, cluster.tenant_id, actor.id, "cluster.resize", f"cluster {cluster.id}", ask.source,
                    nodes=ask.to.number_of_nodes, min_nodes=ask.to.min_nodes, request=ask.request_id,
                )  # fmt: skip
                by = (
                    f"approved by {actor.email} in request {ask.request_id}"
                    if ask.request_id
                    else f"asked by {actor.email}"
                )
                message = f"to {ask.to.describe()}, {by}"
                _log_step(session, uuid.UUID(ask.key), ask.cluster_id, "resize", "asked", message, ask.time)
            return changes

    @activity.defn(name="DrainClusterNodes")
    async def drain_nodes(self, ref: ResizeRef) -> list[str]:
        """Before a resize, the nodes it removes and those that leave the floor (a cloud ends the machine of
        a node that is no longer always up) take no new jobs; returns those still running one."""
        spec, provider = await asyncio.to_thread(self.load, ref.cluster_id)
        outputs = await asyncio.to_thread(self._outputs, ref.cluster_id)
        to = ref.to
        leaving = spec.node_names[to.floor : spec.floor] + spec.node_names[max(spec.floor, to.number_of_nodes) :]
        return await _heartbeating(provider.drain(spec, outputs, leaving)) if leaving else []

    @activity.defn(name="ResizeCluster")
    async def resize(self, ref: ResizeRef) -> StepOutcome:
        """Bring the cluster to its new size through its provider (the nodes it loses drained first), then
        keep the size, the scaling and the nodes' power in one transaction. A retried attempt finds the
        provider already done, or finishes it."""
        spec, provider = await asyncio.to_thread(self.load, ref.cluster_id, building=True)
        to = ref.to
        scaling = None if to.min_nodes is None else Scaling(to.min_nodes, to.idle_seconds)
        resized = replace(spec, number_of_nodes=to.number_of_nodes, scaling=scaling)
        outputs = await self._run(ref.cluster_id, lambda progress: provider.up(resized, progress))
        await asyncio.to_thread(self._save_size, ref, outputs.as_dict())
        return StepOutcome(f"{to.describe()}; head node {outputs.head_node}")

    def _save_size(self, ref: ResizeRef, outputs: dict[str, Any]) -> None:
        with transaction(self.sessions) as session:
            cluster = find_cluster(session, ref.cluster_id)
            cluster.number_of_nodes = ref.to.number_of_nodes
            cluster.min_nodes, cluster.idle_seconds = ref.to.min_nodes, ref.to.idle_seconds
            cluster.outputs = outputs
            nodes.resized(session, cluster, utcnow())

    def _outputs(self, cluster_id: str) -> dict[str, Any]:
        with self.sessions() as session:
            return dict(find_cluster(session, cluster_id).outputs)

    # --- provider runs -------------------------------------------------------------------------

    @activity.defn(name="ProvisionCluster")
    async def provision(self, ref: ClusterRef) -> ProvisionOutcome:
        """Bring the cluster up through its provider. Each step the provider reports goes to the
        step log as it happens and to the heartbeat, so a stalled run is noticed and retried."""
        spec, provider = await asyncio.to_thread(self.load, ref.cluster_id, building=True)
        attempt = activity.info().attempt
        if attempt > 1:
            await asyncio.to_thread(self._progress_line, ref.cluster_id, f"provision: attempt {attempt}", "retrying")
        outputs = await self._run(ref.cluster_id, lambda progress: provider.up(spec, progress))
        lease = await asyncio.to_thread(self._save_outputs, ref.cluster_id, outputs.as_dict())
        n = spec.node_type
        summary = (
            f"{spec.number_of_nodes} x {n.name} nodes, {spec.storage_gb} GB storage; head node {outputs.head_node}"
        )
        return ProvisionOutcome(outputs=outputs.as_dict(), summary=summary, lease=lease)

    @activity.defn(name="DestroyCluster")
    async def destroy(self, ref: ClusterRef) -> StepOutcome:
        """Remove whatever the provider created for the cluster: teardown, and compensation of a failed provisioning."""
        spec, provider = await asyncio.to_thread(self.load, ref.cluster_id)
        await self._run(ref.cluster_id, lambda progress: provider.destroy(spec, progress))
        await asyncio.to_thread(self._save_outputs, ref.cluster_id, {})
        return StepOutcome("everything the provider created for the cluster is gone")

    @activity.defn(name="CheckClusterHealth")
    async def check_health(self, ref: ClusterRef) -> HealthReport:
        spec, provider = await asyncio.to_thread(self.load, ref.cluster_id)
        problems = await _heartbeating(provider.health(spec))
        if problems:
            return HealthReport(healthy=False, message="; ".join(problems))
        return HealthReport(healthy=True, message=f"all {spec.number_of_nodes} nodes healthy")

    @activity.defn(name="InstallTool")
    async def install_tool(self, ref: ItemRef) -> StepOutcome:
        tool = await asyncio.to_thread(self._mark, "tool", ref.item_id, ToolStatus.INSTALLING)
        # Loaded after: the cluster's desired state now includes this tool.
        spec, provider = await asyncio.to_thread(self.load, ref.cluster_id, building=True)
        await self._run(
            ref.cluster_id, lambda progress: provider.install_tool(spec, ToolSpec(tool.name, tool.version), progress)
        )
        summary = f"{tool.name} {tool.version} installed"
        await asyncio.to_thread(self._finished, ref, "tool", ToolStatus.INSTALLED, summary)
        return StepOutcome(summary)

    @activity.defn(name="StartService")
    async def start_service(self, ref: ItemRef) -> StepOutcome:
        """Start a service with credentials the platform generates here, inside the activity, so the
        password never passes through the workflow's history; it is stored only encrypted."""
        service, secret = await asyncio.to_thread(self._service_with_secret, ref.item_id)
        # Loaded after: the cluster's desired state now includes this service.
        spec, provider = await asyncio.to_thread(self.load, ref.cluster_id, building=True)
        endpoint = await self._run(
            ref.cluster_id, lambda progress: provider.start_service(spec, _service_spec(service), secret, progress)
        )
        summary = f"{service.name} {service.version} running at {endpoint['host']}:{endpoint['port']}"
        await asyncio.to_thread(self._finished, ref, "service", ServiceStatus.RUNNING, summary, endpoint)
        return StepOutcome(summary)

    @activity.defn(name="StopServices")
    async def stop_services(self, ref: ClusterRef) -> StepOutcome:
        """Before teardown: stop every service; what was still waiting to be installed never will be."""
        services = await asyncio.to_thread(self._services_to_stop, ref.cluster_id)
        for service in services:
            # Loaded for each: a provider that describes the whole cluster at once must not see a
            # service stopped a moment ago as still wanted.
            spec, provider = await asyncio.to_thread(self.load, ref.cluster_id)
            if service.status in (ServiceStatus.PROVISIONING, ServiceStatus.RUNNING):
                await self._run(
                    ref.cluster_id,
                    lambda progress, p=provider, c=spec, s=service: p.stop_service(c, _service_spec(s), progress),
                )
            await asyncio.to_thread(self._mark, "service", str(service.id), ServiceStatus.STOPPED)
        await asyncio.to_thread(self._abandon_tool_installs, ref.cluster_id)
        return StepOutcome(f"{len(services)} service(s) stopped")

    # --- tools and services asked for --------------------------------------------------------

    @activity.defn(name="RegisterTool")
    def register_tool(self, request: AddTool) -> Registration:
        """Record a tool on the cluster. The same tool twice is the same tool; a failed one is tried again."""
        with transaction(self.sessions) as session:
            wanted = request.tool
            _require_in_catalog(session, request.cluster_id, tools=[wanted])
            tool = session.scalar(
                select(ClusterTool).where(
                    ClusterTool.cluster_id == uuid.UUID(request.cluster_id),
                    ClusterTool.name == wanted.name,
                    ClusterTool.version == wanted.version,
                )
            )
            label = f"{wanted.name} {wanted.version}"
            if tool is not None and tool.status != ToolStatus.FAILED:
                return Registration(str(tool.id), label, tool.status)
            cluster = find_cluster(session, request.cluster_id)
            self._guard(session, cluster.tenant_id, credits.item_rate(tools=[wanted.name]), wanted.name)
            if tool is None:
                tool = ClusterTool(cluster_id=cluster.id, name=wanted.name, version=wanted.version)
                session.add(tool)
            tool.status, tool.status_reason = ToolStatus.PENDING, None
            session.flush()
            return Registration(str(tool.id), label, tool.status)

    @activity.defn(name="RegisterService")
    def register_service(self, request: AddService) -> Registration:
        """Record a service on the cluster: one of each kind. Asking again for the same version is the
        same service; a failed one may be tried again, with another version or config too."""
        with transaction(self.sessions) as session:
            wanted = request.service
            _require_in_catalog(session, request.cluster_id, services=[wanted])
            service = session.scalar(
                select(ClusterService).where(
                    ClusterService.cluster_id == uuid.UUID(request.cluster_id), ClusterService.name == wanted.name
                )
            )
            if service is not None and service.status not in (ServiceStatus.FAILED, ServiceStatus.STOPPED):
                if service.version != wanted.version:
                    raise ApplicationError(
                        f"{wanted.name} {service.version} is already on this cluster ({service.status}); "
                        "one of each service per cluster",
                        type="Conflict",
                        non_retryable=True,
                    )
                return Registration(str(service.id), f"{service.name} {service.version}", service.status)
            cluster = find_cluster(session, request.cluster_id)
            self._guard(session, cluster.tenant_id, credits.item_rate(services=[wanted.name]), wanted.name)
            if service is None:
                service = ClusterService(cluster_id=cluster.id, name=wanted.name)
                session.add(service)
            service.version, service.config = wanted.version, wanted.config
            service.status, service.status_reason, service.endpoint = ServiceStatus.PENDING, None, {}
            session.flush()
            return Registration(str(service.id), f"{service.name} {service.version}", service.status)

    @activity.defn(name="PendingInstalls")
    def pending_installs(self, ref: ClusterRef) -> PendingInstalls:
        """The tools and services of the cluster still to install (asked for with the cluster itself)."""
        with self.sessions() as session:
            cluster = find_cluster(session, ref.cluster_id)
            operations = [
                Operation("install_tool", str(t.id), f"{t.name} {t.version}")
                for t in cluster.tools
                if t.status == ToolStatus.PENDING
            ]
            operations += [
                Operation("start_service", str(s.id), f"{s.name} {s.version}")
                for s in cluster.services
                if s.status == ServiceStatus.PENDING
            ]
            return PendingInstalls(operations)

    # --- helpers -----------------------------------------------------------------------------

    async def _run(self, cluster_id: str, work: Callable[[Progress], Awaitable[T]]) -> T:
        """Run provider work, writing each line it reports to the step log (in order) and the
        heartbeat, and turning its failures into classified, never secret-bearing errors."""
        lines: asyncio.Queue[str | None] = asyncio.Queue()

        async def write_lines() -> None:
            while (line := await lines.get()) is not None:
                await asyncio.to_thread(self._progress_line, cluster_id, line, "succeeded")

        def progress(line: str) -> None:
            lines.put_nowait(line)
            activity.heartbeat(line)

        writer = asyncio.create_task(write_lines())
        try:
            return await _heartbeating(work(progress))
        except ProviderFailure as failure:
            raise ApplicationError(
                failure.message,
                FailureDetail(failure.step, str(failure.failure_class)),
                type=PROVIDER_FAILURE,
                non_retryable=not failure.failure_class.retryable,
            ) from None
        finally:
            lines.put_nowait(None)
            try:
                await writer
            except Exception:  # noqa: BLE001 - a lost progress line must not turn the run's outcome into a failure
                activity.logger.exception("a progress line of cluster %s was not written to the step log", cluster_id)

    def _progress_line(self, cluster_id: str, line: str, status: str) -> None:
        info = activity.info()
        step, _, message = line.partition(": ")
        # Keyed by run, activity and line: a retried attempt reporting the same line adds nothing.
        key = uuid.uuid5(uuid.NAMESPACE_URL, f"{info.workflow_run_id}/{info.activity_id}/{line}")
        with transaction(self.sessions) as session:
            _log_step(session, key, cluster_id, step, status, message, utcnow())

    def load(self, cluster_id: str, *, building: bool = False) -> tuple[ClusterSpec, Provider]:
        """The cluster's spec as it should be now, with its services' secrets, and its provider."""
        with self.sessions() as session:
            return self.describe(session, find_cluster(session, cluster_id), with_secrets=True, building=building)

    def describe(
        self, session: Session, cluster: Cluster, *, with_secrets: bool, building: bool = False
    ) -> tuple[ClusterSpec, Provider]:
        """The cluster's spec as it should be now, and its provider. The services' secrets are decrypted
        only `with_secrets` (installing needs them; reading utilisation does not). `building` (provisioning,
        an install) is refused in a cloud account the operator does not allow the tenant, whenever the
        provider was registered; teardown, health checks and metering are not, so that such a cluster
        can still be deleted."""
        cloud = session.get_one(CloudProvider, cluster.cloud_provider_id)
        tenant = session.get_one(Tenant, cluster.tenant_id)
        # What the cluster should have now: tools being or already installed, services being or already started.
        services = [
            s
            for s in cluster.services
            if s.status in (ServiceStatus.PROVISIONING, ServiceStatus.RUNNING) and s.credentials_encrypted
        ]
        spec = ClusterSpec(
            cluster_id=str(cluster.id),
            tenant=tenant.name,
            name=cluster.name,
            region=cloud.region,
            number_of_nodes=cluster.number_of_nodes,
            node_type=NODE_TYPES[cluster.node_type],
            storage_gb=cluster.storage_gb,
            provider_config=dict(cloud.config),
            tools=tuple(
                ToolSpec(t.name, t.version)
                for t in cluster.tools
                if t.status in (ToolStatus.INSTALLING, ToolStatus.INSTALLED)
            ),
            services=tuple(_service_spec(s) for s in services),
            secrets={s.name: self._secret(s) for s in services} if with_secrets else {},
            scaling=nodes.scaling_of(cluster),
            available_since=cluster.metering_from,
        )
        try:
            if building:
                refuse_unallowed_account(cloud.kind, spec.provider_config, tenant.name, self.providers)
            # A retried attempt may follow one that died half way: the provider clears what it left first.
            return spec, get_provider(cloud.kind, self.providers, recover=activity.info().attempt > 1)
        except ProviderUnavailable as e:
            detail = FailureDetail("provision", str(FailureClass.CONFIGURATION))
            raise ApplicationError(str(e), detail, type=PROVIDER_FAILURE, non_retryable=True) from None

    def _save_outputs(self, cluster_id: str, outputs: dict[str, Any]) -> Lease | None:
        """Keep what the provider made; returns the cluster's lease (the default one begins now if it has none)."""
        with transaction(self.sessions) as session:
            cluster = find_cluster(session, cluster_id)
            cluster.outputs = outputs
            return self._leases_of(session, cluster).started(cluster, utcnow()) if outputs else None

    def _leases_of(self, session: Session, cluster: Cluster) -> LeasePolicy:
        return self.leases.of_tenant(session.get_one(Tenant, cluster.tenant_id))

    def _mark(self, kind: str, item_id: str, status: str) -> ClusterTool | ClusterService:
        with transaction(self.sessions) as session:
            item = _item(session, kind, item_id)
            item.status, item.status_reason = status, None
            return item

    def _service_with_secret(self, service_id: str) -> tuple[ClusterService, ServiceSecret]:
        """The service, marked provisioning, with its credentials: made once, reused on every retry."""
        with transaction(self.sessions) as session:
            service = _item(session, "service", service_id)
            service.status, service.status_reason = ServiceStatus.PROVISIONING, None
            if service.credentials_encrypted is None:
                service.credentials_encrypted = self.credentials.seal(
                    {"username": SERVICE_USER, "password": generate_password()}
                )
            return service, self._secret(service)

    def _secret(self, service: ClusterService) -> ServiceSecret:
        stored = self.credentials.open(service.credentials_encrypted)
        return ServiceSecret(stored["username"], stored["password"])

    def _finished(
        self, ref: ItemRef, kind: str, status: str, summary: str, endpoint: dict[str, Any] | None = None
    ) -> None:
        """A tool or service is done: its status and its line in the step log are written together."""
        step = INSTALL_STEP[kind]
        info = activity.info()
        key = uuid.uuid5(uuid.NAMESPACE_URL, f"{info.workflow_run_id}/{info.activity_id}/{step}/succeeded")
        with transaction(self.sessions) as session:
            item = _item(session, kind, ref.item_id)
            item.status, item.status_reason = status, None
            if endpoint is not None:
                item.endpoint = endpoint
            _log_step(session, key, ref.cluster_id, step, "succeeded", summary, utcnow())
            tenant_id = find_cluster(session, ref.cluster_id).tenant_id
            self._tell(session, tenant_id, "install.finished", install_finished(ref.cluster_id, kind, item), str(key))

    def _guard(self, session: Session, tenant_id: uuid.UUID, rate: int, what: str) -> None:
        """Refuse (a Conflict) `what`, which adds `rate` to the tenant's clusters, when its credits would not last."""
        refusal = credits.shortfall(session, tenant_id, rate, self.min_runway_hours, what) if rate > 0 else None
        if refusal is not None:
            raise ApplicationError(refusal, type="Conflict", non_retryable=True)

    def _tell(self, session: Session, tenant_id: uuid.UUID, event_type: str, data: dict[str, Any], key: str) -> None:
        """The event for the tenant's webhooks (services/outbox.py), in the transaction of the act; `key`
        is the act's own (its step log key), so a retried activity tells of it once."""
        if self.webhooks is not None:
            self.webhooks.emit(session, tenant_id, event_type, data, key=f"{event_type}/{key}")

    def _abandon_tool_installs(self, cluster_id: str) -> None:
        with transaction(self.sessions) as session:
            for tool in find_cluster(session, cluster_id).tools:
                if tool.status in (ToolStatus.PENDING, ToolStatus.INSTALLING):
                    tool.status = ToolStatus.FAILED
                    tool.status_reason = "the cluster was deleted before the tool was installed"

    def _services_to_stop(self, cluster_id: str) -> list[ClusterService]:
        with self.sessions() as session:
            return [s for s in find_cluster(session, cluster_id).services if s.status != ServiceStatus.STOPPED]


def find_cluster(session: Session, cluster_id: str) -> Cluster:
    cluster = session.get(Cluster, uuid.UUID(cluster_id))
    if cluster is None:
        raise ApplicationError(f"cluster {cluster_id} does not exist", type="NotFound", non_retryable=True)
    return cluster


def _require_in_catalog(
    session: Session, cluster_id: str, tools: list[ToolRequest] = (), services: list[ServiceRequest] = ()
) -> None:
    """Refuse (Invalid) a tool or service the catalog, or the cluster's provider, does not have, or a
    service config it does not take. The API checks as much before it asks; an update sent to the
    workflow by hand (the Temporal CLI) is not checked by anyone else."""
    kind = session.get_one(CloudProvider, find_cluster(session, cluster_id).cloud_provider_id).kind
    try:
        for tool in tools:
            catalog.check_tool(tool.name, tool.version)
        for service in services:
            catalog.check_service(service.name, service.version, service.config)
        catalog.check_offered(kind, [(t.name, t.version) for t in tools], [(s.name, s.version) for s in services])
    except ValueError as e:
        raise ApplicationError(str(e), type="Invalid", non_retryable=True) from None


def _item(session: Session, kind: str, item_id: str) -> ClusterTool | ClusterService:
    item = session.get(ClusterTool if kind == "tool" else ClusterService, uuid.UUID(item_id))
    if item is None:
        raise ApplicationError(f"{kind} {item_id} does not exist", type="NotFound", non_retryable=True)
    return item


def _service_spec(service: ClusterService) -> ServiceSpec:
    return ServiceSpec(service.name, service.version, dict(service.config), SERVICES[service.name].port)


def _log_step(
    session: Session, key: uuid.UUID, cluster_id: str, step: str, status: str, message: str, time: datetime
) -> None:
    """Add a line to the step log unless a line with this key is there: a retried write adds nothing. A
    provider's step may be a resource's name, longer than the column: it is cut to fit."""
    if session.scalar(select(ClusterEvent.id).where(ClusterEvent.key == key)) is None:
        session.add(
            ClusterEvent(
                key=key,
                cluster_id=uuid.UUID(cluster_id),
                step=step[:STEP_CHARS],
                status=status,
                message=message,
                time=time,
            )
        )


async def _heartbeating(work: Awaitable[T]) -> T:
    """Await `work` while heartbeating on a timer, for providers that report no progress of their own."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY.total_seconds())
            if done:
                return task.result()
            activity.heartbeat()
    finally:
        if not task.done():
            # Cancelled: let the work stop in its own way (a provider may have to record what it did)
            # before this activity reports that it stopped.
            task.cancel()
            await asyncio.wait({task})
