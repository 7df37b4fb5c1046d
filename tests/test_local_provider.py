"""The `local` provider: a real Slurm cluster on this machine, real tools, real services.

These tests need what `hpcinfra local setup` provides (Debian or Ubuntu, root, slurm-wlm, munge
running). Where that is missing they are skipped, except in CI (CI or HPCINFRA_REQUIRE_LOCAL set),
where `.ci/run` sets the machine up first and a missing piece is a failure.
"""

import asyncio
import os
import pwd
import socket
import subprocess
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from temporalio.client import Client

from core.catalog import NODE_TYPES
from core.providers import ClusterSpec, FailureClass, ProviderFailure, Scaling, ServiceSecret, ServiceSpec
from harness.servers import port_open, wait_until
from harness.world import make_tenant, request_body, wait_for_cluster
from infra.providers import local_processes as processes
from infra.providers.local import LocalProvider, check_prerequisites
from infra.providers.local_services import POSTGRES_ROOT, REDIS_ROOT, REDIS_USER
from tests.conftest import restart_worker
from tests.test_tools_services import steps, wait_for_item
from workflows.cluster import ClusterWorkflow


def _missing() -> str | None:
    try:
        check_prerequisites()
    except ProviderFailure as e:
        return e.message
    return None


MISSING = _missing()
if MISSING and (os.environ.get("CI") or os.environ.get("HPCINFRA_REQUIRE_LOCAL")):
    raise RuntimeError(f"local clusters are required here but this machine cannot run them: {MISSING}")
needs_local = pytest.mark.skipif(MISSING is not None, reason=f"this machine cannot run local clusters: {MISSING}")


def test_missing_prerequisites_fail_fast_naming_the_setup_command(monkeypatch):
    monkeypatch.setattr("infra.providers.local.shutil.which", lambda command: None)
    with pytest.raises(ProviderFailure) as failure:
        check_prerequisites()
    assert failure.value.failure_class is FailureClass.CONFIGURATION
    assert "slurmctld (package slurm-wlm)" in failure.value.message
    assert "run `hpcinfra local setup`" in failure.value.message


def pids_of(cluster_folder: Path) -> list[int]:
    return [int(p.read_text()) for p in cluster_folder.glob("*.pid")]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@needs_local
def test_a_real_two_node_cluster_with_a_tool_and_a_database(api, stack):
    tenant = make_tenant(stack.db.sessions, extra_providers={"here": {"kind": "local"}})
    body = request_body(
        tenant.providers["here"],
        size={"numberOfNodes": 2, "nodeType": "small"},
        tools=[{"name": "iverilog", "version": "11.0"}],
        services=[{"name": "postgresql", "version": "15", "config": {"databaseName": "results"}}],
    )
    created = api.post("/clusters", json=body, headers=tenant.cad.headers)
    assert created.status_code == 201, created.text
    cluster_id = created.json()["id"]
    cluster = wait_for_cluster(api, cluster_id, tenant.cad.headers, "available")
    outputs = cluster["outputs"]
    assert outputs["partition"] == "compute" and outputs["nodeIds"] == ["node-0", "node-1"]
    folder = Path(outputs["slurmConf"]).parent

    # The daemons run on their own: a worker restart leaves them running.
    daemons = pids_of(folder)
    restart_worker(stack)
    assert all(alive(pid) for pid in daemons)

    # A batch job runs on both nodes.
    env = {**os.environ, "SLURM_CONF": outputs["slurmConf"]}
    job = folder / "shared" / "both.out"
    subprocess.run(
        ["sbatch", "--wait", "-N2", f"--output={job}", "--wrap", "srun -l bash -c 'echo $SLURMD_NODENAME'"],
        env=env, check=True, timeout=120, capture_output=True,
    )  # fmt: skip
    assert sorted(job.read_text().split()) == ["0:", "1:", "node-0", "node-1"]

    # iverilog is installed once its smoke test passed as a Slurm job.
    tool = wait_for_item(api, tenant, cluster_id, "tools", "iverilog", ("installed", "failed"))
    assert tool["status"] == "installed", tool
    events = api.get(f"/clusters/{cluster_id}/events", headers=tenant.cad.headers).json()
    assert any(e["step"] == "iverilog" and "smoke test passed" in e["message"] for e in events)

    # A version the provider does not offer is refused, saying what it does offer.
    refused = api.post(
        f"/clusters/{cluster_id}/tools", json={"name": "iverilog", "version": "12.0"}, headers=tenant.cad.headers
    )
    assert refused.status_code == 422 and "the versions they offer: 11.0" in refused.json()["detail"], refused.text

    # The database accepts the credentials the API returns.
    service = wait_for_item(api, tenant, cluster_id, "services", "postgresql", ("running", "failed"))
    assert service["status"] == "running", service
    credentials = api.get(f"/clusters/{cluster_id}/services/{service['id']}", headers=tenant.cad.headers).json()[
        "credentials"
    ]
    with psycopg.connect(
        host=credentials["host"], port=credentials["port"], user=credentials["username"],
        password=credentials["password"], dbname=credentials["database"], connect_timeout=10,
    ) as connection:  # fmt: skip
        assert connection.execute("SELECT current_database()").fetchone() == ("results",)

    # A dead daemon is noticed by the next health check, in the step log.
    pids = pids_of(folder)
    os.kill(int((folder / "slurmd-node-1.pid").read_text()), 9)

    async def check():
        client = await Client.connect(stack.temporal_address)
        return await client.get_workflow_handle(f"cluster-{cluster_id}").execute_update(ClusterWorkflow.check_health)

    report = asyncio.run(check())
    assert not report.healthy and "slurmd-node-1 is not running" in report.message
    assert ("health-check", "failed") in steps(api, tenant, cluster_id)

    # Teardown leaves no process, no bound port and no folder.
    ports = [credentials["port"], *_slurm_ports(folder)]
    assert api.delete(f"/clusters/{cluster_id}", headers=tenant.cad.headers).status_code == 202
    deleted = wait_for_cluster(api, cluster_id, tenant.cad.headers, "deleted")
    assert [s["status"] for s in deleted["services"]] == ["stopped"]
    assert not [pid for pid in pids if alive(pid)]
    assert not [port for port in ports if port_open(port)]
    assert not folder.exists()
    assert not (POSTGRES_ROOT / cluster_id).exists()


@needs_local
def test_an_elastic_local_cluster_on_the_stack_is_charged_for_the_minutes_its_node_ran(api, stack):
    """No node always up: a job powers the one node up, it powers down 30 s after, and the cluster's step
    log, nodes and metered minutes follow (the power is read with each metering collection, once a minute)."""
    if stack.db.kind != "sqlite":
        pytest.skip("the power of a local cluster's nodes does not depend on the database: checked once, on SQLite")
    tenant = make_tenant(stack.db.sessions, extra_providers={"here": {"kind": "local"}})
    body = {
        **request_body(tenant.providers["here"], size={"numberOfNodes": 1, "nodeType": "small"}, tools=[]),
        "scaling": {"minNodes": 0, "idleSeconds": 30},
    }
    created = api.post("/clusters", json=body, headers=tenant.cad.headers)
    assert created.status_code == 201, created.text
    cluster = wait_for_cluster(api, created.json()["id"], tenant.cad.headers, "available", timeout=60)
    assert cluster["nodes"] == [{"name": "node-0", "state": "down"}] and cluster["size"]["nodesUp"] == 0
    env = {**os.environ, "SLURM_CONF": cluster["outputs"]["slurmConf"]}
    done = Path(cluster["outputs"]["sharedStorage"]) / "done"
    subprocess.run(
        ["sbatch", "-N1", "--output=/dev/null", "--wrap", f"touch {done}"],
        env=env,
        check=True,
        timeout=30,
        capture_output=True,
    )
    wait_until(done.exists, timeout=120, what="the job, on the node powered up for it")

    def powered(cluster_id=cluster["id"]):
        events = api.get(f"/clusters/{cluster_id}/events", headers=tenant.cad.headers).json()
        states = [e["status"] for e in events if e["step"] == "node"]
        return states if states[-1:] == ["down"] else None

    assert wait_until(powered, timeout=180, every=2, what="node-0 up and down again") == [
        "powering-up", "up", "powering-down", "down",
    ]  # fmt: skip
    shown = api.get(f"/clusters/{cluster['id']}", headers=tenant.cad.headers).json()
    assert shown["nodes"] == [{"name": "node-0", "state": "down"}] and shown["size"]["nodesUp"] == 0
    minutes = api.get(
        f"/clusters/{cluster['id']}/metrics", params={"interval": "minute", "start": cluster["createdAt"]},
        headers=tenant.cad.headers,
    ).json()["metrics"]  # fmt: skip
    cores = [point["cpu"]["allocatedCores"] for point in minutes]
    assert NODE_TYPES["small"].vcpus in cores, cores  # a minute the node was up is charged with its cores
    assert api.delete(f"/clusters/{cluster['id']}", headers=tenant.cad.headers).status_code == 202
    wait_for_cluster(api, cluster["id"], tenant.cad.headers, "deleted", timeout=60)


def _slurm_ports(folder: Path) -> list[int]:
    conf = (folder / "slurm.conf").read_text()
    return [int(word.split("=")[1]) for word in conf.split() if word.startswith(("SlurmctldPort=", "Port="))]


@needs_local
def test_a_provisioning_that_fails_half_way_is_cleaned_up_by_destroy(tmp_path, monkeypatch):
    """What compensation does after a failed provisioning: nothing of the cluster keeps running."""
    from infra.providers import local_processes

    spec = ClusterSpec(str(uuid.uuid4()), "acme", "broken", "here", 2, NODE_TYPES["small"], 10)
    provider = LocalProvider(tmp_path / "local")
    start = local_processes.run

    def second_node_fails(argv, env, what, step):
        if "node-1" in argv:
            raise ProviderFailure(step, "slurmd would not start (injected)", FailureClass.CONFIGURATION)
        start(argv, env, what, step)

    monkeypatch.setattr(local_processes, "run", second_node_fails)
    folder = tmp_path / "local" / spec.cluster_id
    try:
        with pytest.raises(ProviderFailure, match="injected"):
            asyncio.run(provider.up(spec, lambda line: None))
        pids = pids_of(folder)
        assert len(pids) == 2 and all(alive(pid) for pid in pids)  # slurmctld and node-0 were running
    finally:
        asyncio.run(provider.destroy(spec, lambda line: None))
    assert not [pid for pid in pids if alive(pid)]
    assert not folder.exists()


@needs_local
def test_utilisation_is_read_from_the_real_cluster(tmp_path):
    spec = ClusterSpec(str(uuid.uuid4()), "acme", "metered", "here", 1, NODE_TYPES["small"], 1)
    provider = LocalProvider(tmp_path / "local")
    try:
        asyncio.run(provider.up(spec, lambda line: None))
        start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
        end = start + timedelta(minutes=5)
        (empty,) = asyncio.run(provider.utilisation(spec, {}, start, end)).values()
        (tmp_path / "local" / spec.cluster_id / "shared" / "results.bin").write_bytes(b"\0" * (100 * 1024**2))
        readings = asyncio.run(provider.utilisation(spec, {}, start, end))
        # The machine keeps no history: the reading stands for the window's last minute.
        assert list(readings) == [end - timedelta(minutes=1)]
        (used,) = readings.values()
    finally:
        asyncio.run(provider.destroy(spec, lambda line: None))
    assert 0 <= used.cpu_percent <= 100 and 0 < used.memory_percent < 100
    assert empty.storage_percent < 1 and 9 < used.storage_percent < 11  # 100 MB of 1 GB


@needs_local
def test_an_elastic_local_cluster_powers_a_node_up_for_a_job_and_down_once_idle(tmp_path):
    """Slurm's power saving with real daemons: a job on both nodes of a cluster whose floor is one makes
    slurmctld start the second node's slurmd; the job runs on both; 30 s after it ends the slurmd is
    stopped; the floor's never is. The power log has each change, for the metering to charge."""
    spec = ClusterSpec(
        str(uuid.uuid4()), "acme", "elastic", "here", 2, NODE_TYPES["small"], 1, scaling=Scaling(1, idle_seconds=30)
    )
    provider = LocalProvider(tmp_path / "local")
    home = tmp_path / "local" / spec.cluster_id
    conf = str(home / "slurm.conf")
    began = datetime.now(UTC)
    try:
        asyncio.run(provider.up(spec, lambda line: None))
        assert processes.alive(home / "slurmd-node-0.pid", conf) and not processes.alive(
            home / "slurmd-node-1.pid", conf
        )
        done = home / "shared" / "done"
        subprocess.run(
            ["sbatch", "-N", "2", "--output=/dev/null", "--wrap", f"srun true && date +%s.%N > {done}"],
            env=provider._env(spec), check=True, capture_output=True,
        )  # fmt: skip
        wait_until(lambda: done.exists() and done.read_text().strip(), timeout=120, what="the job on both nodes")
        ended = datetime.fromtimestamp(float(done.read_text()), UTC)
        assert processes.alive(home / "slurmd-node-1.pid", conf)

        def powered_down():
            changes = asyncio.run(provider.power_changes(spec, {}, began, datetime.now(UTC)))
            return changes if changes[-1].state == "down" else None

        changes = wait_until(powered_down, timeout=120, every=1, what="node-1 to power down")
        assert not processes.alive(home / "slurmd-node-1.pid", conf)
        assert processes.alive(home / "slurmd-node-0.pid", conf)
    finally:
        asyncio.run(provider.destroy(spec, lambda line: None))
    assert [(c.node, c.state) for c in changes] == [
        ("node-1", "powering-up"), ("node-1", "up"), ("node-1", "powering-down"), ("node-1", "down"),
    ]  # fmt: skip
    assert changes[1].at <= ended and changes[2].at >= ended + timedelta(seconds=29)
    assert not home.exists()


@needs_local
def test_a_local_cluster_grows_and_shrinks_without_killing_a_job(tmp_path):
    """A resize with real daemons: growing adds node-1's slurmd to a restarted slurmctld; shrinking first
    drains node-1, which finishes its job, and only then stops its slurmd and leaves it out of Slurm."""
    one = ClusterSpec(str(uuid.uuid4()), "acme", "resized", "here", 1, NODE_TYPES["small"], 1)
    two = replace(one, number_of_nodes=2)
    provider = LocalProvider(tmp_path / "local")
    home = tmp_path / "local" / one.cluster_id
    conf, env = str(home / "slurm.conf"), provider._env(one)
    try:
        asyncio.run(provider.up(one, lambda line: None))
        asyncio.run(provider.up(two, lambda line: None))
        assert processes.alive(home / "slurmd-node-1.pid", conf)
        assert provider._node_states(two, env) == {"node-0": "idle", "node-1": "idle"}

        done = home / "shared" / "done"
        subprocess.run(
            ["sbatch", "-w", "node-1", "--output=/dev/null", "--wrap", f"sleep 8 && touch {done}"],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        wait_until(lambda: provider._node_states(two, env)["node-1"] in ("alloc", "mix"), what="the job on node-1")
        assert asyncio.run(provider.drain(two, {}, ["node-1"])) == ["node-1"]
        # Drained: a new job waits rather than start on node-1.
        assert provider._node_states(two, env)["node-1"] == "drng"
        wait_until(lambda: not asyncio.run(provider.drain(two, {}, ["node-1"])), timeout=60, what="node-1 idle")
        assert done.exists()  # the job finished: it was never killed

        asyncio.run(provider.up(one, lambda line: None))
        assert not processes.alive(home / "slurmd-node-1.pid", conf)
        assert processes.alive(home / "slurmd-node-0.pid", conf)
        nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], env=env, capture_output=True, text=True).stdout
        assert nodes.split() == ["node-0"]
    finally:
        asyncio.run(provider.destroy(two, lambda line: None))
    assert not home.exists()


def uids_of(pid: int) -> list[int]:
    """The real, effective, saved and file-system user ids of a process."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return [int(uid) for uid in status["Uid"].split()]


def redis_answers(port: int, password: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(f"AUTH {password}\r\nPING\r\n".encode())
        answer = b""
        while answer.count(b"\r\n") < 2:
            answer += connection.recv(1024) or b"\r\n\r\n"
        return answer


@needs_local
def test_redis_runs_as_an_unprivileged_account_that_owns_its_files(tmp_path):
    """As PostgreSQL does: a Redis a tenant's users can reach is not a root process on the worker's host."""
    spec = ClusterSpec(str(uuid.uuid4()), "acme", "cached", "here", 1, NODE_TYPES["small"], 1)
    provider = LocalProvider(tmp_path / "local")
    secret = ServiceSecret("hpcinfra", "redis-secret-for-the-test")
    redis = pwd.getpwnam(REDIS_USER)
    server = REDIS_ROOT / spec.cluster_id
    try:
        endpoint = asyncio.run(
            provider.start_service(spec, ServiceSpec("redis", "7.0", {}, 6379), secret, lambda line: None)
        )
        pid = int((server / "redis.pid").read_text())
        assert redis.pw_uid != 0 and uids_of(pid) == [redis.pw_uid] * 4
        for name in ("redis.conf", "redis.pid", "redis.log"):
            assert (server / name).stat().st_uid == redis.pw_uid, name
        assert (server / "redis.conf").stat().st_mode & 0o077 == 0  # the password is for Redis alone
        assert secret.password not in Path(f"/proc/{pid}/cmdline").read_text()
        assert redis_answers(endpoint["port"], secret.password) == b"+OK\r\n+PONG\r\n"
    finally:
        asyncio.run(provider.destroy(spec, lambda line: None))
    assert not alive(pid)
    assert not server.exists()


@needs_local
@pytest.mark.parametrize("name, version", [("postgresql", "15"), ("redis", "7.0")])
def test_a_local_service_does_not_inherit_the_workers_environment(tmp_path, monkeypatch, name, version):
    """The worker's environment holds the platform's secrets; the service's account could read it back."""
    monkeypatch.setenv("HPCINFRA_CREDENTIAL_KEYS", "a-secret-of-the-worker")
    spec = ClusterSpec(str(uuid.uuid4()), "acme", "served", "here", 1, NODE_TYPES["small"], 1)
    provider = LocalProvider(tmp_path / "local")
    service = ServiceSpec(name, version, {}, 0)
    try:
        asyncio.run(
            provider.start_service(spec, service, ServiceSecret("hpcinfra", "pw-0123456789"), lambda line: None)
        )
        pidfile = {
            "postgresql": POSTGRES_ROOT / spec.cluster_id / "data" / "postmaster.pid",
            "redis": REDIS_ROOT / spec.cluster_id / "redis.pid",
        }[name]
        pid = int(pidfile.read_text().split()[0])
        assert b"a-secret-of-the-worker" not in Path(f"/proc/{pid}/environ").read_bytes()
    finally:
        asyncio.run(provider.destroy(spec, lambda line: None))


@needs_local
def test_a_local_clusters_daemons_do_not_inherit_the_platforms_variables(tmp_path, monkeypatch):
    """slurmctld and slurmd, and the jobs the platform submits (which take the submitter's environment),
    run without the platform's own variables (its database URL, its credential keys)."""
    monkeypatch.setenv("HPCINFRA_CREDENTIAL_KEYS", "a-secret-of-the-worker")
    monkeypatch.setenv("AWS_PROFILE", "kept-for-the-tools")
    spec = ClusterSpec(str(uuid.uuid4()), "acme", "daemons", "here", 1, NODE_TYPES["small"], 1)
    provider = LocalProvider(tmp_path / "local")
    try:
        asyncio.run(provider.up(spec, lambda line: None))
        pids = pids_of(tmp_path / "local" / spec.cluster_id)
        assert len(pids) == 2  # slurmctld and slurmd
        for pid in pids:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert b"a-secret-of-the-worker" not in environ and b"HPCINFRA_" not in environ
            assert b"AWS_PROFILE=kept-for-the-tools" in environ
    finally:
        asyncio.run(provider.destroy(spec, lambda line: None))
