"""Connecting to Temporal, for the API, the worker and the commands alike."""

import asyncio
import time

from temporalio.client import Client
from temporalio.runtime import Runtime

from core.observability import client_interceptors
from core.settings import Settings


async def connect(settings: Settings, *, wait_seconds: float = 0, runtime: Runtime | None = None) -> Client:
    """Connect to the configured Temporal frontend, waiting up to `wait_seconds` for it to come up.
    With tracing on, the client (and any worker built on it) carries the tracing interceptor; a
    `runtime` (the worker's, serving metrics) replaces the SDK's default one."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return await Client.connect(
                settings.temporal_address,
                namespace=settings.temporal_namespace,
                interceptors=client_interceptors(settings),
                runtime=runtime,
            )
        except RuntimeError:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.5)
