"""Operators find hpcinfra's runs in the Temporal web UI and CLI by their search attributes.

On the real stack (API, worker, Temporal dev server): a tenant's request, cluster and metering are found
by tenant and by cluster id, and not another tenant's; the status follows the cluster; the commands
the README gives operators (`temporal workflow list --query ...`, the approval signal) work as printed.
The worker registers the attributes on a server that lacks them, and refuses to start, naming the
commands that register them, when it cannot.
"""

import asyncio
import os
import subprocess
import uuid

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Replayer

from core import search_attributes as sa
from core.settings import Settings
from core.temporal import connect
from harness.servers import BIN, Process, executable, free_port, port_open, wait_until
from harness.world import (
    file_request,
    insert_cluster,
    insert_request,
    make_tenant,
    request_body,
    wait_for_cluster,
    wait_for_request,
)
from services.resume import resume_workflows
from worker import WORKFLOWS

# The commands as the README prints them; the tests fill in the <...> and run them through a shell.
LIST_TENANT = """temporal workflow list --query 'HpcinfraTenant = "<tenant id>"'"""
LIST_CLUSTER = """temporal workflow list --query 'HpcinfraClusterId = "<cluster id>"'"""
LIST_FAILED = """temporal workflow list --query 'HpcinfraKind = "cluster" AND HpcinfraStatus = "error"'"""
APPROVE = (
    "temporal workflow signal --workflow-id request-<request id> --name decide "
    """--input '{"status": "approved", "decided_by": "<your e-mail address>"}'"""
)

# Visibility is eventually consistent: what a workflow upserts shows in a list a moment later.
VISIBLE_WITHIN = 15


def run_readme_command(stack, command: str, fill: dict[str, str] | None = None) -> str:
    """Run `command` as an operator would in a shell, its <placeholders> filled in, the `temporal` CLI
    pointed at the stack's server."""
    for placeholder, value in (fill or {}).items():
        command = command.replace(f"<{placeholder}>", value)
    assert "<" not in command, command
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "TEMPORAL_ADDRESS": stack.temporal_address}
    env.pop("TEMPORAL_NAMESPACE", None)
    done = subprocess.run(command, shell=True, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def listed(client: Client, query: str) -> dict[str, dict[str, str]]:
    """The workflow ids a visibility query finds, with their hpcinfra attributes (name -> value)."""
    found = {}
    async for execution in client.list_workflows(query):
        attributes = execution.typed_search_attributes
        found[execution.id] = {key.name: attributes.get(key) for key in sa.ALL if attributes.get(key) is not None}
    return found


async def eventually(client: Client, query: str, expected: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Poll `query` until it finds exactly `expected`; fail with what it found last."""
    for _ in range(VISIBLE_WITHIN * 4):
        found = await listed(client, query)
        if found == expected:
            return found
        await asyncio.sleep(0.25)
    raise AssertionError(f"{query!r} found {found}, expected {expected}")


def test_a_tenants_runs_are_found_by_tenant_and_cluster_and_follow_the_status(api, stack, tenant, other_tenant):
    request = file_request(api, tenant.cad, tenant.provider_id)
    others = file_request(api, other_tenant.cad, other_tenant.provider_id)
    approved = api.patch(f"/requests/{request['id']}", json={"status": "approved"}, headers=tenant.it.headers)
    assert approved.status_code == 200, approved.text
    cluster_id = approved.json()["clusterId"]
    wait_for_cluster(api, cluster_id, tenant.it.headers, "available")

    mine = {"HpcinfraTenant": tenant.id, "HpcinfraClusterId": cluster_id}
    expected = {
        f"request-{request['id']}": {**mine, "HpcinfraKind": "request", "HpcinfraStatus": "approved"},
        f"cluster-{cluster_id}": {**mine, "HpcinfraKind": "cluster", "HpcinfraStatus": "available"},
        f"metering-{cluster_id}": {**mine, "HpcinfraKind": "metering"},
    }

    async def scenario() -> None:
        client = await Client.connect(stack.temporal_address)
        await eventually(client, f'HpcinfraTenant = "{tenant.id}"', expected)
        await eventually(client, f'HpcinfraClusterId = "{cluster_id}"', expected)
        await eventually(
            client,
            f'HpcinfraTenant = "{other_tenant.id}"',
            {f"request-{others['id']}": {"HpcinfraTenant": other_tenant.id, "HpcinfraKind": "request", "HpcinfraStatus": "pending"}},
        )  # fmt: skip

        deleted = api.delete(f"/clusters/{cluster_id}", headers=tenant.it.headers)
        assert deleted.status_code == 202, deleted.text
        wait_for_cluster(api, cluster_id, tenant.it.headers, "deleted")
        cluster = f"cluster-{cluster_id}"
        query = f'HpcinfraClusterId = "{cluster_id}" AND HpcinfraKind = "cluster" AND HpcinfraStatus = "deleted"'
        await eventually(client, query, {cluster: {**expected[cluster], "HpcinfraStatus": "deleted"}})

        # These runs took the new ("search-attributes") branch of their workflows; their histories replay.
        for workflow_id in expected:
            history = await client.get_workflow_handle(workflow_id).fetch_history()
            await Replayer(workflows=WORKFLOWS).replay_workflow(history)
            if not workflow_id.startswith("metering-"):
                assert any(
                    e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES for e in history.events
                )

    asyncio.run(scenario())

    # The README's commands find the same runs, and nothing of the other tenant.
    by_tenant = run_readme_command(stack, LIST_TENANT, {"tenant id": tenant.id})
    assert all(workflow_id in by_tenant for workflow_id in expected), by_tenant
    assert others["id"] not in by_tenant
    by_cluster = run_readme_command(stack, LIST_CLUSTER, {"cluster id": cluster_id})
    assert all(workflow_id in by_cluster for workflow_id in expected), by_cluster
    assert others["id"] not in by_cluster


def test_a_cluster_created_directly_that_fails_is_among_the_failed_clusters(api, stack):
    tenant = make_tenant(
        stack.db.sessions, extra_providers={"failing": {"kind": "sim", "config": {"failAt": "storage"}}}
    )
    body = request_body(tenant.providers["failing"], size={"numberOfNodes": 1, "nodeType": "small"})
    created = api.post("/clusters", json=body, headers=tenant.cad.headers)
    assert created.status_code == 201, created.text
    cluster_id = created.json()["id"]
    wait_for_cluster(api, cluster_id, tenant.cad.headers, "error")

    async def scenario() -> None:
        client = await Client.connect(stack.temporal_address)
        attributes = {"HpcinfraTenant": tenant.id, "HpcinfraClusterId": cluster_id, "HpcinfraKind": "cluster"}
        await eventually(
            client,
            f'HpcinfraTenant = "{tenant.id}"',
            {f"cluster-{cluster_id}": {**attributes, "HpcinfraStatus": "error"}},
        )

    asyncio.run(scenario())
    assert f"cluster-{cluster_id}" in run_readme_command(stack, LIST_FAILED)


def test_the_readme_approval_signal_approves_the_request(api, stack, tenant):
    request = file_request(api, tenant.cad, tenant.provider_id)
    run_readme_command(stack, APPROVE, {"request id": request["id"], "your e-mail address": tenant.it.email})

    approved = wait_for_request(api, request["id"], tenant.it.headers, "approved")
    assert approved["approvedBy"]["id"] == tenant.it.id and approved["clusterId"]
    wait_for_cluster(api, approved["clusterId"], tenant.it.headers, "available")

    async def scenario() -> None:
        client = await Client.connect(stack.temporal_address)
        query = f'HpcinfraTenant = "{tenant.id}" AND HpcinfraKind = "request"'
        await eventually(
            client,
            query,
            {
                f"request-{request['id']}": {
                    "HpcinfraTenant": tenant.id,
                    "HpcinfraClusterId": approved["clusterId"],
                    "HpcinfraKind": "request",
                    "HpcinfraStatus": "approved",
                }
            },
        )

    asyncio.run(scenario())


def test_the_worker_registers_missing_attributes_on_a_server_without_them(tmp_path):
    port = free_port()
    bare = Process(
        [executable("temporal"), "server", "start-dev", "--headless", "--ip", "127.0.0.1",
         "--port", str(port), "--log-level", "error"],
        tmp_path / "temporal.log",
    )  # fmt: skip
    try:
        wait_until(lambda: port_open(port) or not bare.alive(), timeout=60, what="a Temporal dev server")

        async def scenario() -> None:
            # The port opens before the frontend is ready to answer: connect as the worker does, waiting.
            client = await connect(Settings(temporal_address=f"127.0.0.1:{port}"), wait_seconds=30)
            labels = sa.labels(sa.CLUSTER, str(uuid.uuid4()), str(uuid.uuid4()), "pending")
            with pytest.raises(RPCError, match="search attribute Hpcinfra"):
                await client.start_workflow("Cluster", id="refused", task_queue="nobody", search_attributes=labels)
            assert await sa.ensure_registered(client, "default") == sorted(key.name for key in sa.ALL)
            assert await sa.ensure_registered(client, "default") == []  # known now: nothing to do
            await client.start_workflow("Cluster", id="taken", task_queue="nobody", search_attributes=labels)

        asyncio.run(scenario())
    finally:
        bare.stop()


def test_a_worker_that_cannot_register_them_refuses_to_start_and_says_how(stack, tmp_path):
    """A namespace it may not manage (here: one that does not exist) is refused before anything runs."""
    env = {**stack.env, "HPCINFRA_TEMPORAL_NAMESPACE": f"nowhere-{uuid.uuid4().hex[:6]}"}
    worker = Process([os.sys.executable, "-m", "cli", "worker"], tmp_path / "worker.log", env)
    try:
        wait_until(lambda: not worker.alive(), timeout=60, what="the worker to give up")
    finally:
        worker.stop()
    assert worker.popen.returncode != 0
    said = worker.output()
    for key in sa.ALL:
        assert (
            f"temporal operator search-attribute create --namespace {env['HPCINFRA_TEMPORAL_NAMESPACE']} --name {key.name} --type Keyword"
            in said
        ), said
    assert "worker polling task queue" not in said


def test_the_runs_a_starting_worker_resumes_carry_them_too(stack):
    """A request an API wrote but did not start, a cluster made without approval likewise, and an
    available cluster without metering: started by `resume_workflows` with the same attributes."""
    tenant = make_tenant(stack.db.sessions)
    request_id = str(insert_request(stack.db.sessions, tenant))
    pending = str(insert_cluster(stack.db.sessions, tenant, "never-started").id)
    available = str(insert_cluster(stack.db.sessions, tenant, "not-metered", status="available").id)

    async def scenario() -> dict[str, dict[str, str]]:
        client = await Client.connect(stack.temporal_address)
        await resume_workflows(
            client, stack.db.sessions, Settings(database_url=stack.db.url, task_queue=stack.task_queue)
        )
        found = {}
        for workflow_id in (f"request-{request_id}", f"cluster-{pending}", f"metering-{available}"):
            attributes = (await client.get_workflow_handle(workflow_id).describe()).typed_search_attributes
            found[workflow_id] = {key.name: attributes.get(key) for key in sa.ALL}
        return found

    found = asyncio.run(scenario())
    # Started `pending`; the stack's worker may have moved it on already.
    assert found[f"cluster-{pending}"].pop("HpcinfraStatus") in ("pending", "provisioning", "available")
    mine = {"HpcinfraTenant": tenant.id}
    assert found == {
        f"request-{request_id}": {
            **mine,
            "HpcinfraClusterId": None,
            "HpcinfraKind": "request",
            "HpcinfraStatus": "pending",
        },
        f"cluster-{pending}": {**mine, "HpcinfraClusterId": pending, "HpcinfraKind": "cluster"},
        f"metering-{available}": {
            **mine,
            "HpcinfraClusterId": available,
            "HpcinfraKind": "metering",
            "HpcinfraStatus": None,
        },
    }
