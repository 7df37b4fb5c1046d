"""Work committed whose workflow never started (an API stopped between its commit and the start, a
Temporal blip) is started by the worker's periodic sweep, without waiting for a process to start; one
worker sweeps at a time, whichever holds the sweep's lease (services/resume.py).

The sweep runs on a worker of its own here, on a database of its own, every second: the shared stack's
worker does not sweep (its tests drive the workflows of the rows they write themselves)."""

import asyncio
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import select
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from core.db import transaction
from core.models import Cluster, ClusterRequest, IdempotencyKey, Sweep, utcnow
from core.settings import Settings
from harness.servers import wait_until
from harness.world import insert_cluster, insert_request, make_tenant
from services.resume import START_GRACE, SWEEP, resume_workflows, take_turn
from tests.conftest import Database, migrated_database, start_worker, wait_for_worker


@dataclass
class Sweeper:
    db: Database
    temporal_address: str
    task_queue: str


@pytest.fixture(scope="module")
def sweeper(temporal_address, tmp_path_factory) -> Iterator[Sweeper]:
    """A worker sweeping every second, on a SQLite database of its own."""
    with migrated_database("sqlite", tmp_path_factory) as db:
        task_queue = f"tq-sweep-{uuid.uuid4().hex[:8]}"
        env = {
            **os.environ,
            "HPCINFRA_DATABASE_URL": db.url,
            "HPCINFRA_TEMPORAL_ADDRESS": temporal_address,
            "HPCINFRA_TASK_QUEUE": task_queue,
            "HPCINFRA_SIM_STEP_SECONDS": "0",
            "HPCINFRA_DATA_DIR": str(tmp_path_factory.mktemp("sweeper-data")),
            "HPCINFRA_RESUME_EVERY_SECONDS": "1",
        }
        worker = start_worker(env, tmp_path_factory.mktemp("sweeper") / "worker.log")
        try:
            wait_for_worker(worker)
            yield Sweeper(db, temporal_address, task_queue)
        finally:
            worker.stop()


async def _running(address: str, workflow_id: str) -> bool:
    client = await Client.connect(address)
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except RPCError:
        return False
    return description.status == WorkflowExecutionStatus.RUNNING


def running(sweeper: Sweeper, workflow_id: str) -> bool:
    return asyncio.run(_running(sweeper.temporal_address, workflow_id))


def status_of(sweeper: Sweeper, cluster_id: uuid.UUID) -> str:
    with sweeper.db.sessions() as session:
        return session.get_one(Cluster, cluster_id).status


def test_a_request_and_a_cluster_whose_workflows_never_started_are_picked_up_by_the_sweep(sweeper):
    tenant = make_tenant(sweeper.db.sessions)
    request_id = insert_request(sweeper.db.sessions, tenant, "left-unstarted")  # committed, and nothing else
    cluster = insert_cluster(sweeper.db.sessions, tenant, "left-unstarted")  # made without approval, likewise
    wait_until(lambda: running(sweeper, f"request-{request_id}"), what="the sweep to start the request's workflow")
    wait_until(lambda: status_of(sweeper, cluster.id) == "available", what="the cluster's workflow to provision it")


def test_an_approved_request_whose_cluster_never_started_gets_it_started(sweeper):
    """The approval committed the cluster; its request's workflow was ended (by an operator, say) before
    it started the cluster's: once START_GRACE has passed the sweep starts it."""
    tenant = make_tenant(sweeper.db.sessions)
    request_id = insert_request(sweeper.db.sessions, tenant, "approved-unstarted")
    cluster = insert_cluster(
        sweeper.db.sessions, tenant, "approved-unstarted", request_id=request_id,
        created_at=utcnow() - START_GRACE - timedelta(seconds=1),
    )  # fmt: skip
    with transaction(sweeper.db.sessions) as session:
        request = session.get_one(ClusterRequest, request_id)
        request.status, request.cluster_id = "approved", cluster.id
    wait_until(lambda: status_of(sweeper, cluster.id) == "available", what="the sweep to start the cluster")


def test_the_sweep_forgets_idempotency_keys_past_their_time(sweeper):
    """An answer kept for a key is replayed for 24 hours; after that the sweep deletes it, so that keys
    (and the secrets some keep, sealed) do not pile up for every later `credentials rotate` to read."""
    tenant = make_tenant(sweeper.db.sessions)
    user = uuid.UUID(tenant.cad.id)
    with transaction(sweeper.db.sessions) as session:
        session.add_all(
            [
                IdempotencyKey(user_id=user, key="old", fingerprint="f", created_at=utcnow() - IdempotencyKey.KEPT_FOR),
                IdempotencyKey(user_id=user, key="recent", fingerprint="f"),
            ]
        )

    def keys() -> set[str]:
        with sweeper.db.sessions() as session:
            return set(session.scalars(select(IdempotencyKey.key).where(IdempotencyKey.user_id == user)))

    wait_until(lambda: keys() == {"recent"}, what="the sweep to delete the old key")


def test_one_worker_sweeps_at_a_time_and_another_takes_over_when_it_stops(fresh_db):
    every = timedelta(seconds=60)
    first, second = "worker-a", "worker-b"
    assert take_turn(fresh_db.sessions, first, every) is not None
    assert take_turn(fresh_db.sessions, second, every) is None  # the first holds the lease
    assert take_turn(fresh_db.sessions, first, every) is not None  # and keeps it while it sweeps
    with transaction(fresh_db.sessions) as session:  # the first stopped two turns ago
        session.get_one(Sweep, SWEEP).held_until = utcnow() - timedelta(seconds=1)
    assert take_turn(fresh_db.sessions, second, every) is not None
    assert take_turn(fresh_db.sessions, first, every) is None


def test_a_sweep_after_the_first_looks_only_at_what_was_written_since(fresh_db, temporal_address):
    """The periodic sweep's cost follows what is new: given `since`, a request filed before then is not
    asked for again (the sweeps before it, or a process's start, did), one filed since is started."""
    tenant = make_tenant(fresh_db.sessions)
    older, newer = (
        insert_request(fresh_db.sessions, tenant, "older"),
        insert_request(fresh_db.sessions, tenant, "newer"),
    )
    since = utcnow() - timedelta(minutes=1)
    with transaction(fresh_db.sessions) as session:
        session.get_one(ClusterRequest, older).requested_at = since - timedelta(seconds=1)
    settings = Settings(database_url=fresh_db.url, task_queue=f"tq-{uuid.uuid4()}")  # no worker: starts only

    async def sweep_and_look() -> tuple[dict[str, int], set[str]]:
        client = await Client.connect(temporal_address)
        asked = await resume_workflows(client, fresh_db.sessions, settings, since=since)
        started = {str(r) for r in (older, newer) if await _running(temporal_address, f"request-{r}")}
        return asked, started

    asked, started = asyncio.run(sweep_and_look())
    assert asked == {"requests": 1, "clusters": 0, "metering": 0, "webhook deliveries": 0}
    assert started == {str(newer)}
