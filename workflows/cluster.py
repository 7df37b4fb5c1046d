"""The cluster workflow: provisions a cluster through its provider, keeps the step log, and then
stays alive for later operations on the cluster, continuing as new before its history grows large."""

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.clusters import ClusterActivities
    from hpcinfra.messages import ClusterInput, ClusterRef, ClusterState, HealthReport, StatusChange, StepRecord

DB_WRITE = dict(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
)
PROVIDER_RUN = dict(
    start_to_close_timeout=timedelta(hours=2),
    heartbeat_timeout=timedelta(minutes=1),
    retry_policy=RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(minutes=1)),
)


@workflow.defn(name="Cluster")
class ClusterWorkflow:
    @workflow.init
    def __init__(self, input: ClusterInput) -> None:
        self._cluster_id = input.cluster_id
        self._state = input.state
        # Operations on the cluster run one at a time.
        self._operating = asyncio.Lock()

    @workflow.run
    async def run(self, input: ClusterInput) -> ClusterState:
        if self._state.status == "pending":
            async with self._operating:
                await self._provision()
        await workflow.wait_condition(lambda: self._history_is_long(input.history_limit))
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(ClusterInput(self._cluster_id, self._state, input.history_limit))

    @workflow.query(name="state")
    def state(self) -> ClusterState:
        return self._state

    @workflow.update(name="check_health")
    async def check_health(self) -> HealthReport:
        """Ask the provider whether every node is still up; the answer goes to the step log."""
        async with self._operating:
            self._state.health_checks += 1
            return await self._health_check()

    @check_health.validator
    def _validate_check_health(self) -> None:
        if self._state.status != "available":
            raise ValueError(f"the cluster is {self._state.status}; only an available cluster can be checked")

    async def _provision(self) -> None:
        await self._set_status("provisioning")
        await self._step("provision", "started", "creating network, nodes and storage")
        try:
            outcome = await workflow.execute_activity_method(
                ClusterActivities.provision,
                ClusterRef(self._cluster_id),
                **PROVIDER_RUN,
            )
        except ActivityError as e:
            step, reason = _failure(e, "provision")
            await self._step(step, "failed", reason)
            await self._set_status("error", reason)
            return
        await self._step("provision", "succeeded", outcome.summary)

        report = await self._health_check()
        if not report.healthy:
            await self._set_status("error", f"health check failed: {report.message}")
            return
        await self._set_status("available")

    async def _health_check(self) -> HealthReport:
        await self._step("health-check", "started", "asking the provider")
        report = await workflow.execute_activity_method(
            ClusterActivities.check_health, ClusterRef(self._cluster_id), **PROVIDER_RUN
        )
        await self._step("health-check", "succeeded" if report.healthy else "failed", report.message)
        return report

    async def _set_status(self, status: str, reason: str | None = None) -> None:
        change = StatusChange(self._cluster_id, str(workflow.uuid4()), status, reason, workflow.now())
        await workflow.execute_activity_method(ClusterActivities.set_status, change, **DB_WRITE)
        self._state.status = status
        self._state.status_reason = reason

    async def _step(self, step: str, status: str, message: str) -> None:
        record = StepRecord(self._cluster_id, str(workflow.uuid4()), step, status, message, workflow.now())
        await workflow.execute_activity_method(ClusterActivities.record_step, record, **DB_WRITE)

    def _history_is_long(self, limit: int) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() >= limit


def _failure(error: ActivityError, default_step: str) -> tuple[str, str]:
    """The step that failed and a reason a person can act on, from an activity's failure."""
    cause = error.cause
    if isinstance(cause, ApplicationError):
        step = str(cause.details[0]) if cause.details else default_step
        return step, cause.message
    return default_step, str(cause or error)
