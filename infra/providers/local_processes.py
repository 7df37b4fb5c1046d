"""Processes of local clusters: running commands, free ports, and daemons known by their pid files."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from core.providers import FailureClass, ProviderFailure


def run(argv: list[str], env: dict[str, str], what: str, step: str) -> None:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise ProviderFailure(
            step, f"{what} failed: {(result.stderr or result.stdout).strip()[-800:]}", FailureClass.CONFIGURATION
        )


def start_daemon(
    argv: list[str], env: dict[str, str], pidfile: Path, expect: str, what: str, step: str, timeout: float = 15
) -> None:
    """Start a daemon that forks into the background, and return once its pid file names it running.

    The command returns when its first process exits, which may be before the daemon has written its
    pid file: a failure right after would find no file, and destroy would leave the daemon running."""
    run(argv, env, what, step)
    deadline = time.monotonic() + timeout
    while not alive(pidfile, expect):
        if time.monotonic() > deadline:
            raise ProviderFailure(
                step, f"{what}: no running process in {pidfile} after {timeout:g} s", FailureClass.CONFIGURATION
            )
        time.sleep(0.05)


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
    return pid is not None and _running(pid, expect)


def _running(pid: int, expect: str) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return False
    return state != "Z" and expect in command


def stop(pidfile: Path, expect: str, timeout: float = 20) -> bool:
    """Stop the process of a pid file (if it is the expected one): SIGTERM, then SIGKILL, and return
    once it is gone. Whether it ran.

    The process is watched by its pid, not through the file: a daemon removes its pid file while it
    shuts down, before it has exited."""
    pid = pid_of(pidfile)
    if pid is None or not _running(pid, expect):
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while _running(pid, expect) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _running(pid, expect):
            return True
    raise ProviderFailure("destroy", f"process {pid} ({expect}) survived SIGKILL", FailureClass.TIMEOUT)


def size_gb(folder: Path) -> float:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:
            pass
    return total / 1024**3
