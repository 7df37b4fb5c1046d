"""The baselines of the suite (bench/suite.py): what the same machinery does with nothing of hpcinfra in it.

- `python -m bench.baseline worker`: a Temporal worker, set up as the real one (worker.py: the default
  workflow sandbox and cache, a thread pool of 32 for synchronous activities) on BENCH_TEMPORAL_ADDRESS
  and BENCH_TASK_QUEUE, with three bare workflows and one no-op activity:
  * `BarePipeline(n)` waits for one signal (`go`), then runs `n` no-op activities one after the other:
    the baseline of the request -> approval -> available pipeline (parts 1 and 2);
  * `BareIdle` waits for a signal that never comes: the baseline of an idle cluster workflow (part 4);
  * `BareTicker` runs a no-op activity once a minute, as the metering workflow does (part 4).
- `python -m bench.baseline api PORT`: a FastAPI app with one JSON endpoint, `GET /bare`, served by
  uvicorn exactly as `hpcinfra api` serves the real app (same defaults, access log included): the
  baseline of the API calls (part 3).
"""

import asyncio
import logging
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio import activity, workflow

NOOP = dict(start_to_close_timeout=timedelta(seconds=30))
# As the metering workflow: collect a little after each minute ends, continue as new every 240 rounds.
SETTLE = timedelta(seconds=2)
ROUNDS_PER_RUN = 240


@activity.defn(name="BareNoop")
def noop(step: int) -> int:
    return step


@workflow.defn(name="BarePipeline")
class BarePipeline:
    def __init__(self) -> None:
        self._go = False

    @workflow.run
    async def run(self, activities: int) -> int:
        await workflow.wait_condition(lambda: self._go)
        for step in range(activities):
            await workflow.execute_activity(noop, step, **NOOP)
        return activities

    @workflow.signal(name="go")
    def go(self) -> None:
        self._go = True


@workflow.defn(name="BareIdle")
class BareIdle:
    def __init__(self) -> None:
        self._done = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self._done)

    @workflow.signal(name="done")
    def done(self) -> None:
        self._done = True


@workflow.defn(name="BareTicker")
class BareTicker:
    @workflow.run
    async def run(self) -> None:
        for step in range(ROUNDS_PER_RUN):
            await workflow.execute_activity(noop, step, **NOOP)
            now = workflow.now()
            next_minute = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
            await workflow.sleep(next_minute + SETTLE - now)
        workflow.continue_as_new()


async def run_worker(address: str, task_queue: str) -> None:
    from temporalio.client import Client
    from temporalio.worker import Worker

    # The workflows by their importable module (not __main__), which the workflow sandbox imports again.
    from bench.baseline import BareIdle, BarePipeline, BareTicker, noop

    client = await Client.connect(address)
    with ThreadPoolExecutor(max_workers=32) as executor:
        worker = Worker(
            client,
            task_queue=task_queue,
            workflows=[BarePipeline, BareIdle, BareTicker],
            activities=[noop],
            activity_executor=executor,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        logging.getLogger(__name__).info("worker polling task queue %r at %s", task_queue, address)
        async with worker:
            await stop.wait()


def create_app():
    from fastapi import FastAPI

    app = FastAPI(title="bare")

    @app.get("/bare")
    def bare() -> dict:
        return {"status": "ok", "items": []}

    return app


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if argv[:1] == ["worker"]:
        asyncio.run(run_worker(os.environ["BENCH_TEMPORAL_ADDRESS"], os.environ["BENCH_TASK_QUEUE"]))
    elif argv[:1] == ["api"]:
        import uvicorn

        uvicorn.run("bench.baseline:create_app", factory=True, host="127.0.0.1", port=int(argv[1]), log_level="info")
    else:
        raise SystemExit("usage: python -m bench.baseline worker | api PORT")


if __name__ == "__main__":
    main(sys.argv[1:])
