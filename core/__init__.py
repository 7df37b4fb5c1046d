"""The core every other layer stands on: settings, the database and its models, the catalog, the
provider-neutral types, the dataclasses that travel between the API, the workflows and the
activities, and the connection to Temporal. Nothing here imports another layer."""
