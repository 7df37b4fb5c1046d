"""`hpcinfra requests ...`: file cluster requests, and decide them, over the HTTP API."""

import re
import uuid
from typing import Annotated, Any

import typer

from cli.user.http import Api, connect, fail, problem_line
from cli.user.output import Format, OutputOption, console, details, emit, size, table, when, who

app = typer.Typer(
    help="Cluster requests: filed by CAD managers, decided by IT managers (over the API).", no_args_is_help=True
)

_SPEC = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.+-]*)@([A-Za-z0-9][A-Za-z0-9_.+-]*)$")


def parse_spec(spec: str, option: str) -> dict[str, str]:
    """`iverilog@12.0` as the API's `{name, version}`; anything else is refused with an example."""
    match = _SPEC.fullmatch(spec.strip())
    if match is None:
        example = "postgresql@16" if "service" in option else "iverilog@12.0"
        raise typer.BadParameter(f"{spec!r} is not NAME@VERSION, e.g. {example}", param_hint=f"'{option}'")
    return {"name": match[1], "version": match[2]}


def provider_id(api: Api, provider: str) -> str:
    """A provider given by id, or by its name among the caller's providers."""
    try:
        return str(uuid.UUID(provider))
    except ValueError:
        pass
    providers = api.pages("/cloud-providers")
    found = [p["id"] for p in providers if p["name"] == provider]
    if not found:
        names = ", ".join(p["name"] for p in providers) or "none"
        fail(f"there is no cloud provider named {provider!r} that you can use; yours: {names}")
    if len(found) > 1:  # an admin sees every tenant's providers
        fail(f"{len(found)} cloud providers are named {provider!r}; give the id of one: {', '.join(found)}")
    return found[0]


def request_rows(requests: list[dict[str, Any]]):
    t = table("ID", "NAME", "STATUS", "SIZE", "REQUESTED BY", "REQUESTED AT", "CLUSTER ID")
    for r in requests:
        t.add_row(
            r["id"], r["name"], r["status"], size(r["size"]), r["requestedBy"]["email"], when(r["requestedAt"]),
            r.get("clusterId") or "-",
        )  # fmt: skip
    return t


def render_request(r: dict[str, Any]) -> None:
    out = console()
    estimate = r.get("estimatedCredits") or {}
    out.print(
        details(
            [
                ("id", r["id"]),
                ("name", r["name"]),
                ("status", r["status"]),
                ("size", size(r["size"])),
                ("cloud provider", r["cloudProviderId"]),
                ("tools", ", ".join(f"{t['name']}@{t['version']}" for t in r["tools"])),
                ("services", ", ".join(f"{s['name']}@{s['version']}" for s in r["services"])),
                ("requested by", who(r["requestedBy"])),
                ("requested at", when(r["requestedAt"])),
                ("decided by", who(r.get("approvedBy"))),
                ("decided at", when(r.get("approvedAt"))),
                ("rejection reason", r.get("rejectionReason")),
                ("cluster", r.get("clusterId")),
                ("credits per hour", estimate.get("ratePerHour")),
            ],
            title=f"request {r['name']}",
        )
    )
    if r["notes"]:
        notes = table("TIME", "BY", "NOTE", title="notes")
        for n in r["notes"]:
            notes.add_row(when(n["time"]), n["by"]["email"], n["note"])
        out.print(notes)


@app.command("file")
def file_request(
    name: Annotated[str, typer.Argument(help="the cluster's name: lower-case letters, digits and '-'")],
    provider: Annotated[str, typer.Option("--provider", help="the cloud provider's id or name")],
    nodes: Annotated[int, typer.Option("--nodes", help="number of compute nodes")],
    node_type: Annotated[str, typer.Option("--node-type", help="a node type of the catalog, e.g. small")],
    tool: Annotated[
        list[str] | None, typer.Option("--tool", help="NAME@VERSION, e.g. iverilog@12.0; repeatable")
    ] = None,
    service: Annotated[
        list[str] | None, typer.Option("--service", help="NAME@VERSION, e.g. postgresql@16; repeatable")
    ] = None,
    storage: Annotated[int | None, typer.Option("--storage", help="shared storage in GB")] = None,
    min_nodes: Annotated[
        int | None, typer.Option("--min-nodes", help="elastic: nodes always up (the rest run only for jobs)")
    ] = None,
    idle_seconds: Annotated[
        int, typer.Option("--idle-seconds", help="elastic: power a node down after this long idle")
    ] = 600,
    output: OutputOption = Format.table,
) -> None:
    """File a request for a cluster (CAD managers); an IT manager approves or rejects it."""
    tools = [parse_spec(t, "--tool") for t in tool or []]
    services = [parse_spec(s, "--service") for s in service or []]
    with connect() as api:
        body = {
            "name": name,
            "cloudProviderId": provider_id(api, provider),
            "size": {"numberOfNodes": nodes, "nodeType": node_type},
            "tools": tools,
            "services": services,
        }
        if storage is not None:
            body["size"]["storage"] = storage
        if min_nodes is not None:
            body["scaling"] = {"minNodes": min_nodes, "idleSeconds": idle_seconds}
        emit(api.call("POST", "/requests", body=body), output, render_request)


@app.command("list")
def list_requests(
    status: Annotated[str | None, typer.Option(help="pending, approved or rejected")] = None,
    limit: Annotated[int, typer.Option(help="at most this many (newest first)")] = 100,
    output: OutputOption = Format.table,
) -> None:
    """The requests you may see: a CAD manager its own, an IT manager its tenant's."""
    with connect() as api:
        emit(
            api.call("GET", "/requests", params={"status": status, "limit": limit}),
            output,
            lambda rs: console().print(request_rows(rs)) if rs else typer.echo("no requests"),
        )


@app.command("show")
def show_request(request_id: Annotated[str, typer.Argument(metavar="ID")], output: OutputOption = Format.table) -> None:
    """One request, with its notes."""
    with connect() as api:
        emit(api.call("GET", f"/requests/{request_id}"), output, render_request)


def _decide(request_id: str, body: dict[str, Any], output: Format) -> None:
    with connect() as api:
        emit(api.call("PATCH", f"/requests/{request_id}", body=body), output, render_request)


@app.command("approve")
def approve(
    request_id: Annotated[str, typer.Argument(metavar="ID")],
    reason: Annotated[str | None, typer.Option(help="a note for the requester, added once approved")] = None,
    output: OutputOption = Format.table,
) -> None:
    """Approve a pending request (IT managers); provisioning of its cluster starts."""
    if not reason:
        return _decide(request_id, {"status": "approved"}, output)
    # The decision has no field for it, so the reason is a note, added after the approval succeeded
    # (a refused approval leaves the request as it was).
    with connect() as api:
        api.call("PATCH", f"/requests/{request_id}", body={"status": "approved"})
        noted = api.call("POST", f"/requests/{request_id}/notes", body={"note": reason}, check=False)
        if noted.status_code >= 400:
            fail(
                f"request {request_id} is approved, but its reason was not added as a note ({problem_line(noted)}); "
                f"add it with `hpcinfra requests note {request_id} TEXT`"
            )
        emit(api.call("GET", f"/requests/{request_id}"), output, render_request)


@app.command("reject")
def reject(
    request_id: Annotated[str, typer.Argument(metavar="ID")],
    reason: Annotated[str, typer.Option(help="why, for the requester (required)")],
    output: OutputOption = Format.table,
) -> None:
    """Reject a pending request (IT managers), saying why."""
    _decide(request_id, {"status": "rejected", "rejectionReason": reason}, output)


@app.command("note")
def note(
    request_id: Annotated[str, typer.Argument(metavar="ID")],
    text: Annotated[str, typer.Argument(help="the note")],
    output: OutputOption = Format.table,
) -> None:
    """Add a note to a request (its requester and IT managers)."""
    with connect() as api:
        emit(
            api.call("POST", f"/requests/{request_id}/notes", body={"note": text}),
            output,
            lambda n: typer.echo(f"note added by {n['by']['email']} at {when(n['time'])}"),
        )
