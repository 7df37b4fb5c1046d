"""Starting and stopping the real parts the tests and the benchmarks run against, each on a free port."""

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

from core.search_attributes import dev_server_flags

T = TypeVar("T")
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def executable(name: str) -> str:
    found = BIN / name
    return str(found) if found.exists() else shutil.which(name) or name


def wait_until(check: Callable[[], T | None], *, timeout: float = 30, every: float = 0.1, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Process:
    """A child process whose output goes to a log file, stopped (and waited for) by `stop`."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.log = log
        self._out = open(log, "ab")
        self.popen = subprocess.Popen(
            argv, stdout=self._out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=cwd
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._out.close()

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing gets to clean up."""
        if self.alive():
            self.popen.kill()
            self.popen.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_temporal_dev_server(log: Path, port: int | None = None, db_file: Path | None = None) -> tuple[Process, str]:
    """A Temporal dev server on `port` (a free one by default), in memory or keeping its state in `db_file`,
    that knows hpcinfra's search attributes."""
    port = port or free_port()
    keep = ["--db-filename", str(db_file)] if db_file else []
    process = Process(
        [executable("temporal"), "server", "start-dev", "--headless", "--ip", "127.0.0.1",
         "--port", str(port), "--log-level", "error", *dev_server_flags(), *keep],
        log,
    )  # fmt: skip
    wait_until(lambda: port_open(port) or not process.alive(), timeout=60, what="the Temporal dev server")
    assert process.alive(), process.output()
    return process, f"127.0.0.1:{port}"


def wait_for_http(url: str, process: Process, timeout: float = 60) -> None:
    def answers() -> bool:
        assert process.alive(), f"{process.popen.args} exited:\n{process.output()}"
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(answers, timeout=timeout, what=url)
