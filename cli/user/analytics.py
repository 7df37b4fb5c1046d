"""`hpcinfra analytics`: a tenant's balance, spend, forecast and who spends what, with its credits
over time drawn from the ledger (for IT managers and admins)."""

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.panel import Panel

from cli.user.charts import bar, bucket_width, moment, parse_time, sparkline
from cli.user.http import Api, connect
from cli.user.output import Format, OutputOption, console, credits, details, table, when

DEFAULT_SPAN = timedelta(days=30)  # the API's default range for analytics
LEDGER_PAGE, LEDGER_MOST = 500, 20_000  # the ledger is read newest first, at most this far back


def analytics(
    tenant: Annotated[str | None, typer.Option("--tenant", help="the tenant's id (default: your own)")] = None,
    start: Annotated[str | None, typer.Option(help="RFC 3339 time, or 24h, 7d, 2w ago (default: end - 30d)")] = None,
    end: Annotated[str | None, typer.Option(help="RFC 3339 time, or 24h, 7d ago (default: now)")] = None,
    output: OutputOption = Format.table,
) -> None:
    """The tenant's balance, spend, forecast and who spends what, with a chart of its credits over time."""
    params = {"start": moment(start, "--start"), "end": moment(end, "--end")}
    with connect() as api:
        tenant_id = tenant or api.get("/me")["tenantId"]
        response = api.call("GET", f"/tenants/{tenant_id}/analytics", params=params)
        if output is Format.json:
            return typer.echo(response.text)  # the API's answer unchanged
        report = response.json()
        now = datetime.now(UTC)
        span_end = parse_time(params["end"]) if params["end"] else now
        span_start = parse_time(params["start"]) if params["start"] else span_end - DEFAULT_SPAN
        history = ledger_history(api, tenant_id, span_start)
    render(report, history, span_start, min(span_end, now))


def ledger_history(api: Api, tenant_id: str, since: datetime) -> dict[str, Any]:
    """The ledger back to `since` (newest first) and the balance now. Stops early for a very long
    ledger, and says from when the history is complete."""
    account = api.get(f"/tenants/{tenant_id}/credits", limit=LEDGER_PAGE)
    entries, page = list(account["entries"]), account["entries"]
    # Newest first: read on while a full page came back and its oldest entry is still in the range.
    while len(page) == LEDGER_PAGE and _entry_time(page[-1]) >= since and len(entries) < LEDGER_MOST:
        page = api.get(f"/tenants/{tenant_id}/credits", limit=LEDGER_PAGE, offset=len(entries))["entries"]
        entries.extend(page)
    complete = len(page) < LEDGER_PAGE or _entry_time(page[-1]) < since
    return {
        "balance": account["balance"],
        "entries": entries,
        "complete_from": None if complete else _entry_time(entries[-1]),
    }


def _entry_time(entry: dict[str, Any]) -> datetime:
    """When an entry counts: the end of the metered stretch it charges, else when it was written."""
    return parse_time(entry.get("periodEnd") or entry["time"])


def credit_series(history: dict[str, Any], start: datetime, end: datetime, width: timedelta):
    """Per bucket of [start, end): the balance at its end, and the credits consumed in it. The balance
    is walked back from today's, undoing each entry newer than the bucket's end."""
    buckets = max(1, -(-(end - start) // width))
    edges = [start + width * (i + 1) for i in range(buckets)]
    spent = [0.0] * buckets
    entries = sorted(history["entries"], key=_entry_time, reverse=True)
    balances: list[float] = []
    balance, i = history["balance"], 0
    for edge in reversed(edges):
        while i < len(entries) and _entry_time(entries[i]) > edge:
            balance -= entries[i]["amount"]
            i += 1
        balances.append(balance)
    balances.reverse()
    for e in entries:
        t = _entry_time(e)
        if e["kind"] == "consumption" and start < t <= edges[-1]:
            spent[min(int((t - start) / width - 1e-9), buckets - 1)] -= e["amount"]
    return balances, spent


def render(report: dict[str, Any], history: dict[str, Any], start: datetime, end: datetime) -> None:
    out = console()
    c, o, r = report["credits"], report["overview"], report["resources"]
    use = r["averageUtilization"]
    out.print(
        details(
            [
                ("balance", credits(c["balance"]) + (" (spent)" if c["exhausted"] else "") + f", policy {c['policy']}"),
                ("consumed", f"{credits(c['consumed']['daily'])} today, {credits(c['consumed']['weekly'])} this "
                             f"week, {credits(c['consumed']['monthly'])} this month"),
                ("forecast", f"{credits(c['forecast']['nextWeek'])} next week, {credits(c['forecast']['nextMonth'])} "
                             "next month"),
                ("clusters", f"{o['activeClusters']} active of {o['totalClusters']}"),
                ("users", f"{o['activeUsers']} active of {o['totalUsers']}"),
                ("resources", f"{r['totalCores']} cores, {r['totalMemoryGB']} GB memory, {r['totalStorageGB']} GB "
                              "storage"),
                ("utilisation", f"cpu {use['cpu']:.1f}%, memory {use['memory']:.1f}%, storage {use['storage']:.1f}%"),
            ],
            title="credits and use",
        )
    )  # fmt: skip
    if start < end:
        width, width_name = bucket_width(start, end)
        balances, spent = credit_series(history, start, end, width)
        lines = [
            f"balance  {sparkline(balances)}  {credits(balances[0])} → {credits(balances[-1])}",
            f"spent    {sparkline(spent)}  {credits(sum(spent))} in all, at most {credits(max(spent))} a {width_name}",
        ]
        if history["complete_from"] is not None:
            lines.append(f"(the ledger was read back to {when(history['complete_from'].isoformat())} only)")
        title = f"credits from {when(start.isoformat())} to {when(end.isoformat())}, one mark per {width_name}"
        out.print(Panel(Group(*lines), title=title, title_align="left", expand=False))
    breakdown = report["breakdown"]
    for rows, what, key in ((breakdown["byCluster"], "CLUSTER", "name"), (breakdown["byUser"], "USER", "name")):
        if not rows:
            continue
        largest = max(x["creditsConsumed"] for x in rows)
        t = table(what, "CREDITS", "", title=f"spend by {what.lower()}")
        for x in sorted(rows, key=lambda x: -x["creditsConsumed"]):
            t.add_row(x[key], credits(x["creditsConsumed"]), bar(x["creditsConsumed"], largest))
        out.print(t)
    # Clusters available in the range are listed from their first moment, before anything is spent.
    if not any(x["creditsConsumed"] for x in breakdown["byCluster"]):
        out.print("nothing was spent in this range")
