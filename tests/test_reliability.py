"""Nothing lost: a worker killed (SIGKILL) mid-provisioning and mid-install, an API that stopped between
writing a request and starting its workflow, a Temporal server restarted mid-provisioning, and many
decisions at once. Each on SQLite and PostgreSQL, against real processes."""

import asyncio
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from api.main import create_app
from core.db import make_engine, make_session_factory
from core.messages import ClusterInput, cluster_workflow_id
from core.models import Cluster, ClusterRequest, ClusterTool
from core.settings import Settings
from harness.servers import Process, free_port, start_temporal_dev_server, wait_for_http, wait_until
from harness.world import insert_cluster, insert_request, make_tenant, request_body, wait_for_cluster
from services.credits import keep_standing_rates
from services.migrations import upgrade
from tests.conftest import restart_worker, start_worker, wait_for_worker
from workflows.cluster import ClusterWorkflow

# Each simulated step takes this long, so that a crash can land in the middle of one.
SLOW = {"kind": "sim", "config": {"stepSeconds": 2}}


def events(api, tenant, cluster_id: str) -> list[tuple[str, str, str]]:
    return [
        (e["step"], e["status"], e["message"])
        for e in api.get(f"/clusters/{cluster_id}/events", headers=tenant.cad.headers, params={"limit": 500}).json()
    ]


def test_a_worker_killed_mid_provisioning_and_mid_install_leaves_each_step_done_once(api, stack):
    tenant = make_tenant(stack.db.sessions, extra_providers={"slow": SLOW})
    body = request_body(tenant.providers["slow"], tools=[])
    cluster = api.post("/clusters", json=body, headers=tenant.cad.headers).json()

    wait_until(lambda: ("network", "succeeded") in [e[:2] for e in events(api, tenant, cluster["id"])], timeout=30)
    stack.worker.kill()  # provisioning is half way: the network exists, the rest does not
    restart_worker(stack)
    # The provisioning activity is retried once its heartbeat is missed (a minute).
    wait_for_cluster(api, cluster["id"], tenant.cad.headers, "available", timeout=150)

    added = api.post(
        f"/clusters/{cluster['id']}/tools", json={"name": "yosys", "version": "0.40"}, headers=tenant.cad.headers
    )
    assert added.status_code == 202, added.text
    wait_until(lambda: ("install-tool", "started") in [e[:2] for e in events(api, tenant, cluster["id"])])
    stack.worker.kill()
    restart_worker(stack)

    def installed():
        tools = api.get(f"/clusters/{cluster['id']}/tools", headers=tenant.cad.headers).json()
        return tools if tools and tools[0]["status"] == "installed" else None

    wait_until(installed, timeout=150, what="yosys to be installed")
    counted = Counter(e[:2] for e in events(api, tenant, cluster["id"]))
    for step in ("network", "firewall", "head-node", "compute-nodes", "storage"):
        assert counted[(step, "succeeded")] == 1, (step, counted)
    assert counted[("provision", "started")] == 1 and counted[("provision", "succeeded")] == 1
    assert counted[("status", "available")] == 1
    assert counted[("install-tool", "started")] == 1 and counted[("install-tool", "succeeded")] == 1
    with stack.db.sessions() as session:
        assert session.scalar(select(func.count()).where(ClusterTool.cluster_id == uuid.UUID(cluster["id"]))) == 1
        assert session.scalar(select(func.count()).where(Cluster.tenant_id == uuid.UUID(tenant.id))) == 1


def test_a_request_written_by_an_api_that_then_stopped_gets_its_workflow_when_an_api_starts(stack, tmp_path):
    """The API writes the request, then dies before starting its workflow (here: the row is written
    and nothing else). The next API process to start finds it and starts its workflow, once."""
    tenant = make_tenant(stack.db.sessions)
    request_id = insert_request(stack.db.sessions, tenant, "orphan")
    port = free_port()
    restarted = Process(
        [os.sys.executable, "-m", "cli", "api"],
        tmp_path / "api.log",
        {**stack.env, "HPCINFRA_API_PORT": str(port)},
    )
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        wait_for_http(f"{base}/healthz", restarted)
        with httpx.Client(base_url=base, timeout=60) as client:

            def approved():
                answer = client.patch(f"/requests/{request_id}", json={"status": "approved"}, headers=tenant.it.headers)
                return answer if answer.status_code == 200 else None

            decided = wait_until(approved, timeout=60, what="the request's workflow to take a decision")
            wait_for_cluster(client, decided.json()["clusterId"], tenant.cad.headers, "available")
            listed = client.get("/requests", headers=tenant.it.headers).json()
            assert [r["id"] for r in listed] == [str(request_id)]  # not lost, and not duplicated
    finally:
        restarted.stop()


def test_a_temporal_server_restarted_mid_provisioning_picks_the_run_up(stack, fresh_db, tmp_path):
    """On a Temporal server of its own that keeps its state in a file, and a database of its own."""
    port = free_port()
    state = tmp_path / "temporal.db"
    server, address = start_temporal_dev_server(tmp_path / "temporal-1.log", port=port, db_file=state)
    env = {
        **stack.env,
        "HPCINFRA_DATABASE_URL": fresh_db.url,
        "HPCINFRA_TEMPORAL_ADDRESS": address,
        "HPCINFRA_TASK_QUEUE": f"tq-{uuid.uuid4().hex[:8]}",
    }
    tenant = make_tenant(fresh_db.sessions, extra_providers={"slow": SLOW})
    slow = uuid.UUID(tenant.providers["slow"])
    cluster = insert_cluster(fresh_db.sessions, tenant, "survivor", cloud_provider_id=slow)
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        wait_for_worker(worker)

        async def start():
            client = await Client.connect(address)
            await client.start_workflow(
                ClusterWorkflow.run,
                ClusterInput(str(cluster.id)),
                id=cluster_workflow_id(str(cluster.id)),
                task_queue=env["HPCINFRA_TASK_QUEUE"],
                # The worker may have started it already: a pending cluster without a workflow is one
                # a starting worker resumes.
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )

        asyncio.run(start())

        def status() -> str:
            with fresh_db.sessions() as session:
                return session.get_one(Cluster, cluster.id).status

        wait_until(lambda: status() == "provisioning", timeout=30)
        server.stop()
        server, _ = start_temporal_dev_server(tmp_path / "temporal-2.log", port=port, db_file=state)
        wait_until(lambda: status() == "available", timeout=180, what="the cluster to be available")
    finally:
        worker.stop()
        server.stop()


@pytest.mark.parametrize("requests_at_once", [50])
def test_many_decisions_at_once_give_one_decision_each(api, stack, requests_at_once):
    if stack.db.kind != "postgresql":
        pytest.skip("many writers at once: a PostgreSQL promise (SQLite takes one writer at a time)")
    tenant = make_tenant(stack.db.sessions)
    filed = []
    for _ in range(requests_at_once):
        response = api.post("/requests", json=request_body(tenant.provider_id, tools=[]), headers=tenant.cad.headers)
        assert response.status_code == 201, response.text
        filed.append(response.json()["id"])

    def approve(request_id: str) -> int:
        with httpx.Client(base_url=stack.base_url, timeout=120) as client:
            return client.patch(
                f"/requests/{request_id}", json={"status": "approved"}, headers=tenant.it.headers
            ).status_code

    with ThreadPoolExecutor(requests_at_once) as pool:
        assert list(pool.map(approve, filed)) == [200] * requests_at_once

    last = api.post("/requests", json=request_body(tenant.provider_id, tools=[]), headers=tenant.cad.headers).json()

    def decide(i: int) -> int:
        body = {"status": "approved"} if i % 2 else {"status": "rejected", "rejectionReason": f"no {i}"}
        with httpx.Client(base_url=stack.base_url, timeout=120) as client:
            return client.patch(f"/requests/{last['id']}", json=body, headers=tenant.it.headers).status_code

    with ThreadPoolExecutor(20) as pool:
        answers = Counter(pool.map(decide, range(20)))
    assert answers[200] == 1 and answers[409] == 19, answers

    with stack.db.sessions() as session:
        requests = session.scalars(select(ClusterRequest).where(ClusterRequest.tenant_id == uuid.UUID(tenant.id))).all()
        clusters = session.scalars(select(Cluster).where(Cluster.tenant_id == uuid.UUID(tenant.id))).all()
    approved = [r for r in requests if r.status == "approved"]
    assert len(requests) == requests_at_once + 1
    assert len(approved) in (requests_at_once, requests_at_once + 1)
    # One cluster per approval, each pointing at its own request.
    assert sorted(str(c.request_id) for c in clusters) == sorted(str(r.id) for r in approved)
    assert all(r.cluster_id is not None for r in approved)

    # Tear them down, so that their metering does not load the rest of the session.
    def delete(cluster: Cluster) -> int:
        with httpx.Client(base_url=stack.base_url, timeout=120) as client:
            return client.delete(f"/clusters/{cluster.id}", headers=tenant.it.headers).status_code

    with ThreadPoolExecutor(10) as pool:
        assert set(pool.map(delete, clusters)) <= {202, 409}


@contextmanager
def busy_sqlite(tmp_path, monkeypatch, lock_wait: float = 0.3):
    """An API on a SQLite file whose writers give up after `lock_wait` seconds; yields the test client, a
    tenant, one of its requests, and `held()`, a context in which another connection holds the write
    lock, as a long transaction would."""
    monkeypatch.setattr("core.db.LOCK_WAIT_SECONDS", lock_wait)
    path = tmp_path / "busy.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    sessions = make_session_factory(make_engine(url), hooks=[keep_standing_rates])
    tenant = make_tenant(sessions)
    request_id = insert_request(sessions, tenant)

    @contextmanager
    def held():
        writer = sqlite3.connect(path)
        writer.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            writer.rollback()
            writer.close()

    settings = Settings(database_url=url, data_dir=tmp_path, temporal_address="127.0.0.1:1")
    with TestClient(create_app(settings)) as client:
        yield client, tenant, request_id, held


def assert_told_to_retry(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "1"
    assert "too busy" in answer.json()["detail"]


def test_a_database_held_by_another_writer_answers_503_with_retry_after_and_changes_nothing(tmp_path, monkeypatch):
    """SQLite has one writer at a time: a call that waits out the busy timeout behind another writer is
    told to retry (503, Retry-After), not that the server failed."""
    with busy_sqlite(tmp_path, monkeypatch) as (client, tenant, request_id, held):
        notes = f"/api/v1/requests/{request_id}/notes"
        with held():
            answer = client.post(notes, json={"note": "waits"}, headers=tenant.it.headers)
        assert_told_to_retry(answer)
        assert client.get(notes, headers=tenant.it.headers).json() == []


def test_a_post_with_an_idempotency_key_told_to_retry_is_made_once_by_its_retries(tmp_path, monkeypatch):
    """The Idempotency-Key is claimed in the database before the call is made: a busy database there is
    a 503 too (not a 500), and leaves the key free for the retry."""
    with busy_sqlite(tmp_path, monkeypatch) as (client, tenant, request_id, held):
        notes = f"/api/v1/requests/{request_id}/notes"
        headers = {**tenant.it.headers, "Idempotency-Key": "note-1"}
        with held():
            assert_told_to_retry(client.post(notes, json={"note": "once"}, headers=headers))
        first = client.post(notes, json={"note": "once"}, headers=headers)
        again = client.post(notes, json={"note": "once"}, headers=headers)
        assert first.status_code == 201, first.text
        assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        assert [n["note"] for n in client.get(notes, headers=tenant.it.headers).json()] == ["once"]


def test_an_answer_made_while_the_database_turns_busy_is_delivered_and_kept_for_retries(tmp_path, monkeypatch):
    """The call was made; keeping its answer for its Idempotency-Key then meets a busy database. The caller
    still gets the answer (not a dropped connection), and a retry gets the same answer, not a 409."""
    from api import idempotency

    with busy_sqlite(tmp_path, monkeypatch) as (client, tenant, request_id, held):
        settle, attempts = idempotency._settle, []

        def settle_behind_a_writer(*args):
            attempts.append(1)
            if len(attempts) == 1:
                holding, release = threading.Event(), threading.Event()

                def writer():
                    with held():
                        holding.set()
                        release.wait(1.0)

                threading.Thread(target=writer, daemon=True).start()
                holding.wait(5)
            settle(*args)

        monkeypatch.setattr(idempotency, "_settle", settle_behind_a_writer)
        notes = f"/api/v1/requests/{request_id}/notes"
        headers = {**tenant.it.headers, "Idempotency-Key": "note-2"}
        first = client.post(notes, json={"note": "kept"}, headers=headers)
        assert first.status_code == 201, first.text
        assert len(attempts) > 1  # the first try met the writer
        again = client.post(notes, json={"note": "kept"}, headers=headers)
        assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
        assert [n["note"] for n in client.get(notes, headers=tenant.it.headers).json()] == ["kept"]


def test_writers_of_one_process_take_turns_on_sqlite_and_none_is_turned_away(tmp_path, monkeypatch):
    """SQLite's own busy handler lets writers poll for its lock, and under load some lose every turn for
    the whole wait (16 threads holding the lock 20 ms each, 3 s to wait: about 5 of 160 writes failed).
    The process's writers queue instead, so each waits its turn, well under the limit."""
    monkeypatch.setattr("core.db.LOCK_WAIT_SECONDS", 3)
    engine = make_engine(f"sqlite:///{tmp_path / 'turns.db'}")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)")
        connection.exec_driver_sql("INSERT INTO counter VALUES (1, 0)")

    def write_ten_times(_) -> int:
        refused = 0
        for _ in range(10):
            try:
                with engine.begin() as connection:
                    connection.exec_driver_sql("UPDATE counter SET n = n + 1 WHERE id = 1")
                    time.sleep(0.02)  # a transaction that holds the lock a while
            except OperationalError:
                refused += 1
        return refused

    with ThreadPoolExecutor(16) as pool:
        refused = sum(pool.map(write_ten_times, range(16)))
    with engine.connect() as connection:
        assert (refused, connection.exec_driver_sql("SELECT n FROM counter").scalar()) == (0, 160)


# Another process's writers, as a worker's at the minute when every cluster is metered: 16 threads that
# hold SQLite's write lock 20 ms each, one after another, for as many seconds as the first argument.
BUSY_WRITERS = """
import sys, threading, time
from core.db import make_engine
engine = make_engine(sys.argv[2])
end = time.monotonic() + float(sys.argv[1])
def write():
    while time.monotonic() < end:
        with engine.begin() as connection:
            connection.exec_driver_sql("UPDATE counter SET n = n + 1 WHERE id = 1")
            time.sleep(0.02)
threads = [threading.Thread(target=write) for _ in range(16)]
for thread in threads: thread.start()
print("writing", flush=True)
for thread in threads: thread.join()
"""


def test_a_sqlite_writer_waits_its_turn_behind_another_process_s_writers(tmp_path, monkeypatch):
    """The processes on one SQLite file (the API and the worker) queue for its write lock too: SQLite's
    own polling would let a writer lose every turn to another process's writers, who hand the lock on
    without a gap (without the queue, 2 of these 40 writes failed after waiting 2 s)."""
    monkeypatch.setattr("core.db.LOCK_WAIT_SECONDS", 2)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)")
        connection.exec_driver_sql("INSERT INTO counter VALUES (1, 0), (2, 0)")
    other = subprocess.Popen([sys.executable, "-c", BUSY_WRITERS, "8", url], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline() == "writing\n"
        refused = 0
        for _ in range(40):
            try:
                with engine.begin() as connection:
                    connection.exec_driver_sql("UPDATE counter SET n = n + 1 WHERE id = 2")
            except OperationalError:
                refused += 1
            time.sleep(0.05)
    finally:
        other.kill()
        other.wait()
    assert refused == 0


def test_a_sqlite_writer_whose_connection_broke_gives_its_turn_back(tmp_path, monkeypatch):
    monkeypatch.setattr("core.db.LOCK_WAIT_SECONDS", 1)
    engine = make_engine(f"sqlite:///{tmp_path / 'broken.db'}")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (n INTEGER)")
    broken = engine.connect()
    broken.exec_driver_sql("INSERT INTO t VALUES (1)")
    broken.invalidate()  # as on a lost connection: its transaction is gone
    broken.close()
    with engine.begin() as connection:
        connection.exec_driver_sql("INSERT INTO t VALUES (2)")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT n FROM t").scalars().all() == [2]
