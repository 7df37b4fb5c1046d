"""hpcinfra's shared core: settings, the database and its models, identities, and the
dataclasses that travel between the API, the workflows and the activities."""
