"""`hpcinfra clusters ...`: the caller's clusters, their tools, services, credentials, metrics and
step log, over the HTTP API."""

import json
from typing import Annotated, Any

import typer

from cli.user import watch as watching
from cli.user.charts import moment, sparkline
from cli.user.cluster_requests import parse_spec
from cli.user.http import connect, fail
from cli.user.output import Format, OutputOption, console, details, emit, size, table, when, who

app = typer.Typer(
    help="Clusters: their tools, services, credentials, metrics and step log (over the API).", no_args_is_help=True
)

ClusterArg = Annotated[str, typer.Argument(metavar="ID", help="the cluster's id")]


def cluster_rows(clusters: list[dict[str, Any]]):
    t = table("ID", "NAME", "STATUS", "SIZE", "CREATED BY", "CREATED AT")
    for c in clusters:
        t.add_row(c["id"], c["name"], c["status"], size(c["size"]), c["createdBy"]["email"], when(c["createdAt"]))
    return t


def tool_rows(tools: list[dict[str, Any]]):
    t = table("TOOL", "VERSION", "STATUS", "REASON", title="tools")
    for tool in tools:
        t.add_row(tool["name"], tool["version"], tool["status"], tool.get("statusReason") or "")
    return t


def service_rows(services: list[dict[str, Any]]):
    # Credentials stay out of this table: `clusters credentials` shows them, and only when asked.
    t = table("SERVICE", "VERSION", "STATUS", "REASON", title="services")
    for s in services:
        t.add_row(s["name"], s["version"], s["status"], s.get("statusReason") or "")
    return t


def node_rows(nodes: list[dict[str, Any]]):
    t = table("NODE", "STATE", title="nodes")
    for node in nodes:
        t.add_row(node["name"], node["state"])
    return t


def scaling(c: dict[str, Any]) -> str:
    s = c.get("scaling")
    if not s:
        return "static: every node up while the cluster is available"
    return f"elastic: {s['minNodes']} always up, the rest powered down after {s['idleSeconds']} s idle"


def event_rows(events: list[dict[str, Any]]):
    t = table("TIME", "STEP", "STATUS", "MESSAGE", title="step log")
    for e in events:
        t.add_row(when(e["time"]), e["step"], e["status"], e["message"])
    return t


@app.command("list")
def list_clusters(
    status: Annotated[
        str | None, typer.Option(help="pending, provisioning, available, error, deleting or deleted")
    ] = None,
    limit: Annotated[int, typer.Option(help="at most this many (newest first)")] = 100,
    output: OutputOption = Format.table,
) -> None:
    """Your clusters: a CAD manager those it created, an IT manager all of its tenant's."""
    with connect() as api:
        emit(
            api.call("GET", "/clusters", params={"status": status, "limit": limit}),
            output,
            lambda cs: console().print(cluster_rows(cs)) if cs else typer.echo("no clusters"),
        )


@app.command("show")
def show_cluster(cluster_id: ClusterArg, output: OutputOption = Format.table) -> None:
    """A cluster: status, nodes, tools, services and its step log (json: the cluster as the API gives it)."""
    with connect() as api:
        response = api.call("GET", f"/clusters/{cluster_id}")
        if output is Format.json:
            return typer.echo(response.text)  # the API's answer unchanged
        c = response.json()
        events = api.pages(f"/clusters/{cluster_id}/events")
    out = console()
    outputs = c.get("outputs") or {}
    out.print(
        details(
            [
                ("id", c["id"]),
                ("name", c["name"]),
                ("status", c["status"] + (f" ({c['statusReason']})" if c.get("statusReason") else "")),
                ("size", f"{size(c['size'])}; {c['size']['nodesUp']} up now"),
                ("scaling", scaling(c)),
                ("lease ends", when(c["expiresAt"]) if c.get("expiresAt") else "never: it runs until deleted"),
                ("head node", outputs.get("headNode")),
                ("cloud provider", c["cloudProviderId"]),
                ("created by", who(c["createdBy"])),
                ("created at", when(c["createdAt"])),
                ("request", c.get("requestId")),
                ("credits per hour", (c.get("estimatedCredits") or {}).get("ratePerHour")),
            ],
            title=f"cluster {c['name']}",
        )
    )
    out.print(node_rows(c["nodes"]))
    if c["tools"]:
        out.print(tool_rows(c["tools"]))
    if c["services"]:
        out.print(service_rows(c["services"]))
    out.print(event_rows(events) if events else "step log: empty so far")


@app.command("events")
def events(cluster_id: ClusterArg, output: OutputOption = Format.table) -> None:
    """The cluster's step log: provisioning, installs and teardown, oldest first."""
    with connect() as api:
        emit(api.call("GET", f"/clusters/{cluster_id}/events", params={"limit": 500}), output,
             lambda es: console().print(event_rows(es)))  # fmt: skip


@app.command("add-tool")
def add_tool(
    cluster_id: ClusterArg,
    spec: Annotated[str, typer.Argument(metavar="NAME@VERSION", help="e.g. iverilog@12.0")],
    output: OutputOption = Format.table,
) -> None:
    """Install a tool on an available cluster (its creator); `clusters watch` follows the install."""
    tool = parse_spec(spec, "NAME@VERSION")
    with connect() as api:
        emit(api.call("POST", f"/clusters/{cluster_id}/tools", body=tool), output,
             lambda t: typer.echo(f"{t['name']} {t['version']}: {t['status']} (tool id {t['id']})"))  # fmt: skip


@app.command("add-service")
def add_service(
    cluster_id: ClusterArg,
    spec: Annotated[str, typer.Argument(metavar="NAME@VERSION", help="e.g. postgresql@16")],
    output: OutputOption = Format.table,
) -> None:
    """Start a service on an available cluster (its creator); its credentials come once it runs."""
    service = parse_spec(spec, "NAME@VERSION (a service)")
    with connect() as api:
        emit(api.call("POST", f"/clusters/{cluster_id}/services", body=service), output,
             lambda s: typer.echo(f"{s['name']} {s['version']}: {s['status']} (service id {s['id']})"))  # fmt: skip


@app.command("credentials")
def credentials(cluster_id: ClusterArg, output: OutputOption = Format.table) -> None:
    """The running services' credentials (for the cluster's creator and IT managers).

    They are secrets: this prints them on purpose, and the API's audit log records that they were shown."""
    with connect() as api:
        cluster = api.get(f"/clusters/{cluster_id}")
    services = cluster["services"]
    if output is Format.json:
        return typer.echo(json.dumps(services, indent=2))
    shown = [s for s in services if s.get("credentials")]
    if not shown:
        if not services:
            return typer.echo(f"cluster {cluster['name']} has no services")
        return typer.echo("no credentials to show: a service gets them once it is running, and only its "
                          "cluster's creator and IT managers see them")  # fmt: skip
    out = console()
    for s in shown:
        out.print(details(sorted(s["credentials"].items()), title=f"{s['name']} {s['version']} ({s['status']})"))


@app.command("extend")
def extend(
    cluster_id: ClusterArg,
    until: Annotated[str, typer.Option("--until", help="RFC 3339 time, or 8h, 2d, 1w from now")],
    output: OutputOption = Format.table,
) -> None:
    """Move the end of a cluster's lease later (its creator within the longest lease, IT managers beyond)."""
    with connect() as api:
        emit(
            api.call("POST", f"/clusters/{cluster_id}/extend", body={"until": moment(until, "--until", ahead=True)}),
            output,
            lambda c: typer.echo(f"cluster {c['name']}: its lease ends at {when(c['expiresAt'])}"),
        )


@app.command("resize")
def resize(
    cluster_id: ClusterArg,
    nodes: Annotated[int, typer.Option("--nodes", help="the most nodes the cluster has")],
    min_nodes: Annotated[
        int | None, typer.Option("--min-nodes", help="elastic: the nodes always up (with --idle-seconds)")
    ] = None,
    idle_seconds: Annotated[
        int | None, typer.Option("--idle-seconds", help="elastic: how long a node idles before it powers down")
    ] = None,
    static: Annotated[bool, typer.Option("--static", help="every node always up (no scaling)")] = False,
    output: OutputOption = Format.table,
) -> None:
    """Resize a running cluster (its creator within the self-service limit, IT managers beyond; above it file
    a request naming the cluster). Without --min-nodes, --idle-seconds or --static it keeps its scaling."""
    body: dict[str, Any] = {"size": {"numberOfNodes": nodes}}
    if static and (min_nodes is not None or idle_seconds is not None):
        fail("--static and --min-nodes/--idle-seconds do not go together")
    if (min_nodes is None) != (idle_seconds is None):
        fail("give --min-nodes and --idle-seconds together")
    if static:
        body["scaling"] = None
    elif min_nodes is not None:
        body["scaling"] = {"minNodes": min_nodes, "idleSeconds": idle_seconds}
    with connect() as api:
        emit(
            api.call("PATCH", f"/clusters/{cluster_id}", body=body),
            output,
            lambda c: typer.echo(
                f"cluster {c['name']}: resizing to {nodes} node(s); "
                f"`hpcinfra clusters watch {c['id']} --nodes` follows it"
            ),
        )


@app.command("delete")
def delete(
    cluster_id: ClusterArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> None:
    """Tear a cluster down: everything on it goes (asks first unless --yes)."""
    with connect() as api:
        if not yes:
            cluster = api.get(f"/clusters/{cluster_id}")
            if not typer.confirm(f"Delete cluster {cluster['name']} ({cluster_id}) and everything on it?"):
                fail("not deleted")
        c = api.json("DELETE", f"/clusters/{cluster_id}")
    typer.echo(f"cluster {c['name']} is {c['status']}; `hpcinfra clusters show {c['id']}` follows the teardown")


@app.command("watch")
def watch(
    cluster_id: ClusterArg,
    timeout: Annotated[float, typer.Option(help="give up after this many seconds (exit code 124)")] = 1800,
    interval: Annotated[float, typer.Option(help="seconds between polls")] = 1.0,
    nodes: Annotated[
        bool, typer.Option("--nodes", help="once ready, go on showing nodes powering up and down, and resizes")
    ] = False,
) -> None:
    """Follow a cluster's steps live until it is ready (exit 0) or has failed (exit 1).

    Ready: available, every tool installed, every service running. Failed: error, deleting, deleted, or a failed item.
    With --nodes, a ready cluster is followed until --timeout (exit 0), its nodes' power changes as they come.
    """
    if timeout <= 0 or interval <= 0:
        fail("--timeout and --interval must be more than 0 seconds")
    with connect() as api:
        code = watching.follow(api, cluster_id, timeout=timeout, interval=interval, nodes=nodes)
    raise typer.Exit(code)


@app.command("metrics")
def metrics(
    cluster_id: ClusterArg,
    start: Annotated[str | None, typer.Option(help="RFC 3339 time, or 30m, 24h, 7d ago (default: end - 24h)")] = None,
    end: Annotated[str | None, typer.Option(help="RFC 3339 time, or 30m, 24h, 7d ago (default: now)")] = None,
    interval: Annotated[str, typer.Option(help="minute, hour or day")] = "hour",
    output: OutputOption = Format.table,
) -> None:
    """CPU, memory and storage use and credits, one point per interval with metered minutes."""
    params = {"start": moment(start, "--start"), "end": moment(end, "--end"), "interval": interval}
    with connect() as api:
        emit(api.call("GET", f"/clusters/{cluster_id}/metrics", params=params), output, _render_metrics)


def _render_metrics(m: dict[str, Any]) -> None:
    r, points = m["timeRange"], m["metrics"]
    out = console()
    span = f"{when(r['start'])} to {when(r['end'])}, by the {r['interval']}"
    if not points:
        return out.print(f"no metered {r['interval']}s from {span} (a cluster is metered each minute it is available)")
    t = table("TIME", "CPU %", "MEMORY %", "STORAGE %", "CREDITS", "RATE/H", title=f"metrics, {span}")
    for p in points:
        t.add_row(
            when(p["timestamp"]),
            f"{p['cpu']['utilizationPercent']:.1f}",
            f"{p['memory']['utilizationPercent']:.1f}",
            f"{p['storage']['utilizationPercent']:.1f}",
            f"{p['credits']['consumed']:.4f}",
            f"{p['credits']['rate']:.3f}",
        )
    out.print(t)
    last = points[-1]
    out.print(
        f"cpu {sparkline([p['cpu']['utilizationPercent'] for p in points])}  "
        f"{last['cpu']['allocatedCores']} cores; credits {sum(p['credits']['consumed'] for p in points):.4f} in all"
    )
