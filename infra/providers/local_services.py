"""Services of local clusters: a PostgreSQL and a Redis instance of their own, with the platform's credentials."""

import os
import shutil
import subprocess
from pathlib import Path

from infra.providers.base import FailureClass, ProviderFailure, ServiceSecret, ServiceSpec
from infra.providers.local_processes import run, start_daemon, stop

POSTGRES_USER = "postgres"  # the system account PostgreSQL's server runs as (it refuses root)
# PostgreSQL's data folders live where Debian keeps them, which the postgres account can always reach
# (the data folder may sit below folders only root may enter); one folder per cluster.
POSTGRES_ROOT = Path("/var/lib/postgresql/hpcinfra")


def _postgres_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not found:
        raise ProviderFailure(
            "start postgresql",
            "PostgreSQL's server is not installed (apt-get install postgresql)",
            FailureClass.CONFIGURATION,
        )
    return str(found[-1])


def start_postgresql(folder: Path, port: int, service: ServiceSpec, secret: ServiceSecret) -> None:
    server = _postgres_folder(folder)
    shutil.rmtree(server, ignore_errors=True)
    server.mkdir(parents=True)
    shutil.chown(server, POSTGRES_USER, POSTGRES_USER)
    as_postgres = ["runuser", "-u", POSTGRES_USER, "--"]
    password_file = server / "initdb.password"
    # Readable by its owner only from the moment it exists; read once by initdb, then removed.
    with os.fdopen(os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(secret.password)
    shutil.chown(password_file, POSTGRES_USER)
    initdb = [_postgres_bin("initdb"), "-D", str(server / "data"), "-U", secret.username, "--auth=scram-sha-256"]
    try:
        run([*as_postgres, *initdb, f"--pwfile={password_file}"], os.environ, "initdb", "start postgresql")
    finally:
        password_file.unlink(missing_ok=True)
    options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={server}"
    pg_ctl = [_postgres_bin("pg_ctl"), "-D", str(server / "data"), "-o", options, "-l", str(server / "server.log")]
    run([*as_postgres, *pg_ctl, "-w", "start"], os.environ, "pg_ctl start", "start postgresql")
    database = service.config.get("databaseName", "postgres")
    if database != "postgres":
        createdb = [_postgres_bin("createdb"), "-h", str(server), "-p", str(port), "-U", secret.username, database]
        run([*as_postgres, *createdb], {**os.environ, "PGPASSWORD": secret.password}, "createdb", "start postgresql")


def start_redis(folder: Path, port: int, service: ServiceSpec, secret: ServiceSecret) -> None:
    config = folder / "redis.conf"
    # In a file only root reads: a password on the command line would show in `ps`.
    config.touch(mode=0o600)
    config.write_text(
        f"port {port}\nbind 127.0.0.1\nrequirepass {secret.password}\ndaemonize yes\n"
        f"pidfile {folder / 'redis.pid'}\ndir {folder}\nlogfile {folder / 'redis.log'}\n"
        + (f"maxmemory {service.config['maxMemoryMB']}mb\n" if "maxMemoryMB" in service.config else "")
    )
    if not shutil.which("redis-server"):
        raise ProviderFailure(
            "start redis", "Redis is not installed: apt-get install redis-server", FailureClass.CONFIGURATION
        )
    start_daemon(
        ["redis-server", str(config)], os.environ, folder / "redis.pid", "redis-server", "redis-server", "start redis"
    )


def _postgres_folder(service_folder: Path) -> Path:
    """Where a cluster's PostgreSQL keeps its data: named by the cluster's folder."""
    return POSTGRES_ROOT / service_folder.parent.parent.name


def stop_service(folder: Path) -> None:
    """Stop a service of a cluster, and remove what it kept outside the cluster's folder."""
    if folder.name == "postgresql":
        server = _postgres_folder(folder)
        if (server / "data" / "postmaster.pid").exists():
            pg_ctl = [_postgres_bin("pg_ctl"), "-D", str(server / "data"), "-m", "fast", "-w", "stop"]
            subprocess.run(["runuser", "-u", POSTGRES_USER, "--", *pg_ctl], capture_output=True, timeout=60)
        shutil.rmtree(server, ignore_errors=True)
    stop(folder / "redis.pid", "redis-server")
