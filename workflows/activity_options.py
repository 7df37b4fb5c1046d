"""How long activities may take and how they are retried, shared by the workflows.

Database writes get a start-to-close timeout longer than the database's own lock wait (see
core/db.py), so an attempt fails on its own before Temporal gives up on it and cannot commit late.
"""

from datetime import timedelta

from temporalio.common import RetryPolicy

# Writes nobody waits on: retried until the database takes them.
DB_WRITE = dict(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
)
# Writes an API call waits on (a decision, a new tool): a few tries, then the caller is told.
AWAITED_WRITE = dict(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(maximum_attempts=3, maximum_interval=timedelta(seconds=2)),
)
# Provider runs heartbeat. Only failures of a retryable class (provider outage, timeout) are retried.
PROVIDER_RUN = dict(
    start_to_close_timeout=timedelta(hours=2),
    heartbeat_timeout=timedelta(minutes=1),
    retry_policy=RetryPolicy(
        maximum_attempts=4, initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1)
    ),
)
# Compensation and teardown must finish, or the cluster keeps costing: retry for a long time.
TEARDOWN = dict(
    start_to_close_timeout=timedelta(hours=2),
    heartbeat_timeout=timedelta(minutes=1),
    retry_policy=RetryPolicy(maximum_attempts=50, maximum_interval=timedelta(minutes=5)),
)
