"""Connecting to Temporal, for the API, the worker and the commands alike."""

import asyncio
import time

from temporalio.client import Client

from hpcinfra.settings import Settings


async def connect(settings: Settings, *, wait_seconds: float = 0) -> Client:
    """Connect to the configured Temporal frontend, waiting up to `wait_seconds` for it to come up."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
        except RuntimeError:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.5)
