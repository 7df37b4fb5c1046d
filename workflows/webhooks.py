"""The webhook delivery workflow: one per delivery (`webhook-delivery-<delivery id>`), started after the
act's transaction has committed (services/outbox.py), so no other workflow ever waits for a receiver.

It posts the delivery, retrying with exponential backoff (the retry policy of its input) until the
receiver accepts it or the time to give up has passed; then it records the failure.
"""

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, FailureError

with workflow.unsafe.imports_passed_through():
    from activities.webhooks import WebhookActivities
    from core.starts import DELIVERY_WORKFLOW
    from core.webhooks import DeliveryFailure, DeliveryInput, DeliveryOutcome, DeliveryRef
    from workflows.activity_options import DB_WRITE

# Longer than any receiver's timeout (at most 60 s, see core/settings.py) plus the database writes.
ATTEMPT_TIMEOUT = timedelta(seconds=90)


@workflow.defn(name=DELIVERY_WORKFLOW)
class WebhookDeliveryWorkflow:
    @workflow.run
    async def run(self, input: DeliveryInput) -> DeliveryOutcome:
        ref = DeliveryRef(input.delivery_id)
        try:
            return await workflow.execute_activity_method(
                WebhookActivities.deliver,
                ref,
                start_to_close_timeout=ATTEMPT_TIMEOUT,
                schedule_to_close_timeout=timedelta(seconds=input.give_up_after_seconds),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=input.retry_initial_seconds),
                    backoff_coefficient=2.0,
                    maximum_interval=timedelta(seconds=max(input.retry_maximum_seconds, input.retry_initial_seconds)),
                ),
            )
        except ActivityError as e:
            reason = e.cause.message if isinstance(e.cause, FailureError) else str(e)
            waited = timedelta(seconds=round(input.give_up_after_seconds))
            return await workflow.execute_activity_method(
                WebhookActivities.record_failure,
                DeliveryFailure(input.delivery_id, f"given up after {waited} (h:mm:ss): {reason}"),
                **DB_WRITE,
            )
