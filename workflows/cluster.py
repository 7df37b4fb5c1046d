"""The cluster workflow: provisions a cluster through its provider, installs its tools and services,
tears it down on request, and keeps the step log. Operations queue up and run one at a time; the
workflow stays alive between them and continues as new before its history grows large.

A failed provisioning is compensated (whatever the provider created is destroyed) and leaves the
cluster in `error` with the step and the kind of failure; `retry` provisions it again.

Its HpcinfraStatus search attribute follows the status, and its metering starts with the tenant's and
the cluster's attributes (core/search_attributes.py); continuing as new keeps them. A run that
began before they existed replays without them (the "search-attributes" patch).
"""

import asyncio
import builtins
from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from activities.clusters import ClusterActivities
    from core import search_attributes, starts
    from core.enums import ClusterStatus, ServiceStatus, ToolStatus
    from core.messages import (
        INSTALL_STEP,
        PROVIDER_FAILURE,
        AddService,
        AddTool,
        ClusterInput,
        ClusterRef,
        ClusterState,
        FailureDetail,
        HealthReport,
        ItemFailed,
        ItemRef,
        Lease,
        LeaseExtension,
        LeaseNotice,
        Operation,
        Registration,
        ResizeAsk,
        ResizeRef,
        ServiceRequest,
        StatusChange,
        StepRecord,
        StopRequest,
        ToolRequest,
    )
    from core.refusals import as_update_failure
    from workflows.activity_options import AWAITED_WRITE, DB_WRITE, PROVIDER_RUN, TEARDOWN

DELETION = (ClusterStatus.DELETING, ClusterStatus.DELETED)
# How often a resize asks whether the nodes it removes have finished their jobs.
DRAIN_POLL = timedelta(seconds=15)


@workflow.defn(name=starts.CLUSTER_WORKFLOW)
class ClusterWorkflow:
    @workflow.init
    def __init__(self, input: ClusterInput) -> None:
        self._cluster_id = input.cluster_id
        self._tenant_id = input.tenant_id
        self._history_limit = input.history_limit
        self._state = input.state
        self._status_writes = asyncio.Lock()
        # One provider operation at a time per cluster: a health check waits for an install, and so on.
        self._provider_busy = asyncio.Lock()

    @workflow.run
    async def run(self, input: ClusterInput) -> ClusterState:
        while True:
            await self._wait_for_work(input.history_limit)
            if self._state.delete_requested:
                async with self._provider_busy:
                    await self._tear_down()
                if self._state.status == ClusterStatus.DELETED:
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    return self._state
                continue
            if self._state.queue:
                async with self._provider_busy:
                    finished = await self._run(self._state.queue[0])
                if finished:
                    self._state.queue.pop(0)
                    continue
                # Unfinished (a resize still waiting for jobs): it carries over into the new run.
            await workflow.wait_condition(workflow.all_handlers_finished)
            # The search attributes go with it (the default): the tenant, the id and the status as upserted.
            workflow.continue_as_new(ClusterInput(self._cluster_id, self._state, input.history_limit, self._tenant_id))

    async def _wait_for_work(self, history_limit: int) -> None:
        """Until there is something to do; meanwhile, the lease's warning and end come due (durable timers:
        a worker that restarts finds them; an extension moves them, as the next wait is for the new end)."""

        def ready() -> bool:
            return bool(self._state.queue) or self._state.delete_requested or self._history_is_long(history_limit)

        due = self._lease_due()
        if due is None:
            await workflow.wait_condition(ready)
            return
        if due > workflow.now():
            try:
                await workflow.wait_condition(ready, timeout=due - workflow.now())
                return
            except builtins.TimeoutError:  # the wait's (asyncio's); `TimeoutError` here is Temporal's
                pass
        await self._lease_reached()

    def _lease_due(self):
        """When the lease next asks for something (its warning, then its end); None when it does not."""
        lease = self._state.lease
        if lease is None or self._state.status != ClusterStatus.AVAILABLE or self._state.delete_requested:
            return None
        return lease.warn_at if not self._state.lease_warned and lease.warn_at < lease.expires_at else lease.expires_at

    async def _lease_reached(self) -> None:
        lease, now = self._state.lease, workflow.now()
        if now >= lease.expires_at:
            await self._note_lease(ending=False)
            await self._delete(f"the lease ended at {lease.expires_at.isoformat()}")
        elif not self._state.lease_warned and now >= lease.warn_at:
            self._state.lease_warned = True
            await self._note_lease(ending=True)

    async def _note_lease(self, *, ending: bool) -> None:
        notice = LeaseNotice(
            self._cluster_id, self._state.lease.expires_at, ending, str(workflow.uuid4()), workflow.now()
        )
        await workflow.execute_activity_method(ClusterActivities.note_lease, notice, **DB_WRITE)

    # --- what callers can ask ------------------------------------------------------------------

    @workflow.query(name="state")
    def state(self) -> ClusterState:
        return self._state

    @workflow.update(name="add_tool")
    async def add_tool(self, tool: ToolRequest) -> Registration:
        """Record a tool and queue its installation; the same tool again changes nothing."""
        registration = await self._register(ClusterActivities.register_tool, AddTool(self._cluster_id, tool))
        self._enqueue(Operation("install_tool", registration.item_id, registration.label), registration.status)
        return registration

    @workflow.update(name="add_service")
    async def add_service(self, service: ServiceRequest) -> Registration:
        registration = await self._register(ClusterActivities.register_service, AddService(self._cluster_id, service))
        self._enqueue(Operation("start_service", registration.item_id, registration.label), registration.status)
        return registration

    async def _register(self, activity, request: AddTool | AddService) -> Registration:
        try:
            registration = await workflow.execute_activity_method(activity, request, **AWAITED_WRITE)
        except ActivityError as e:
            raise as_update_failure(e, "the tool or service") from e
        if self._state.delete_requested:
            # The deletion began while the item was being recorded: it will never be installed.
            kind = "tool" if isinstance(request, AddTool) else "service"
            await self._item_failed(kind, registration.item_id, INSTALL_STEP[kind], "the cluster is being deleted")
            raise ApplicationError("the cluster is being deleted; it takes no more tools or services", type="Conflict")
        return registration

    def _enqueue(self, operation: Operation, status: str) -> None:
        """Queue an install for an item still `pending`, unless it is queued (or running) already:
        a registration retried after its first attempt committed, or an item also found among the
        cluster's pending installs, is installed once."""
        if status in (ToolStatus.PENDING, ServiceStatus.PENDING) and all(
            queued.item_id != operation.item_id for queued in self._state.queue
        ):
            self._state.queue.append(operation)

    @add_tool.validator
    def _validate_add_tool(self, tool: ToolRequest) -> None:
        self._require_available("tools")

    @add_service.validator
    def _validate_add_service(self, service: ServiceRequest) -> None:
        self._require_available("services")

    @workflow.update(name="extend")
    async def extend(self, extension: LeaseExtension) -> Lease:
        """Move the lease's end later (the activity holds it to what the caller may set); its warning
        is given again before the new end."""
        try:
            lease = await workflow.execute_activity_method(ClusterActivities.extend_lease, extension, **AWAITED_WRITE)
        except ActivityError as e:
            raise as_update_failure(e, "the extension") from e
        if not self._state.delete_requested:
            self._state.lease, self._state.lease_warned = lease, False
        return lease

    @extend.validator
    def _validate_extend(self, extension: LeaseExtension) -> None:
        if self._state.delete_requested or self._state.status != ClusterStatus.AVAILABLE:
            raise ValueError(f"the cluster is {self._state.status}; only an available cluster's lease can be extended")

    @workflow.update(name="resize")
    async def resize(self, ask: ResizeAsk) -> bool:
        """Queue a resize (the activity holds it to what its actor may ask); whether it changes anything."""
        try:
            changes = await workflow.execute_activity_method(ClusterActivities.admit_resize, ask, **AWAITED_WRITE)
        except ActivityError as e:
            raise as_update_failure(e, "the resize") from e
        if changes and not self._state.delete_requested:
            self._state.queue.append(Operation("resize", label=ask.to.describe(), resize=ask.to))
        return changes

    @resize.validator
    def _validate_resize(self, ask: ResizeAsk) -> None:
        if self._state.delete_requested or self._state.status != ClusterStatus.AVAILABLE:
            raise ValueError(f"the cluster is {self._state.status}; only an available cluster can be resized")

    @workflow.signal(name="resize_approved")
    async def resize_approved(self, ask: ResizeAsk) -> None:
        """A resize approved in a request (its workflow sends it). A signal cannot be refused: one that does
        not hold (the cluster is no longer available) is a failed line in the step log."""
        try:
            self._validate_resize(ask)
            await self.resize(ask)
        except (ValueError, ApplicationError) as e:
            await self._step("resize", "failed", f"the resize approved in request {ask.request_id} was not made: {e}")

    @workflow.update(name="delete")
    async def delete(self) -> None:
        """Mark the cluster `deleting`; the teardown starts once the operation under way (if any) has
        finished. Deleting a cluster that is already being deleted changes nothing."""
        await self._delete()

    @workflow.signal(name="stop")
    async def stop(self, request: StopRequest) -> None:
        """A teardown the platform asks for itself (the tenant's credits are spent and its policy is to
        stop clusters): as a delete, with the reason on the status and in the step log."""
        await self._delete(request.reason)

    async def _delete(self, reason: str | None = None) -> None:
        if self._state.delete_requested:
            return
        self._state.delete_requested = True  # at once: no new operation is accepted from here on
        await self._set_status(ClusterStatus.DELETING, reason)

    @workflow.update(name="retry")
    async def retry(self) -> None:
        """Provision a cluster in `error` again, without a new approval, if the tenant's credits would last
        (the budget guard, as for an approval; a refusal leaves the cluster in error)."""
        if self._state.status != ClusterStatus.ERROR:
            raise ApplicationError(f"the cluster is {self._state.status} already", type="Conflict")
        # Runs from before the guard replay as they ran: their retry was a plain status change.
        guarded = workflow.patched("retry-budget-guard")
        await self._set_status(ClusterStatus.PENDING, "provisioning again on request", admit=guarded)
        self._state.queue.append(Operation("provision"))

    @retry.validator
    def _validate_retry(self) -> None:
        if self._state.status != ClusterStatus.ERROR or self._state.delete_requested:
            raise ValueError(f"only a cluster in error can be retried; this one is {self._state.status}")

    @workflow.update(name="check_health")
    async def check_health(self) -> HealthReport:
        """Ask the provider whether every node is still up; the answer goes to the step log."""
        async with self._provider_busy:
            return await self._health_check()

    @check_health.validator
    def _validate_check_health(self) -> None:
        self._require_available("health checks")

    def _require_available(self, what: str) -> None:
        if self._state.delete_requested:
            raise ValueError(f"the cluster is being deleted; it takes no more {what}")
        if self._state.status != ClusterStatus.AVAILABLE:
            raise ValueError(f"the cluster is {self._state.status}; {what} can be added once it is available")

    # --- operations ----------------------------------------------------------------------------

    async def _run(self, operation: Operation) -> bool:
        """Run an operation; whether it finished (a resize waiting for jobs may carry over to the next run)."""
        if operation.kind == "provision":
            await self._provision()
        elif operation.kind == "install_tool":
            await self._install("tool", ClusterActivities.install_tool, operation)
        elif operation.kind == "start_service":
            await self._install("service", ClusterActivities.start_service, operation)
        elif operation.kind == "resize":
            return await self._resize(operation)
        return True

    async def _resize(self, operation: Operation) -> bool:
        """Drain the nodes a resize removes, waiting (a durable timer) while they still run jobs, then resize
        through the provider. A failure leaves the cluster available at its size before; a deletion asked for
        meanwhile ends the wait."""
        ref = ResizeRef(self._cluster_id, operation.resize)
        waiting_for: list[str] = []
        try:
            while busy := await workflow.execute_activity_method(ClusterActivities.drain_nodes, ref, **PROVIDER_RUN):
                if self._state.delete_requested:
                    return True
                if busy != waiting_for:
                    waiting_for = busy
                    await self._step("resize", "waiting", f"{', '.join(busy)} still running jobs: removed once idle")
                if self._history_is_long(self._history_limit):
                    return False
                try:
                    await workflow.wait_condition(lambda: self._state.delete_requested, timeout=DRAIN_POLL)
                except builtins.TimeoutError:
                    pass
            if self._state.delete_requested:
                return True
            await self._step("resize", "started", operation.label)
            outcome = await workflow.execute_activity_method(ClusterActivities.resize, ref, **PROVIDER_RUN)
        except ActivityError as e:
            await self._step("resize", "failed", _failure(e, "resize").describe("the resize"))
            return True
        await self._step("resize", "succeeded", outcome.summary)
        return True

    async def _provision(self) -> None:
        ref = ClusterRef(self._cluster_id)
        await self._set_status(ClusterStatus.PROVISIONING)
        await self._step("provision", "started", "creating network, nodes and storage")
        try:
            outcome = await workflow.execute_activity_method(ClusterActivities.provision, ref, **PROVIDER_RUN)
        except ActivityError as e:
            failure = _failure(e, "provision")
            reason = failure.describe("provisioning")
            await self._step(failure.step, "failed", reason)
            await self._fail_provisioning(reason)
            return
        await self._step("provision", "succeeded", outcome.summary)
        self._state.lease = outcome.lease

        report = await self._health_check()
        if not report.healthy:
            await self._fail_provisioning(f"provisioning failed at step health-check: {report.message}")
            return
        await self._set_status(ClusterStatus.AVAILABLE)
        await self._start_metering()
        pending = await workflow.execute_activity_method(ClusterActivities.pending_installs, ref, **DB_WRITE)
        for operation in pending.operations:
            pending_status = ToolStatus.PENDING if operation.kind == "install_tool" else ServiceStatus.PENDING
            self._enqueue(operation, pending_status)

    async def _start_metering(self) -> None:
        """Meter the cluster while it is available (workflows/metering.py); the metering outlives this
        run (continue-as-new) and ends by itself. Clusters available before metering existed are
        metered from the worker's start (services/resume.py)."""
        if not workflow.patched("metering"):
            return  # a history from before metering existed replays as it ran
        # Perhaps still metering from an earlier time it was available.
        await starts.start_child(starts.metering(self._cluster_id, self._tenant_id), labelled=_labelled())

    async def _fail_provisioning(self, reason: str) -> None:
        """Compensate a failed provisioning, so that nothing of it keeps costing, then report `error`."""
        await self._step("compensate", "started", "removing whatever was created")
        try:
            outcome = await workflow.execute_activity_method(
                ClusterActivities.destroy, ClusterRef(self._cluster_id), **TEARDOWN
            )
        except ActivityError as e:
            failure = _failure(e, "compensate").describe("cleaning up")
            await self._step("compensate", "failed", failure)
            reason += f"; {failure}; resources may remain: delete the cluster to try again"
        else:
            await self._step("compensate", "succeeded", outcome.summary)
        await self._set_status(ClusterStatus.ERROR, reason)

    async def _install(self, kind: str, activity, operation: Operation) -> None:
        """One tool or service, as its own step; a failure marks that item failed and leaves the rest alone."""
        step = INSTALL_STEP[kind]
        await self._step(step, "started", operation.label)
        ref = ItemRef(self._cluster_id, operation.item_id)
        try:
            # On success the activity writes the item's status and its "succeeded" line together.
            await workflow.execute_activity_method(activity, ref, **PROVIDER_RUN)
        except ActivityError as e:
            await self._item_failed(kind, operation.item_id, step, _failure(e, step).describe(operation.label))

    async def _tear_down(self) -> None:
        ref = ClusterRef(self._cluster_id)
        self._state.queue.clear()
        try:
            outcome = await workflow.execute_activity_method(ClusterActivities.stop_services, ref, **TEARDOWN)
            await self._step("stop-services", "succeeded", outcome.summary)
            await self._step("teardown", "started", "removing network, nodes and storage")
            outcome = await workflow.execute_activity_method(ClusterActivities.destroy, ref, **TEARDOWN)
        except ActivityError as e:
            failure = _failure(e, "teardown")
            reason = failure.describe("deletion")
            await self._step(failure.step, "failed", reason)
            # Still alive, so that deleting again tries again.
            self._state.delete_requested = False
            await self._set_status(ClusterStatus.ERROR, f"{reason}; delete the cluster again to retry")
            return
        await self._step("teardown", "succeeded", outcome.summary)
        # Why it went, if the platform took it down (its lease ended, the tenant's credits were spent).
        await self._set_status(ClusterStatus.DELETED, self._state.status_reason)

    async def _health_check(self) -> HealthReport:
        await self._step("health-check", "started", "asking the provider")
        try:
            report = await workflow.execute_activity_method(
                ClusterActivities.check_health, ClusterRef(self._cluster_id), **PROVIDER_RUN
            )
        except ActivityError as e:
            report = HealthReport(healthy=False, message=_failure(e, "health-check").describe("the health check"))
        await self._step("health-check", "succeeded" if report.healthy else "failed", report.message)
        return report

    async def _item_failed(self, kind: str, item_id: str, step: str, reason: str) -> None:
        failed = ItemFailed(self._cluster_id, kind, item_id, reason, step, str(workflow.uuid4()), workflow.now())
        await workflow.execute_activity_method(ClusterActivities.mark_item_failed, failed, **DB_WRITE)

    async def _set_status(self, status: str, reason: str | None = None, *, admit: bool = False) -> None:
        """Change the status: at once in the workflow (what updates are validated against), then in
        the database. Writes go one at a time, in the order the changes were made. With `admit` (a
        retry), the database may refuse the change (the budget guard): the status goes back to what it
        was and the refusal is raised, for the update to answer with."""
        if self._state.delete_requested and status not in DELETION:
            return  # the cluster is going away: an operation finishing now does not bring it back
        before = (self._state.status, self._state.status_reason)
        self._show_status(status, reason)
        change = StatusChange(self._cluster_id, str(workflow.uuid4()), status, reason, workflow.now())
        async with self._status_writes:
            if not admit:
                await workflow.execute_activity_method(ClusterActivities.set_status, change, **DB_WRITE)
                return
            try:
                await workflow.execute_activity_method(ClusterActivities.admit_retry, change, **AWAITED_WRITE)
            except ActivityError as e:
                self._show_status(*before)
                raise as_update_failure(e, "the retry") from e

    def _show_status(self, status: str, reason: str | None) -> None:
        self._state.status, self._state.status_reason = status, reason
        if _labelled():
            workflow.upsert_search_attributes([search_attributes.STATUS.value_set(status)])

    async def _step(self, step: str, status: str, message: str) -> None:
        record = StepRecord(self._cluster_id, str(workflow.uuid4()), step, status, message, workflow.now())
        await workflow.execute_activity_method(ClusterActivities.record_step, record, **DB_WRITE)

    def _history_is_long(self, limit: int) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() >= limit


def _labelled() -> bool:
    """Whether this run keeps its search attributes current and gives them to its metering: false only
    for a run that had changed its status before the change, replayed (its history has no upsert)."""
    return workflow.patched("search-attributes")


@dataclass
class Failure:
    step: str
    failure_class: str
    message: str
    retried: bool

    def describe(self, what: str) -> str:
        retried = "; retried automatically, still failing" if self.retried else ""
        return f"{what} failed at step {self.step} ({self.failure_class}{retried}): {self.message}"


def _failure(error: ActivityError, default_step: str) -> Failure:
    """Which step failed, which kind of failure it was, and whether it was retried automatically."""
    cause = error.cause
    if isinstance(cause, ApplicationError) and cause.type == PROVIDER_FAILURE:
        detail = FailureDetail.of(cause.details, default_step)
        return Failure(detail.step, detail.failure_class, cause.message, retried=not cause.non_retryable)
    if isinstance(cause, TimeoutError):
        return Failure(default_step, "timeout", "the provider did not answer in time", retried=True)
    # Anything else is a fault of ours, not of the input or the cloud: its text (which may name database
    # details) stays in the worker's log and the workflow's history, for operators.
    return Failure(
        default_step, "internal error", "an unexpected error; operators find it in the worker log", retried=False
    )
