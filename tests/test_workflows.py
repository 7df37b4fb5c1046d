"""Workflow behaviour that the HTTP tests cannot reach quickly: request expiry and 90 minutes of metering
on the time-skipping test server, and the cluster workflow continuing as new with its state intact on
the dev server.
Both run the real workflows and the real activities against the test database."""

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from sqlalchemy import func, select
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core import search_attributes
from core.messages import (
    ClusterInput,
    Decision,
    RequestInput,
    StopRequest,
    cluster_workflow_id,
    metering_workflow_id,
)
from core.models import Cluster, ClusterEvent, ClusterRequest, CreditEntry, MetricSample
from core.settings import Settings
from harness.servers import executable
from harness.world import insert_cluster, insert_request, make_tenant
from services import credits, metering
from services.resume import resume_workflows
from worker import WORKFLOWS, build_activities
from workflows.cluster import ClusterWorkflow
from workflows.request import RequestWorkflow

WEEK = 7 * 24 * 3600


async def on_time_skipping_server(db, scenario, data_dir):
    settings = Settings(database_url=db.url, sim_step_seconds=0, data_dir=data_dir)
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=executable("temporal-test-server"),
        # The SDK waits 5 s for the server to answer, which a loaded machine has exceeded (CI did).
        test_server_startup_timeout=timedelta(seconds=60),
    ) as env:
        # The workflows keep their search attributes current; this server registers them as a real one does.
        await search_attributes.ensure_registered(env.client, env.client.namespace)
        task_queue = f"tq-{uuid.uuid4()}"
        with ThreadPoolExecutor(8) as executor:
            async with Worker(
                env.client,
                task_queue=task_queue,
                workflows=WORKFLOWS,
                activities=build_activities(settings),
                activity_executor=executor,
            ):
                return await scenario(env, task_queue)


def test_request_nobody_decides_expires_as_rejected(db, tmp_path):
    tenant = make_tenant(db.sessions)
    request_id = insert_request(db.sessions, tenant)

    async def scenario(env: WorkflowEnvironment, task_queue: str):
        # A week passes in an instant: the test server skips time while the workflow only waits.
        return await env.client.execute_workflow(
            RequestWorkflow.run, RequestInput(str(request_id), WEEK), id=f"request-{request_id}", task_queue=task_queue
        )

    state = asyncio.run(on_time_skipping_server(db, scenario, tmp_path))
    assert state.status == "rejected"
    with db.sessions() as session:
        request = session.get(ClusterRequest, request_id)
        assert request.status == "rejected"
        assert request.rejection_reason == "expired: nobody decided within 7 days"
        assert request.approved_by_id is None
        assert request.approved_at is not None
        assert request.cluster_id is None


def test_request_decided_in_time_does_not_expire(db, tmp_path):
    tenant = make_tenant(db.sessions)
    request_id = insert_request(db.sessions, tenant)

    async def scenario(env: WorkflowEnvironment, task_queue: str):
        handle = await env.client.start_workflow(
            RequestWorkflow.run, RequestInput(str(request_id), WEEK), id=f"request-{request_id}", task_queue=task_queue
        )
        await handle.signal(RequestWorkflow.decide_by_signal, Decision("approved", tenant.it.email))
        state = await handle.result()
        for _ in range(200):  # the cluster provisions on the same worker (sim, no delay)
            with db.sessions() as session:
                if session.get(Cluster, uuid.UUID(state.cluster_id)).status == "available":
                    break
            await asyncio.sleep(0.05)
        return state

    state = asyncio.run(on_time_skipping_server(db, scenario, tmp_path))
    assert state.status == "approved"
    with db.sessions() as session:
        request = session.get(ClusterRequest, request_id)
        assert (request.status, request.rejection_reason, str(request.approved_by_id)) == (
            "approved",
            None,
            tenant.it.id,
        )
        assert session.get(Cluster, request.cluster_id).status == "available"


async def run_to_end(handle) -> None:
    """Wait for the workflow's result (the time-skipping server skips time meanwhile). Its long poll
    sometimes comes back without the closing event under load: ask again."""
    for _ in range(5):
        try:
            await handle.result()
            return
        except RuntimeError as e:
            if "No completion event found" not in str(e):
                raise
    raise AssertionError(f"{handle.id} did not end")


def test_an_available_cluster_is_metered_every_minute_until_its_teardown_begins(db, tmp_path):
    """90 minutes of metering on skipped time: every minute recorded and charged once, at the catalog's
    rate; the platform's own `stop` tears the cluster down, and metering ends with its last minute."""
    tenant = make_tenant(db.sessions)
    cluster = insert_cluster(db.sessions, tenant, "metered", number_of_nodes=4)

    async def scenario(env: WorkflowEnvironment, task_queue: str):
        handle = await env.client.start_workflow(
            ClusterWorkflow.run,
            ClusterInput(str(cluster.id)),
            id=cluster_workflow_id(str(cluster.id)),
            task_queue=task_queue,
        )
        for _ in range(600):  # provisioning on the sim takes well under a second, on a quiet machine
            if (await handle.query(ClusterWorkflow.state)).status == "available":
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the cluster never became available")
        await env.sleep(timedelta(minutes=90))
        await handle.signal(ClusterWorkflow.stop, StopRequest("stopped by the test"))
        await run_to_end(handle)
        await run_to_end(env.client.get_workflow_handle(metering_workflow_id(str(cluster.id))))

    asyncio.run(on_time_skipping_server(db, scenario, tmp_path))
    with db.sessions() as session:
        row = session.get_one(Cluster, cluster.id)
        minutes = session.scalars(
            select(MetricSample.minute).where(MetricSample.cluster_id == cluster.id).order_by(MetricSample.minute)
        ).all()
        charged = session.scalar(select(func.sum(CreditEntry.amount)).where(CreditEntry.cluster_id == cluster.id))
    first, last = metering.floor_minute(row.metering_from), metering.ceil_minute(row.metering_to)
    assert minutes == [first + timedelta(minutes=i) for i in range(int((last - first) / timedelta(minutes=1)))]
    assert 90 <= len(minutes) <= 92
    assert -charged == len(minutes) * credits.cluster_rate("small", 4, 10)
    assert row.status == "deleted" and row.metered_until == last


def test_a_starting_worker_meters_available_clusters_that_are_not_metered(stack):
    """Clusters available from before metering existed, or whose metering an operator terminated."""
    tenant = make_tenant(stack.db.sessions)
    cluster = insert_cluster(stack.db.sessions, tenant, "from-before", status="available")

    async def scenario():
        client = await Client.connect(stack.temporal_address)
        settings = Settings(database_url=stack.db.url, task_queue=stack.task_queue)
        await resume_workflows(client, stack.db.sessions, settings)
        handle = client.get_workflow_handle(metering_workflow_id(str(cluster.id)))
        first = (await handle.describe()).run_id
        await resume_workflows(client, stack.db.sessions, settings)  # one that runs is left alone
        return first, await handle.describe()

    first, now = asyncio.run(scenario())
    assert now.run_id == first and now.status == WorkflowExecutionStatus.RUNNING
    with stack.db.sessions() as session:
        assert session.get_one(Cluster, cluster.id).metering_from is not None


def test_cluster_workflow_continues_as_new_with_its_state(stack):
    tenant = make_tenant(stack.db.sessions)
    cluster = insert_cluster(stack.db.sessions, tenant, "long-lived")
    checks = 6

    async def scenario():
        client = await Client.connect(stack.temporal_address)
        # A small history limit, so that a few operations are enough to make the workflow continue as new.
        handle = await client.start_workflow(
            ClusterWorkflow.run,
            ClusterInput(str(cluster.id), history_limit=60, tenant_id=tenant.id),
            id=f"cluster-{cluster.id}",
            task_queue=stack.task_queue,
            search_attributes=search_attributes.labels(
                search_attributes.CLUSTER, tenant.id, str(cluster.id), "pending"
            ),
        )
        first_run = handle.first_execution_run_id
        for _ in range(200):
            if (await handle.query(ClusterWorkflow.state)).status == "available":
                break
            await asyncio.sleep(0.05)
        for _ in range(checks):
            report = await client.get_workflow_handle(handle.id).execute_update(ClusterWorkflow.check_health)
            assert report.healthy
        latest = client.get_workflow_handle(handle.id)
        described = await latest.describe()
        return first_run, described.run_id, await latest.query(ClusterWorkflow.state), described.typed_search_attributes

    first_run, latest_run, state, attributes = asyncio.run(scenario())
    assert latest_run != first_run
    # So did its search attributes, the status as last upserted included.
    assert [attributes.get(key) for key in search_attributes.ALL] == [
        tenant.id,
        str(cluster.id),
        "cluster",
        "available",
    ]
    # The new run carried the state over: it is available, and did not provision the cluster again.
    assert state.status == "available" and state.queue == []
    with stack.db.sessions() as session:
        events = session.query(ClusterEvent).filter_by(cluster_id=cluster.id)
        assert events.filter_by(step="provision", status="started").count() == 1
        assert events.filter_by(step="health-check", status="succeeded").count() == checks + 1
