"""Work committed whose workflow never started (an API stopped between its commit and the start, a
Temporal blip) is started by the worker's periodic sweep, without waiting for a process to start; one
worker sweeps at a time, whichever holds the sweep's lease (workflows/resume.py).

The stack's worker sweeps every second (tests/conftest.py)."""

import asyncio
import uuid
from datetime import timedelta

from sqlalchemy import select
from temporalio.client import Client
from temporalio.service import RPCError

from hpcinfra.db import transaction
from hpcinfra.models import ClusterRequest, IdempotencyKey, Sweep, utcnow
from hpcinfra.settings import Settings
from tests.utils.servers import wait_until
from tests.utils.world import insert_cluster, insert_request, make_tenant, wait_for_cluster
from workflows.resume import START_GRACE, SWEEP, resume_workflows, take_turn


def test_a_request_whose_workflow_never_started_is_picked_up_by_the_sweep(api, stack):
    tenant = make_tenant(stack.db.sessions)
    request_id = insert_request(stack.db.sessions, tenant, "left-unstarted")  # committed, and nothing else

    def approved():
        answer = api.patch(f"/requests/{request_id}", json={"status": "approved"}, headers=tenant.it.headers)
        return answer if answer.status_code == 200 else None

    decided = wait_until(approved, timeout=30, what="the sweep to start the request's workflow")
    wait_for_cluster(api, decided.json()["clusterId"], tenant.cad.headers, "available")


def test_an_approved_request_whose_cluster_never_started_gets_it_started(api, stack):
    """The approval committed the cluster; its request's workflow was ended (by an operator, say) before
    it started the cluster's: once START_GRACE has passed the sweep starts it."""
    tenant = make_tenant(stack.db.sessions)
    request_id = insert_request(stack.db.sessions, tenant, "approved-unstarted")
    cluster = insert_cluster(
        stack.db.sessions, tenant, "approved-unstarted", request_id=request_id,
        created_at=utcnow() - START_GRACE - timedelta(seconds=1),
    )  # fmt: skip
    with transaction(stack.db.sessions) as session:
        request = session.get_one(ClusterRequest, request_id)
        request.status, request.cluster_id = "approved", cluster.id
    wait_for_cluster(api, str(cluster.id), tenant.cad.headers, "available")


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
        started = set()
        for request_id in (older, newer):
            try:
                await client.get_workflow_handle(f"request-{request_id}").describe()
                started.add(str(request_id))
            except RPCError:
                pass
        return asked, started

    asked, started = asyncio.run(sweep_and_look())
    assert asked == {"requests": 1, "clusters": 0, "metering": 0, "webhook deliveries": 0}
    assert started == {str(newer)}


def test_the_sweep_forgets_idempotency_keys_past_their_time(stack):
    """An answer kept for a key is replayed for 24 hours; after that the sweep deletes it, so that keys
    (and the secrets some keep, sealed) do not pile up for every later `credentials rotate` to read."""
    tenant = make_tenant(stack.db.sessions)
    user = uuid.UUID(tenant.cad.id)
    with transaction(stack.db.sessions) as session:
        session.add_all(
            [
                IdempotencyKey(user_id=user, key="old", fingerprint="f", created_at=utcnow() - IdempotencyKey.KEPT_FOR),
                IdempotencyKey(user_id=user, key="recent", fingerprint="f"),
            ]
        )

    def keys() -> set[str]:
        with stack.db.sessions() as session:
            return set(session.scalars(select(IdempotencyKey.key).where(IdempotencyKey.user_id == user)))

    wait_until(lambda: keys() == {"recent"}, timeout=30, what="the sweep to delete the old key")
