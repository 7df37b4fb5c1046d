"""How fast the metering reads answer for a tenant with a month of minute samples of many clusters.

It makes a fresh database (a new PostgreSQL schema, or a SQLite file) with the project's migrations,
seeds one tenant with N clusters and D days of their minute samples up to the current minute (1000
clusters x 30 days = 43.2 million rows), the hour and day rollups built from them, one ledger entry
per cluster and hour (the balance debited to match), starts the real API as a process and times,
over HTTP, after a few warm-up calls:

  a. GET /clusters/{id}/metrics?interval=hour over the D days up to the end of the data (~720 points);
  b. GET /tenants/{id}/analytics with its default range, the last 30 days (N clusters in the breakdown);
  c. GET /clusters/{id}/metrics/summary.

It prints the median, p95, min and max wall-clock time of a call, the seeding time and the row
counts, the SQL statements behind each query (timed in-process) with the EXPLAIN ANALYZE of the
slowest one behind (b), and whether the medians of (a) and (b) are under the 100 ms target.

Run it from the repository root (the defaults are the full scale, on PostgreSQL):

    .venv/bin/python -m bench.metering [--clusters 1000] [--days 30] [--database postgresql|sqlite]
                                       [--repeat 50] [--max-seconds 120] [--keep]

It exits with 0 when the target is met, 1 when it is not, 2 when an answer is wrong, 130 when interrupted.

PostgreSQL is the server at HPCINFRA_BENCH_POSTGRES_URL (default: DEFAULT_POSTGRES_URL below); the
schema made there is dropped at the end unless --keep. At full scale, seeding takes minutes and the
schema about 7 GB. SQLite is seeded from Python, and meant for small runs (--clusters 20 --days 3).
"""

import argparse
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy import bindparam, event, text
from sqlalchemy.engine import Connection, Engine

from core.catalog import NODE_TYPES
from core.db import make_engine, make_session_factory, transaction
from core.models import Cluster, MetricSample, UTCDateTime
from harness.servers import Process, free_port, wait_for_http
from services import accounts, credits, reports
from services.credits import keep_standing_rates
from services.metering import floor_minute
from services.migrations import upgrade

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 100
WARM_UP_CALLS = 3
# A query stops being timed after --max-seconds, once it has had this many calls.
MIN_CALLS = 5
# The ranges asked for end this long after the last seeded minute (see `queries`).
SECONDS_INTO_MINUTE = timedelta(seconds=30)
MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)

# Every cluster: 4 small nodes and 100 GB, made by one of a few CAD managers (for the by-user breakdown).
NODE_TYPE, NODES, STORAGE_GB = "small", 4, 100
RATE = credits.cluster_rate(NODE_TYPE, NODES, STORAGE_GB)  # credit units per minute
CORES, MEMORY_GB = NODES * NODE_TYPES[NODE_TYPE].vcpus, NODES * NODE_TYPES[NODE_TYPE].memory_gb
CAD_MANAGERS = 4
# The opening grant covers the seeded consumption and leaves this much, so the tenant is not over budget.
LEFT_AFTER_SEEDING = 10_000  # credits
METERING_TABLES = ("metric_samples", "metric_rollups", "credit_ledger")
ANALYZED_TABLES = (*METERING_TABLES, "clusters", "tenants", "users", "api_tokens", "cloud_providers")
# More sample rows than this are slow to seed from Python (SQLite).
SQLITE_COMFORTABLE_ROWS = 2_000_000
SQLITE_CHUNK_ROWS = 20_000
TIME, ID = UTCDateTime(), sa.Uuid()


class CheckFailed(Exception):
    """An answer of the API is not what the seeded data implies: the timings would mean nothing."""


def ensure(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


# --- the database ----------------------------------------------------------------------------------


@contextmanager
def fresh_database(kind: str, folder: Path, keep: bool) -> Iterator[str]:
    """The URL of a migrated, empty database: a file in `folder`, or a new schema on the PostgreSQL server."""
    if kind == "sqlite":
        url = f"sqlite:///{folder / 'hpcinfra.db'}"
        upgrade(url)
        yield url
        return
    server = os.environ.get("HPCINFRA_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    schema = f"hpcinfra_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    print(f"schema {schema} on {sa.make_url(server).render_as_string(hide_password=True)}")
    try:
        separator = "&" if "?" in server else "?"
        url = f"{server}{separator}options=-csearch_path%3D{schema}"
        upgrade(url)
        yield url
    finally:
        if keep:
            print(f'kept schema {schema} (DROP SCHEMA "{schema}" CASCADE drops it)')
        else:
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


# --- seeding -----------------------------------------------------------------------------------------


@dataclass
class World:
    """What was seeded: the tenant, its callers' tokens, its clusters and the span of their samples."""

    tenant_id: uuid.UUID
    it_token: str
    cad_token: str  # the CAD manager who made cluster 0
    cluster_ids: list[uuid.UUID]
    start: datetime
    end: datetime

    @property
    def minutes(self) -> int:
        return int((self.end - self.start) / MINUTE)

    @property
    def samples(self) -> int:
        return len(self.cluster_ids) * self.minutes


def seed_accounts(engine: Engine, clusters: int, start: datetime, end: datetime) -> World:
    """The tenant (with an opening grant, as for any tenant), its users and provider, and its clusters."""
    consumption = clusters * int((end - start) / MINUTE) * RATE
    opening = Decimal(math.ceil(consumption / credits.UNITS_PER_CREDIT) + LEFT_AFTER_SEEDING)
    with transaction(make_session_factory(engine, hooks=[keep_standing_rates])) as session:
        tenant = accounts.create_tenant(session, f"bench-{uuid.uuid4().hex[:8]}", opening_credits=opening)
        cads = [
            accounts.create_user(session, tenant, email=f"cad{k}@bench.example", name=f"CAD {k}", role="cad_manager")
            for k in range(CAD_MANAGERS)
        ]
        it = accounts.create_user(session, tenant, email="it@bench.example", name="IT", role="it_manager")
        provider = accounts.create_provider(session, tenant.id, name="sim", kind="sim", region="sim-1")
        rows = [
            Cluster(
                tenant_id=tenant.id,
                name=f"bench-{i:04d}",
                cloud_provider_id=provider.id,
                number_of_nodes=NODES,
                node_type=NODE_TYPE,
                storage_gb=STORAGE_GB,
                status="available",
                created_by_id=cads[i % CAD_MANAGERS].id,
                created_at=start,
                metering_from=start,
                metered_until=end,
            )
            for i in range(clusters)
        ]
        session.add_all(rows)
        session.flush()
        return World(
            tenant.id,
            accounts.issue_token(session, it),
            accounts.issue_token(session, cads[0]),
            [c.id for c in rows],
            start,
            end,
        )


def utilisation(m: int, i: int) -> tuple[int, int, int]:
    """CPU, memory and storage use of cluster `i` in minute `m` (of the epoch), in hundredths of a percent:
    a daily wave of CPU, a weekly one of memory and storage filling over 30 days, with some jitter."""
    cpu = 5000 + 3000 * math.sin(2 * math.pi * (m % 1440) / 1440 + i) + (m * 7919 + i * 104729) % 1601 - 800
    memory = 4500 + 2500 * math.cos(2 * math.pi * (m % 10080) / 10080 + i / 2) + (m * 104729 + i * 7919) % 801 - 400
    storage = 1000 + i * 613 % 5000 + m % 43200 // 20
    return tuple(max(0, min(10000, round(value))) for value in (cpu, memory, storage))


# `utilisation` in SQL, over `m` (bigint) and `i` (int).
UTILISATION_SQL = [
    f"CAST(greatest(0, least(10000, round({expression}))) AS int)"
    for expression in (
        "5000 + 3000 * sin(2 * pi() * (m % 1440) / 1440 + i) + (m * 7919 + i * 104729) % 1601 - 800",
        "4500 + 2500 * cos(2 * pi() * (m % 10080) / 10080 + i / 2.0) + (m * 104729 + i * 7919) % 801 - 400",
        "1000 + i * 613 % 5000 + m % 43200 / 20",
    )
]
# The minutes [first, last] of every cluster, generated in the server and written minute by minute, as
# metering writes them (so the table's rows lie in time order, as they would).
POSTGRES_SAMPLES = """
INSERT INTO metric_samples
    (cluster_id, minute, cpu_use, memory_use, storage_use, cores, memory_gb, storage_gb, credit_units)
SELECT c.id, g.minute, {}, {}, {}, :cores, :memory_gb, :storage_gb, :rate
FROM generate_series(CAST(:first AS timestamptz), CAST(:last AS timestamptz), interval '1 minute') AS g(minute)
CROSS JOIN unnest(CAST(:ids AS uuid[]), CAST(:indexes AS int[])) AS c(id, i)
CROSS JOIN LATERAL (SELECT CAST(extract(epoch FROM g.minute) AS bigint) / 60 AS m) AS epoch
ORDER BY g.minute, c.i
""".format(*UTILISATION_SQL)


def insert_samples_postgres(connection: Connection, world: World, first: datetime, end: datetime) -> None:
    connection.execute(
        text(POSTGRES_SAMPLES),
        {
            "first": first,
            "last": end - MINUTE,
            "ids": world.cluster_ids,
            "indexes": list(range(len(world.cluster_ids))),
            "cores": CORES,
            "memory_gb": MEMORY_GB,
            "storage_gb": STORAGE_GB,
            "rate": RATE,
        },
    )


def insert_samples_sqlite(connection: Connection, world: World, first: datetime, end: datetime) -> None:
    def rows() -> Iterator[dict[str, Any]]:
        minute = first
        while minute < end:
            m = int(minute.timestamp()) // 60
            for i, cluster_id in enumerate(world.cluster_ids):
                cpu, memory, storage = utilisation(m, i)
                yield {
                    "cluster_id": cluster_id,
                    "minute": minute,
                    "cpu_use": cpu,
                    "memory_use": memory,
                    "storage_use": storage,
                    "cores": CORES,
                    "memory_gb": MEMORY_GB,
                    "storage_gb": STORAGE_GB,
                    "credit_units": RATE,
                }
            minute += MINUTE

    chunk: list[dict[str, Any]] = []
    for row in rows():
        chunk.append(row)
        if len(chunk) == SQLITE_CHUNK_ROWS:
            connection.execute(sa.insert(MetricSample), chunk)
            chunk = []
    if chunk:
        connection.execute(sa.insert(MetricSample), chunk)


def seed_samples(connection: Connection, world: World) -> None:
    """A day of every cluster's minutes at a time, committed as it goes."""
    insert = insert_samples_postgres if connection.dialect.name == "postgresql" else insert_samples_sqlite
    started, day = time.monotonic(), world.start
    while day < world.end:
        insert(connection, world, day, min(day + DAY, world.end))
        connection.commit()
        day = min(day + DAY, world.end)
        done, elapsed = len(world.cluster_ids) * int((day - world.start) / MINUTE), time.monotonic() - started
        print(
            f"  samples: {done:,} of {world.samples:,} ({done / world.samples:.0%}) in {elapsed:.0f} s, "
            f"{done / elapsed:,.0f} rows/s",
            flush=True,
        )


# The start of the hour or day of `minute`, in UTC. SQLite holds times as 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC.
PERIOD_OF = {
    "postgresql": {"hour": "date_trunc('hour', minute, 'UTC')", "day": "date_trunc('day', minute, 'UTC')"},
    "sqlite": {
        "hour": "substr(minute, 1, 13) || ':00:00.000000'",
        "day": "substr(minute, 1, 10) || ' 00:00:00.000000'",
    },
}
ROLLUPS = """
INSERT INTO metric_rollups (cluster_id, resolution, start, tenant_id, samples, cpu_use, memory_use, storage_use,
                            cores, memory_gb, storage_gb, credit_units)
SELECT cluster_id, :resolution, {period}, :tenant_id, count(*), sum(cpu_use), sum(memory_use), sum(storage_use),
       max(cores), max(memory_gb), max(storage_gb), sum(credit_units)
FROM metric_samples
GROUP BY cluster_id, {period}
ORDER BY {period}, cluster_id
"""


def build_rollups(connection: Connection, world: World) -> None:
    """The hour and day rollups of the samples: what metering keeps up to date as it records them."""
    for resolution in ("hour", "day"):
        statement = ROLLUPS.format(period=PERIOD_OF[connection.dialect.name][resolution])
        connection.execute(
            text(statement).bindparams(bindparam("tenant_id", type_=ID)),
            {"resolution": resolution, "tenant_id": world.tenant_id},
        )
        connection.commit()


# max/min of times, and the end of an hour that starts at `start`.
LEDGER_FUNCTIONS = {
    "postgresql": ("greatest", "least", "start + interval '1 hour'"),
    "sqlite": ("max", "min", "strftime('%Y-%m-%d %H:%M:%S.000000', start, '+1 hour')"),
}
LEDGER = """
INSERT INTO credit_ledger (tenant_id, kind, amount, cluster_id, period_start, period_end, "time")
SELECT tenant_id, 'consumption', -credit_units, cluster_id, {0}(start, :start), {1}({2}, :end), :now
FROM metric_rollups
WHERE resolution = 'hour'
"""
DEBIT = """
UPDATE tenants
SET credit_balance = credit_balance
    + (SELECT sum(amount) FROM credit_ledger WHERE tenant_id = :tenant_id AND kind = 'consumption')
WHERE id = :tenant_id
"""


def charge(connection: Connection, world: World) -> None:
    """One consumption entry per cluster and hour, drawn from the balance (which stays the ledger's sum)."""
    statement = LEDGER.format(*LEDGER_FUNCTIONS[connection.dialect.name])
    connection.execute(
        text(statement).bindparams(
            bindparam("start", type_=TIME), bindparam("end", type_=TIME), bindparam("now", type_=TIME)
        ),
        {"start": world.start, "end": world.end, "now": datetime.now(UTC)},
    )
    connection.execute(text(DEBIT).bindparams(bindparam("tenant_id", type_=ID)), {"tenant_id": world.tenant_id})
    connection.commit()
    balance, ledger = connection.execute(
        text(
            "SELECT credit_balance, (SELECT sum(amount) FROM credit_ledger WHERE tenant_id = :tenant_id) "
            "FROM tenants WHERE id = :tenant_id"
        ).bindparams(bindparam("tenant_id", type_=ID)),
        {"tenant_id": world.tenant_id},
    ).one()
    ensure(balance == ledger, f"the balance ({balance}) is not the sum of the ledger ({ledger})")


# The keys, foreign keys (made after the keys) and other indexes of some tables, as DDL to drop and make them.
POSTGRES_SCHEMA_OF = """
SELECT CASE contype WHEN 'f' THEN 1 ELSE 0 END AS stage, conrelid::regclass::text AS tab, conname::text AS name,
       format('ALTER TABLE %s DROP CONSTRAINT %I', conrelid::regclass, conname) AS drop_ddl,
       format('ALTER TABLE %s ADD CONSTRAINT %I %s', conrelid::regclass, conname, pg_get_constraintdef(oid)) AS make_ddl
FROM pg_constraint
WHERE conrelid = ANY(CAST(:tables AS regclass[])) AND contype IN ('p', 'u', 'f')
UNION ALL
SELECT 2, indrelid::regclass::text, indexrelid::regclass::text,
       format('DROP INDEX %s', indexrelid::regclass), pg_get_indexdef(indexrelid)
FROM pg_index AS i
WHERE indrelid = ANY(CAST(:tables AS regclass[]))
  AND NOT EXISTS (SELECT FROM pg_constraint AS c WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid)
ORDER BY stage, tab, name
"""


def postgres_schema_of(connection: Connection, tables: tuple[str, ...]) -> list[sa.Row]:
    return connection.execute(text(POSTGRES_SCHEMA_OF), {"tables": list(tables)}).all()


def drop_keys(connection: Connection, tables: tuple[str, ...]) -> list[sa.Row]:
    """PostgreSQL loads rows much faster into tables without keys, indexes and foreign keys (checked row by
    row): drop them for the load (`make_keys` makes them again); returns what they were."""
    schema = postgres_schema_of(connection, tables)
    for item in reversed(schema):
        connection.execute(text(item.drop_ddl))
    connection.commit()
    return schema


def make_keys(connection: Connection, tables: tuple[str, ...], schema: list[sa.Row]) -> None:
    """Make the keys and indexes `drop_keys` dropped, and check they are exactly as the migrations made them."""
    started = time.monotonic()
    connection.execute(text("SET maintenance_work_mem = '1GB'"))
    for item in schema:
        connection.execute(text(item.make_ddl))
        connection.commit()
        print(f"  made {item.name} ({time.monotonic() - started:.0f} s)", flush=True)
    ensure(postgres_schema_of(connection, tables) == schema, "the keys and indexes are not as the migrations made them")


def vacuum_analyze(engine: Engine) -> None:
    """Statistics for the planner, and the visibility map and hint bits autovacuum would have set by now."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"VACUUM (ANALYZE) {', '.join(ANALYZED_TABLES)}"))
        else:
            connection.execute(text("ANALYZE"))


@dataclass
class Seeding:
    seconds: float
    phases: dict[str, float]
    rows: dict[str, int]


def seed(url: str, clusters: int, days: int) -> tuple[World, Seeding]:
    """Seed the database at `url` (with an engine of its own: seeding changes its connection's settings)."""
    engine = make_engine(url)
    try:
        return _seed(engine, clusters, days)
    finally:
        engine.dispose()


def _seed(engine: Engine, clusters: int, days: int) -> tuple[World, Seeding]:
    end = floor_minute(datetime.now(UTC))
    phases: dict[str, float] = {}

    @contextmanager
    def phase(name: str) -> Iterator[None]:
        print(f"{name}...", flush=True)
        started = time.monotonic()
        yield
        phases[name] = time.monotonic() - started

    started = time.monotonic()
    with phase("accounts and clusters"):
        world = seed_accounts(engine, clusters, end - days * DAY, end)
    with engine.connect() as connection:
        postgres = connection.dialect.name == "postgresql"
        if postgres:  # for this connection only: the API runs with the server's settings
            connection.execute(text("SET synchronous_commit = off"))
            connection.execute(text("SET work_mem = '256MB'"))
            schema = drop_keys(connection, METERING_TABLES)
        with phase("samples"):
            seed_samples(connection, world)
        with phase("rollups"):
            build_rollups(connection, world)
        with phase("ledger"):
            charge(connection, world)
        if postgres:
            with phase("keys and indexes"):
                make_keys(connection, METERING_TABLES, schema)
    with phase("vacuum and analyze"):
        vacuum_analyze(engine)
    seconds = time.monotonic() - started
    with engine.connect() as connection:
        rows = {table: connection.scalar(text(f"SELECT count(*) FROM {table}")) for table in METERING_TABLES}
    ensure(rows["metric_samples"] == world.samples, f"{rows['metric_samples']:,} samples, not {world.samples:,}")
    return world, Seeding(seconds, phases, rows)


# --- measuring ---------------------------------------------------------------------------------------


@contextmanager
def running_api(url: str, folder: Path) -> Iterator[str]:
    """The real API, as a process on a free port, on the database at `url`; yields its base URL."""
    port = free_port()
    env = {
        "HPCINFRA_DATABASE_URL": url,
        "HPCINFRA_API_PORT": str(port),
        "HPCINFRA_DATA_DIR": str(folder / "api-data"),
        "HPCINFRA_TEMPORAL_ADDRESS": "127.0.0.1:1",  # these endpoints never use Temporal
    }
    api = Process([sys.executable, "-m", "cli", "api"], folder / "api.log", env, cwd=ROOT)
    try:
        base_url = f"http://127.0.0.1:{port}/api/v1"
        wait_for_http(f"{base_url}/healthz", api)
        yield base_url
    finally:
        api.stop()


@dataclass
class Query:
    key: str  # "a", "b" or "c"
    label: str
    path: str
    params: dict[str, str]
    token: str
    check: Callable[[dict[str, Any]], str]  # what the answer holds, in a few words; raises CheckFailed if wrong
    profile: Callable[[Any], Any]  # the same question asked in-process, of a session (for its SQL)


@dataclass
class Timing:
    query: Query
    answer: str
    milliseconds: list[float]

    @property
    def name(self) -> str:
        return f"{self.query.key}. {self.query.label}"

    @property
    def median(self) -> float:
        return statistics.median(self.milliseconds)

    def stats(self) -> dict[str, float]:
        ordered = sorted(self.milliseconds)
        return {
            "median": self.median,
            "p95": ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)],  # nearest rank
            "min": ordered[0],
            "max": ordered[-1],
        }


def last_30_days() -> tuple[datetime, datetime, datetime]:
    """Start, end and now of the analytics' default range, as the API makes it."""
    now = datetime.now(UTC)
    return now - 30 * DAY, now, now


def queries(world: World, days: int) -> list[Query]:
    """(a), (b) and (c), each with what its answer must hold. (a) is over the `days` days up to the end of the
    data; (b) is what a dashboard asks: the default range, the 30 days up to the real now (tenant figures
    count whole hours from rollups, so the minutes seeding took, which have no samples, change nothing)."""
    end = world.end + SECONDS_INTO_MINUTE
    start = end - days * DAY
    span = {"start": start.isoformat(), "end": end.isoformat()}
    cluster_id = world.cluster_ids[0]
    clusters = len(world.cluster_ids)
    # One point per hour that has minutes recorded, from the hour of `start` to the last seeded hour.
    hours = int((reports.floor_to(world.end - MINUTE, HOUR) - reports.floor_to(max(start, world.start), HOUR)) / HOUR)

    def points(answer: dict[str, Any]) -> str:
        ensure(len(answer["metrics"]) == hours + 1, f"{len(answer['metrics'])} points, not {hours + 1}")
        return f"{len(answer['metrics'])} points"

    def breakdown(answer: dict[str, Any]) -> str:
        by_cluster, by_user = answer["breakdown"]["byCluster"], answer["breakdown"]["byUser"]
        ensure(len(by_cluster) == clusters, f"{len(by_cluster)} clusters in the breakdown, not {clusters}")
        ensure(len(by_user) == min(clusters, CAD_MANAGERS), f"{len(by_user)} users in the breakdown")
        return f"{len(by_cluster)} clusters, {len(by_user)} users"

    def total(answer: dict[str, Any]) -> str:
        consumed, expected = answer["credits"]["totalConsumed"], credits.as_credits(world.minutes * RATE)
        ensure(consumed == expected, f"the cluster consumed {consumed} credits, not {expected}")
        return f"{consumed:,.0f} credits consumed"

    return [
        Query(
            "a",
            f"cluster metrics, {days} d by the hour",
            f"/clusters/{cluster_id}/metrics",
            {**span, "interval": "hour"},
            world.it_token,
            points,
            lambda session: reports.series(session, cluster_id, start, end, "hour"),
        ),
        Query(
            "b",
            f"tenant analytics, {days} d",
            f"/tenants/{world.tenant_id}/analytics",
            {},
            world.it_token,
            breakdown,
            lambda session: reports.analytics(session, world.tenant_id, *last_30_days()),
        ),
        Query(
            "c",
            "cluster metrics summary",
            f"/clusters/{cluster_id}/metrics/summary",
            {},
            world.cad_token,
            total,
            lambda session: reports.summary(session, session.get(Cluster, cluster_id)),
        ),
    ]


def time_query(client: httpx.Client, query: Query, repeat: int, max_seconds: float) -> Timing:
    """Wall-clock milliseconds of `repeat` calls (fewer if they take over `max_seconds`), after a few
    warm-up calls and a check of the answer."""
    headers = {"Authorization": f"Bearer {query.token}"}
    for _ in range(WARM_UP_CALLS):
        response = client.get(query.path, params=query.params, headers=headers)
        ensure(response.status_code == 200, f"({query.key}): {response.status_code} {response.text[:500]}")
    answer = query.check(response.json())
    milliseconds: list[float] = []
    deadline = time.monotonic() + max_seconds
    while len(milliseconds) < repeat and (len(milliseconds) < MIN_CALLS or time.monotonic() < deadline):
        started = time.perf_counter()
        response = client.get(query.path, params=query.params, headers=headers)
        milliseconds.append((time.perf_counter() - started) * 1000)
        ensure(response.status_code == 200, f"({query.key}): {response.status_code} {response.text[:500]}")
    return Timing(query, answer, milliseconds)


# --- the SQL behind the queries ------------------------------------------------------------------------


@dataclass
class Statement:
    milliseconds: float
    sql: str
    parameters: Any

    @property
    def summary(self) -> str:
        return " ".join(self.sql.split())


def statements_of(engine: Engine, call: Callable[[Any], Any]) -> list[Statement]:
    """The statements `call` runs on a session (its second run, so caches are warm), slowest first; each
    timed by the driver's execute, which on PostgreSQL includes receiving its rows (SQLite fetches later)."""
    sessions = make_session_factory(engine, hooks=[keep_standing_rates])
    with sessions() as session:
        call(session)
    timed: list[Statement] = []

    def before(connection, cursor, sql, parameters, context, executemany) -> None:
        connection.info["bench_started"] = time.perf_counter()

    def after(connection, cursor, sql, parameters, context, executemany) -> None:
        elapsed = time.perf_counter() - connection.info.pop("bench_started")
        timed.append(Statement(elapsed * 1000, sql, parameters))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        with sessions() as session:
            call(session)
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
    return sorted(timed, key=lambda s: -s.milliseconds)


def explain(engine: Engine, statement: Statement) -> list[str]:
    """The plan of `statement` with its parameters: run, with its timings, on PostgreSQL."""
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            rows = connection.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {statement.sql}", statement.parameters)
            return [row[0] for row in rows]
        rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement.sql}", statement.parameters)
        return [row[-1] for row in rows]


# --- reporting ---------------------------------------------------------------------------------------


def print_seeding(world: World, seeding: Seeding, database: str) -> None:
    size = f"{len(world.cluster_ids):,} clusters x {world.minutes:,} minutes"
    phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in seeding.phases.items())
    print(f"\nseeded {size} on {database} in {seeding.seconds:.1f} s ({phases})")
    print("rows: " + ", ".join(f"{table} {count:,}" for table, count in seeding.rows.items()))


def print_timings(timings: list[Timing]) -> None:
    width = max(len(t.name) for t in timings)
    print(f"\n{'query':<{width}}  {'median':>7}  {'p95':>7}  {'min':>7}  {'max':>7}  {'calls':>5}  answer")
    for timing in timings:
        stats = timing.stats()
        columns = "  ".join(f"{stats[name]:7.1f}" for name in ("median", "p95", "min", "max"))
        print(f"{timing.name:<{width}}  {columns}  {len(timing.milliseconds):5}  {timing.answer}")
    print(f"(milliseconds of wall clock per HTTP call, after {WARM_UP_CALLS} warm-up calls)")


def print_statements(engine: Engine, timings: list[Timing]) -> None:
    """The SQL behind each query, and the plan of the slowest statement behind (b) and behind any query
    over the target."""
    print("\nSQL behind each query (in-process, warm; slowest first):")
    for timing in timings:
        statements = statements_of(engine, timing.query.profile)
        total = sum(s.milliseconds for s in statements)
        print(f"  {timing.name}: {len(statements)} statements, {total:.1f} ms")
        for statement in statements[:3]:
            print(f"    {statement.milliseconds:7.1f} ms  {statement.summary[:100]}")
        if timing.query.key == "b" or timing.median >= TARGET_MS:
            print(f"    plan of the slowest ({statements[0].summary[:60]}...):")
            for line in explain(engine, statements[0]):
                print(f"      {line}")


# --- the benchmark -------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> bool:
    """Seed, measure and report; True when (a) and (b) meet the target."""
    with ExitStack() as cleanup:
        folder = Path(tempfile.mkdtemp(prefix="hpcinfra-bench-"))
        cleanup.callback(lambda: print(f"kept {folder}") if args.keep else shutil.rmtree(folder, ignore_errors=True))
        url = cleanup.enter_context(fresh_database(args.database, folder, args.keep))
        world, seeding = seed(url, args.clusters, args.days)
        print_seeding(world, seeding, args.database)
        with running_api(url, folder) as base_url, httpx.Client(base_url=base_url, timeout=120) as client:
            timings = [time_query(client, q, args.repeat, args.max_seconds) for q in queries(world, args.days)]
        print_timings(timings)
        engine = make_engine(url)
        cleanup.callback(engine.dispose)
        print_statements(engine, timings)
        slow = [t.query.key for t in timings if t.query.key in ("a", "b") and t.median >= TARGET_MS]
        verdict = f"NOT met ({' and '.join(slow)} over)" if slow else "met"
        print(f"\ntarget, median under {TARGET_MS} ms for (a) and (b): {verdict}")
        return not slow


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.metering", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=1000, help="clusters of the tenant (default 1000)")
    parser.add_argument("--days", type=int, default=30, help="days of minute samples, up to now (default 30)")
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--repeat", type=int, default=50, help="timed calls per query (default 50)")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=120,
        help=f"stop timing a query after this long, once it has had {MIN_CALLS} calls (default 120)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database (and the API's log) afterwards")
    args = parser.parse_args(argv)
    if args.clusters < 1 or args.days < 1 or args.repeat < 1:
        parser.error("--clusters, --days and --repeat must be at least 1")
    return args


def _interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)  # cleaned up as for Ctrl-C
    samples = args.clusters * args.days * 24 * 60
    print(f"hpcinfra metering benchmark: {args.clusters:,} clusters x {args.days} days = {samples:,} minute samples")
    if args.database == "sqlite" and samples > SQLITE_COMFORTABLE_ROWS:
        print(f"warning: SQLite is seeded from Python; {samples:,} samples will take long (try --clusters 20 --days 3)")
    try:
        return 0 if run(args) else 1
    except CheckFailed as e:
        print(f"\nCHECK FAILED: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted (cleaned up)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
