"""`hpcinfra clusters watch`: a cluster's step log as a live progress display, polled until the
cluster is available with its tools and services settled, or something failed.

It reads the step log and the tool and service lists, never the cluster itself, so watching does not
fetch service credentials (nor has the API's audit log record them as shown at every poll). Every
change of the cluster's status is a line of its step log, so the log alone says where it is.
"""

import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn
from rich.table import Column

from cli.user.http import Api
from cli.user.output import console, when

TIMED_OUT = 124  # as timeout(1) exits
PAGE = 500
BUSY = {"pending", "installing", "provisioning"}  # a tool or service still on its way
MARKS = {"succeeded": "[green]✓[/]", "failed": "[red]✗[/]", "retrying": "[yellow]↻[/]"}
# A node's power (the step log's `node` lines), and a resize waiting for jobs.
MARKS |= {"up": "[green]▲[/]", "powering-up": "[green]△[/]", "down": "▼", "powering-down": "▽", "waiting": "…"}


class StepDisplay:
    """A header with the cluster's status and the time watched, then one line per step: a spinner
    while it runs, then ✓ or ✗ (↻ while retrying) with the step log's message."""

    def __init__(self, progress: Progress, cluster_id: str) -> None:
        self.progress = progress
        self.cluster_id = cluster_id
        self.header = progress.add_task("", mark="", at="", total=None)
        self.running: dict[str, TaskID] = {}  # step -> its line while it runs (one operation runs at a time)
        self.started = time.monotonic()
        self.status("pending")

    def status(self, status: str) -> None:
        self.current = status
        self.tick()

    def tick(self) -> None:
        """The header again, with the time watched so far."""
        watched = int(time.monotonic() - self.started)
        self.progress.update(
            self.header,
            description=f"cluster {escape(self.cluster_id)} [bold]{self.current}[/] [dim](watched {watched // 60}:{watched % 60:02d})[/]",
        )

    def event(self, e: dict[str, Any]) -> None:
        step, status, message = e["step"], e["status"], e["message"]
        if step == "status":
            return self.status(status)  # (the reason of an error ends the watch, on a line of its own)
        line, at = escape(f"{step}: {message}"), when(e["time"])[11:19]
        if status == "started":
            self.running[step] = self.progress.add_task(line, mark="", at=at, total=1)
            return
        task = self.running.get(step) if status == "retrying" else self.running.pop(step, None)
        if task is None:  # a step logged once, when it is done
            task = self.progress.add_task(line, mark="", at=at, total=1)
        self.progress.update(task, description=line, mark=MARKS.get(status, ""))  # (it keeps its start time)
        if status != "retrying":
            self.progress.update(task, completed=1)

    def finish(self, code: int) -> None:
        """Stop the spinners: the watch is over. A step still open failed with the cluster, or is
        still running when the watch gives up."""
        for task in self.running.values():
            mark = MARKS["failed"] if code == 1 else "[dim]…[/]"
            self.progress.update(task, mark=mark, completed=1)
        self.progress.update(self.header, total=1, completed=1)


def follow(api: Api, cluster_id: str, *, timeout: float, interval: float, nodes: bool = False) -> int:
    """Watch until there is a verdict; returns the exit code: 0 available and settled, 1 failed, TIMED_OUT.
    With `nodes`, a settled cluster is watched on (its nodes' power, resizes) until the timeout: then 0."""
    status, reason, seen = "pending", "", 0
    deadline = time.monotonic() + timeout
    progress = Progress(
        SpinnerColumn(finished_text=" ", table_column=Column(no_wrap=True, min_width=1)),
        TextColumn("[dim]{task.fields[at]}[/]", table_column=Column(no_wrap=True, min_width=8)),
        TextColumn("{task.fields[mark]}", table_column=Column(no_wrap=True, min_width=1)),
        TextColumn("{task.description}", table_column=Column(overflow="fold", ratio=1)),
        console=console(),
    )
    with progress:
        display = StepDisplay(progress, cluster_id)
        while True:
            new = api.get(f"/clusters/{cluster_id}/events", offset=seen, limit=PAGE)
            for e in new:
                display.event(e)
                if e["step"] == "status":
                    status, reason = e["status"], e["message"]
            seen += len(new)
            display.tick()
            if len(new) == PAGE:
                continue  # more of the log to read before deciding
            verdict = _verdict(api, cluster_id, status, reason)
            over = time.monotonic() >= deadline
            if verdict is not None and verdict[0] == 0 and nodes and not over:
                verdict = None  # settled: its nodes are what is watched now
            if verdict is None and over:
                verdict = TIMED_OUT, f"gave up after {timeout:g} seconds; the cluster is {status}"
            if verdict is not None:
                display.finish(verdict[0])
                break
            time.sleep(min(interval, max(deadline - time.monotonic(), 0)))
    code, message = verdict
    if code == 0:
        console().print(message, markup=False)
    else:
        Console(stderr=True, highlight=False).print(f"error: {message}", markup=False, soft_wrap=True)
    return code


def _verdict(api: Api, cluster_id: str, status: str, reason: str) -> tuple[int, str] | None:
    """None while there is something to wait for; else the exit code and what to tell the person."""
    if status == "error":
        return 1, f"the cluster is in error: {reason} (`hpcinfra clusters show {cluster_id}` has the step log)"
    if status in ("deleting", "deleted"):
        return 1, f"the cluster is {status}"
    if status != "available":
        return None
    items = [("tool", t) for t in api.get(f"/clusters/{cluster_id}/tools")]
    items += [("service", s) for s in api.get(f"/clusters/{cluster_id}/services")]
    if any(item["status"] in BUSY for _, item in items):
        return None
    failed = [f"{kind} {i['name']} {i['version']} failed: {i.get('statusReason') or 'no reason recorded'}"
              for kind, i in items if i["status"] == "failed"]  # fmt: skip
    if failed:
        return 1, "the cluster is available, but " + "; ".join(failed)
    return 0, "the cluster is available" + (", with its tools and services ready" if items else "")
