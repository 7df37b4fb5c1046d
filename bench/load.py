"""A small HTTP/1.1 load generator, run as its own process by the suite (`bench/suite.py`, part 3).

It keeps `connections` keep-alive connections busy for `warmup` seconds (not counted) and then for
`seconds` seconds, each sending its next request as soon as the answer to the last one has arrived
(a closed loop), and prints one JSON line: requests, requests per second, latency percentiles in
milliseconds, and the count of each status code.

It is written on bare asyncio streams rather than an HTTP client library so that the load process
spends little CPU per request: on a 2-core machine it shares the cores with the server it measures,
and the same load process measures the real API and the bare endpoint it is compared with.

    python -m bench.load SPEC.json

SPEC: {"host", "port", "method", "paths": [...] (taken in turn), "headers": {...}, "body": str or null
(each "__N__" in it is replaced by a number unique in the run), "connections", "warmup", "seconds"}.
"""

import asyncio
import itertools
import json
import sys
import time
from typing import Any


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, int(-(-fraction * len(ordered) // 1)) - 1))
    return ordered[rank]


class Load:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.paths = itertools.cycle(spec["paths"])
        self.numbers = itertools.count()
        head = "".join(f"{name}: {value}\r\n" for name, value in spec.get("headers", {}).items())
        self.head = f"Host: {spec['host']}:{spec['port']}\r\n{head}"
        self.measuring = False
        self.stopping = False
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.errors: list[str] = []

    def request(self) -> bytes:
        path = next(self.paths)
        body = self.spec.get("body")
        if body is None:
            return f"{self.spec['method']} {path} HTTP/1.1\r\n{self.head}\r\n".encode()
        data = body.replace("__N__", str(next(self.numbers))).encode()
        return (
            f"{self.spec['method']} {path} HTTP/1.1\r\n{self.head}"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        ).encode() + data

    async def connection(self) -> None:
        reader, writer = await asyncio.open_connection(self.spec["host"], self.spec["port"])
        try:
            while not self.stopping:
                started = time.perf_counter()
                writer.write(self.request())
                status = await self.answer(reader)
                elapsed = time.perf_counter() - started
                if self.measuring:
                    self.latencies.append(elapsed * 1000)
                    self.statuses[status] = self.statuses.get(status, 0) + 1
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            writer.close()

    @staticmethod
    async def answer(reader: asyncio.StreamReader) -> int:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        return status

    async def run(self) -> dict[str, Any]:
        tasks = [asyncio.create_task(self.connection()) for _ in range(self.spec["connections"])]
        await asyncio.sleep(self.spec["warmup"])
        self.measuring = True
        started = time.perf_counter()
        await asyncio.sleep(self.spec["seconds"])
        self.measuring = False
        seconds = time.perf_counter() - started
        self.stopping = True
        await asyncio.wait(tasks, timeout=30)
        ordered = sorted(self.latencies)
        return {
            "requests": len(ordered),
            "seconds": seconds,
            "rps": len(ordered) / seconds,
            "p50_ms": percentile(ordered, 0.50),
            "p90_ms": percentile(ordered, 0.90),
            "p99_ms": percentile(ordered, 0.99),
            "max_ms": ordered[-1] if ordered else float("nan"),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": self.errors[:5],
        }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as f:
        spec = json.load(f)
    print(json.dumps(asyncio.run(Load(spec).run())), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
