"""Outbound webhooks: the event types, what a delivery carries and how it is signed.

Workflow code imports this module (the delivery workflow's input and output), so it does no I/O and
imports nothing that does. The outbox (services/outbox.py) writes events and deliveries; the delivery
activity (activities/webhooks.py) posts them.

A delivery is a POST of `body(...)` (JSON: `{id, type, occurredAt, tenantId, data}`) with the headers
below. The signature is HMAC-SHA256, keyed with the webhook's secret (its UTF-8 bytes), over
`<timestamp>.<body>`: the decimal Unix time of the `X-Hpcinfra-Timestamp` header, a dot, and the raw
body bytes exactly as received. It is sent as `X-Hpcinfra-Signature: v1=<lower-case hex digest>`. A
receiver recomputes it, compares in constant time, and refuses timestamps far from its own clock (so
that a captured delivery cannot be replayed later). Retries of one event carry the same event id (and
the same body) with a new timestamp and signature.
"""

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

EVENT_TYPES = (
    "request.filed",
    "request.decided",
    "cluster.available",
    "cluster.failed",
    "cluster.deleted",
    "cluster.node_changed",
    "cluster.expiring",
    "install.finished",
    "balance.low",
)

HEADER_EVENT_ID = "X-Hpcinfra-Event-Id"
HEADER_EVENT_TYPE = "X-Hpcinfra-Event-Type"
HEADER_TIMESTAMP = "X-Hpcinfra-Timestamp"
HEADER_SIGNATURE = "X-Hpcinfra-Signature"
SIGNATURE_VERSION = "v1"
# A receiver should refuse a delivery whose timestamp is further than this from its own clock.
TOLERANCE_SECONDS = 300


def delivery_workflow_id(delivery_id: str) -> str:
    return f"webhook-delivery-{delivery_id}"


@dataclass
class DeliveryInput:
    """What a delivery workflow is started with: which delivery, and how it retries (the settings of
    whoever started it, so a running delivery keeps the policy it began with). No secret, no body."""

    delivery_id: str
    retry_initial_seconds: float
    retry_maximum_seconds: float
    give_up_after_seconds: float


@dataclass
class DeliveryRef:
    delivery_id: str


@dataclass
class DeliveryOutcome:
    """How a delivery ended: `delivered`, `failed` (given up), or `dropped` (its webhook was deleted)."""

    status: str
    attempts: int
    status_code: int | None = None


@dataclass
class DeliveryFailure:
    delivery_id: str
    reason: str


def body(event_id: str, event_type: str, occurred_at: datetime, tenant_id: str, data: dict[str, Any]) -> bytes:
    """The JSON a delivery posts: the same bytes on every attempt."""
    payload = {
        "id": event_id,
        "type": event_type,
        "occurredAt": occurred_at.isoformat().replace("+00:00", "Z"),
        "tenantId": tenant_id,
        "data": data,
    }
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def signature(secret: str, timestamp: int, payload: bytes) -> str:
    """The value of the signature header for `payload` sent at `timestamp` (Unix seconds)."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + payload, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def verify(
    secret: str, timestamp: str, payload: bytes, sent: str, now: float, tolerance: int = TOLERANCE_SECONDS
) -> bool:
    """What a receiver does: the timestamp is recent and the signature is the one `secret` makes."""
    try:
        when = int(timestamp)
    except ValueError:
        return False
    if abs(now - when) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, when, payload), sent)
