"""The metering workflow: while its cluster is available, records its minutes once a minute.

The cluster workflow starts it when the cluster becomes available (and a worker, when it starts, for
any available cluster without one). It ends once the cluster is no longer available and every
minute it was has been recorded. A minute missed (no worker running, a collection failing and
retried) is recorded at the next collection that succeeds, which picks up where the last one stopped.
"""

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.metering import MeteringActivities
    from core import starts
    from core.messages import CollectRequest, MeteringInput, StopRequest, cluster_workflow_id

COLLECTION = dict(
    start_to_close_timeout=timedelta(minutes=2),
    # Retried until it works: whatever is missed meanwhile is recorded by the attempt that succeeds.
    retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=1)),
)
# Collect this long after each minute ends, so that it has ended by the clock of every worker and database.
SETTLE = timedelta(seconds=2)
# Collections per run before continuing as new, which keeps the history short (about 2,500 events).
COLLECTIONS_PER_RUN = 240


@workflow.defn(name=starts.METERING_WORKFLOW)
class MeteringWorkflow:
    @workflow.run
    async def run(self, input: MeteringInput) -> None:
        asked_to_stop = False
        for _ in range(COLLECTIONS_PER_RUN):
            collection = await workflow.execute_activity_method(
                MeteringActivities.collect, CollectRequest(input.cluster_id, workflow.now()), **COLLECTION
            )
            if collection.finished:
                return
            if collection.stop_reason and not asked_to_stop:
                asked_to_stop = True
                cluster = workflow.get_external_workflow_handle(cluster_workflow_id(input.cluster_id))
                try:
                    await cluster.signal("stop", StopRequest(collection.stop_reason))
                except Exception as e:  # noqa: BLE001 - no cluster workflow to stop (an operator ended it)
                    workflow.logger.warning("could not ask cluster %s to stop: %s", input.cluster_id, e)
            now = workflow.now()
            next_minute = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
            await workflow.sleep(next_minute + SETTLE - now)
        workflow.continue_as_new(input)
