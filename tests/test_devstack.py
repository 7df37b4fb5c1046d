"""`hpcinfra dev`, the README's run command, as a new user meets it: it starts everything, seeds a
demo tenant once, serves a request end to end, keeps its data across restarts, and Ctrl-C leaves
nothing running."""

import os
import re
import signal
import subprocess
from pathlib import Path

import httpx

from harness.servers import executable, free_port, port_open, wait_until


def children_of(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class DevStack:
    def __init__(self, workdir: Path, ports: dict[str, int]) -> None:
        self.ports = ports
        self.log = workdir / f"dev-{len(list(workdir.glob('dev-*.log')))}.log"
        env = {
            **os.environ,
            "HPCINFRA_API_PORT": str(ports["api"]),
            "HPCINFRA_TEMPORAL_ADDRESS": f"127.0.0.1:{ports['temporal']}",
            "HPCINFRA_TEMPORAL_UI_PORT": str(ports["ui"]),
            "HPCINFRA_SIM_STEP_SECONDS": "0",
        }
        env.pop("HPCINFRA_DATABASE_URL", None)
        env.pop("HPCINFRA_DATA_DIR", None)
        self.process = subprocess.Popen(
            [executable("hpcinfra"), "dev"], cwd=workdir, env=env, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT
        )
        wait_until(
            lambda: "Ctrl-C stops everything" in self.output() or self.process.poll() is not None,
            timeout=120,
            what="the banner",
        )
        assert self.process.poll() is None, self.output()
        self.children = children_of(self.process.pid)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)


def test_dev_stack_runs_a_request_end_to_end_and_stops_cleanly(tmp_path):
    ports = {"api": free_port(), "temporal": free_port(), "ui": free_port()}
    stack = DevStack(tmp_path, ports)
    try:
        banner = stack.output()
        assert f"http://127.0.0.1:{ports['api']}/docs" in banner
        assert f"http://localhost:{ports['ui']}" in banner
        assert len(stack.children) == 3  # Temporal dev server, worker, API
        tokens = dict(re.findall(r"^\s+(\S+@demo\.example)\s+(\S+)$", banner, re.MULTILINE))
        cad = {"Authorization": f"Bearer {tokens['cad@demo.example']}"}
        it = {"Authorization": f"Bearer {tokens['it@demo.example']}"}

        with httpx.Client(base_url=f"http://127.0.0.1:{ports['api']}/api/v1", timeout=30) as api:
            assert api.get("/readyz").json() == {"status": "ok", "checks": {"database": "ok", "temporal": "ok"}}
            assert httpx.get(f"http://127.0.0.1:{ports['ui']}", timeout=10).status_code == 200
            provider = api.get("/cloud-providers", headers=cad).json()[0]
            assert (provider["name"], provider["kind"]) == ("sim", "sim")
            request = api.post(
                "/requests",
                json={
                    "name": "demo",
                    "cloudProviderId": provider["id"],
                    "size": {"numberOfNodes": 2, "nodeType": "small"},
                },
                headers=cad,
            ).json()
            cluster_id = api.patch(f"/requests/{request['id']}", json={"status": "approved"}, headers=it).json()[
                "clusterId"
            ]
            wait_until(
                lambda: api.get(f"/clusters/{cluster_id}", headers=cad).json()["status"] == "available",
                what="available",
            )
    finally:
        code = stack.interrupt()
    assert code == 0, stack.output()
    assert not [pid for pid in stack.children if alive(pid)]
    assert not [name for name, port in ports.items() if port_open(port)]
    assert (tmp_path / "data" / "hpcinfra.db").exists() and (tmp_path / "data" / "temporal.db").exists()

    # Second start: same data, no new demo tokens, and Temporal remembers the cluster's workflow.
    again = DevStack(tmp_path, ports)
    try:
        assert not re.findall(r"^\s+\S+@demo\.example\s+hpci_", again.output(), re.MULTILINE)
        assert "hpcinfra users token --tenant demo" in again.output()
        with httpx.Client(base_url=f"http://127.0.0.1:{ports['api']}/api/v1", timeout=30) as api:
            assert api.get(f"/requests/{request['id']}", headers=cad).json()["status"] == "approved"
        described = subprocess.run(
            [executable("temporal"), "workflow", "describe", "--address", f"127.0.0.1:{ports['temporal']}",
             "--workflow-id", f"cluster-{cluster_id}", "--output", "json"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert described.returncode == 0, described.stderr
        assert '"status": "WORKFLOW_EXECUTION_STATUS_RUNNING"' in described.stdout
    finally:
        assert again.interrupt() == 0
    assert not [pid for pid in again.children if alive(pid)]
