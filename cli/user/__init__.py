"""The user commands of `hpcinfra`: requests, clusters and analytics, over the HTTP API only (unlike
the administration commands, which use the database). `register` adds them to the main command."""

import typer

from cli.user import analytics, cluster_requests, clusters


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_requests.app, name="requests")
    app.add_typer(clusters.app, name="clusters")
    app.command("analytics")(analytics.analytics)
