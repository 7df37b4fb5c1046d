"""The core every other layer stands on: settings, the database and its models, the status and role
enums, the catalog, the provider-neutral interface and kinds, the dataclasses that travel between the
API, the workflows and the activities, where each workflow starts, the refusals and their HTTP
status, credentials, the webhook contract, logs/metrics/traces and the connection to Temporal.
Nothing here imports another layer."""
