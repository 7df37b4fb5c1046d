"""The domain: every write the platform makes (requests, clusters, credits, metering, accounts,
audit, the webhook outbox) and the reads that need more than a query, called by the API's routes
and by the activities alike. It imports the core and the providers (infra), never the API, the
workflows or the activities."""
