"""Services of local clusters: a PostgreSQL and a Redis instance of their own, with the platform's credentials.

Neither runs as root: PostgreSQL runs as the `postgres` account and Redis as the `redis` account (both
come with Debian's packages), each in a folder of its own that account owns. The people a service's
credentials are handed to may make it do whatever its account may: a service run as root would hand
them the machine."""

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from core.providers import FailureClass, ProviderFailure, ServiceSecret, ServiceSpec
from infra.providers.local_processes import run, start_daemon, stop

POSTGRES_USER = "postgres"  # the system account PostgreSQL's server runs as (it refuses root)
# PostgreSQL's data folders live where Debian keeps them, which the postgres account can always reach
# (the data folder may sit below folders only root may enter); one folder per cluster.
POSTGRES_ROOT = Path("/var/lib/postgresql/hpcinfra")
REDIS_USER = "redis"  # the system account Redis runs as
REDIS_ROOT = Path("/var/lib/redis/hpcinfra")  # the same, for Redis: a folder per cluster


def _service_env() -> dict[str, str]:
    """The environment of a service's processes: not the worker's, which holds the platform's secrets
    (database URL, keys, cloud credentials) and which the service's account could read back."""
    return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C.UTF-8"}


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
        run([*as_postgres, *initdb, f"--pwfile={password_file}"], _service_env(), "initdb", "start postgresql")
    finally:
        password_file.unlink(missing_ok=True)
    options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={server}"
    pg_ctl = [_postgres_bin("pg_ctl"), "-D", str(server / "data"), "-o", options, "-l", str(server / "server.log")]
    run([*as_postgres, *pg_ctl, "-w", "start"], _service_env(), "pg_ctl start", "start postgresql")
    database = service.config.get("databaseName", "postgres")
    if database != "postgres":
        createdb = [_postgres_bin("createdb"), "-h", str(server), "-p", str(port), "-U", secret.username, database]
        env = {**_service_env(), "PGPASSWORD": secret.password}
        run([*as_postgres, *createdb], env, "createdb", "start postgresql")


def start_redis(folder: Path, port: int, service: ServiceSpec, secret: ServiceSecret) -> None:
    if not shutil.which("redis-server"):
        raise ProviderFailure(
            "start redis", "Redis is not installed: apt-get install redis-server", FailureClass.CONFIGURATION
        )
    try:
        account = pwd.getpwnam(REDIS_USER)
    except KeyError:
        raise ProviderFailure(
            "start redis",
            f"there is no {REDIS_USER} account for Redis to run as (apt-get install redis-server makes it)",
            FailureClass.CONFIGURATION,
        ) from None
    server = _redis_folder(folder)
    shutil.rmtree(server, ignore_errors=True)
    for parent in (REDIS_ROOT.parent, REDIS_ROOT):
        if not parent.exists():  # made here: enterable by the redis account, whatever the umask
            parent.mkdir(mode=0o755)
            parent.chmod(0o755)
    server.mkdir(mode=0o700)
    os.chown(server, account.pw_uid, account.pw_gid)
    config = server / "redis.conf"
    # Readable by Redis's account only from the moment it exists: a password on the command line would
    # show in `ps`. CONFIG SET of where Redis writes (dir, dbfilename), DEBUG and MODULE stay off: Redis 7's
    # defaults, said here so that they stay.
    with os.fdopen(os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(
            f"port {port}\nbind 127.0.0.1\nrequirepass {secret.password}\ndaemonize yes\n"
            f"pidfile {server / 'redis.pid'}\ndir {server}\nlogfile {server / 'redis.log'}\n"
            "enable-protected-configs no\nenable-debug-command no\nenable-module-command no\n"
            + (f"maxmemory {int(service.config['maxMemoryMB'])}mb\n" if "maxMemoryMB" in service.config else "")
        )
    os.chown(config, account.pw_uid, account.pw_gid)
    start_daemon(
        ["runuser", "-u", REDIS_USER, "--", "redis-server", str(config)],
        _service_env(),
        server / "redis.pid",
        "redis-server",
        "redis-server",
        "start redis",
    )


def _postgres_folder(service_folder: Path) -> Path:
    """Where a cluster's PostgreSQL keeps its data: named by the cluster's folder."""
    return POSTGRES_ROOT / service_folder.parent.parent.name


def _redis_folder(service_folder: Path) -> Path:
    """Where a cluster's Redis keeps its config, data, log and pid file: named by the cluster's folder."""
    return REDIS_ROOT / service_folder.parent.parent.name


def stop_service(folder: Path) -> None:
    """Stop a service of a cluster, and remove what it kept outside the cluster's folder."""
    if folder.name == "postgresql":
        server = _postgres_folder(folder)
        if (server / "data" / "postmaster.pid").exists():
            pg_ctl = [_postgres_bin("pg_ctl"), "-D", str(server / "data"), "-m", "fast", "-w", "stop"]
            subprocess.run(
                ["runuser", "-u", POSTGRES_USER, "--", *pg_ctl], env=_service_env(), capture_output=True, timeout=60
            )
        shutil.rmtree(server, ignore_errors=True)
    if folder.name == "redis":
        server = _redis_folder(folder)
        stop(server / "redis.pid", "redis-server")
        shutil.rmtree(server, ignore_errors=True)
        stop(folder / "redis.pid", "redis-server")  # where a Redis started by an earlier version keeps it
