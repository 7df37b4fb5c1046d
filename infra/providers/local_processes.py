"""Processes of local clusters: running commands, free ports, and daemons known by their pid files."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from infra.providers.base import FailureClass, ProviderFailure


def run(argv: list[str], env: dict[str, str], what: str, step: str) -> None:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise ProviderFailure(
            step, f"{what} failed: {(result.stderr or result.stdout).strip()[-800:]}", FailureClass.CONFIGURATION
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_of(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pidfile: Path, expect: str) -> bool:
    """Whether the process a pid file names runs, and is the one it should be: its command line
    contains `expect` (a pid left from before a reboot may belong to anything by now)."""
    pid = pid_of(pidfile)
    if pid is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return False
    return state != "Z" and expect in command


def stop(pidfile: Path, expect: str, timeout: float = 20) -> bool:
    """Stop the process of a pid file (if it is the expected one): SIGTERM, then SIGKILL. Whether it ran."""
    pid = pid_of(pidfile)
    if pid is None or not alive(pidfile, expect):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pidfile, expect) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive(pidfile, expect):
        os.kill(pid, signal.SIGKILL)
    return True


def size_gb(folder: Path) -> float:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:
            pass
    return total / 1024**3
