"""The webhook outbox: whoever does an act (an activity, the API) writes its event, and one delivery per
webhook of the tenant that wants it, in the same transaction as the act; once that has committed, a
`WebhookDelivery` workflow per delivery posts it (workflows/webhooks.py). Nothing here waits for a
receiver, so the act never does.

A delivery whose workflow could not be started (Temporal unreachable, the process stopped in between)
is started by the next worker or API start (services/resume.py): it is still `pending` with no
attempt. Starting is idempotent: the workflow id is `webhook-delivery-<delivery id>`.
"""

import asyncio
import logging
import secrets
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, event, func, select
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError

from core import starts
from core.credentials import CredentialBox
from core.enums import ClusterStatus, DeliveryStatus
from core.models import (
    BalanceAlert,
    Cluster,
    ClusterRequest,
    Tenant,
    Webhook,
    WebhookDelivery,
    WebhookEvent,
    utcnow,
)
from core.refusals import Refused
from core.settings import Settings
from core.webhooks import EVENT_TYPES
from services import audit, credits

log = logging.getLogger(__name__)

# How long an activity waits for its deliveries' workflows to be started before leaving them to the resume.
START_WAIT_SECONDS = 10
_PENDING = "webhook_deliveries_to_start"


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def seal_secret(box: CredentialBox, secret: str) -> str:
    return box.seal({"secret": secret})


def open_secret(box: CredentialBox, sealed: str) -> str:
    return box.open(sealed)["secret"]


# --- writing events ------------------------------------------------------------------------------


def _write(
    session: Session, tenant_id: uuid.UUID, event_type: str, data: dict[str, Any], key: str | None
) -> list[uuid.UUID]:
    """Write the event and a delivery for each of the tenant's webhooks that wants it, in the caller's
    transaction; returns the deliveries to start once it commits. An event already written under `key`
    (the same act, done again by a retried activity) is not written again: its pending deliveries are
    returned. Nothing is written when no webhook wants the event."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    if key is not None:
        earlier = session.scalar(select(WebhookEvent.id).where(WebhookEvent.key == key))
        if earlier is not None:
            return list(
                session.scalars(
                    select(WebhookDelivery.id).where(
                        WebhookDelivery.event_id == earlier, WebhookDelivery.status == DeliveryStatus.PENDING
                    )
                )
            )
    webhooks = [
        w
        for w in session.scalars(select(Webhook).where(Webhook.tenant_id == tenant_id, Webhook.deleted_at.is_(None)))
        if event_type in w.events
    ]
    if not webhooks:
        return []
    occurred = WebhookEvent(
        id=uuid.uuid4(), tenant_id=tenant_id, type=event_type, data=data, key=key, occurred_at=utcnow()
    )
    session.add(occurred)
    deliveries = [WebhookDelivery(id=uuid.uuid4(), webhook_id=w.id, event_id=occurred.id) for w in webhooks]
    session.add_all(deliveries)
    session.flush()
    return [d.id for d in deliveries]


def withdraw(session: Session, delivery_ids: list[uuid.UUID]) -> None:
    """Take back deliveries never started, and their events: the act they tell of was taken back."""
    if not delivery_ids:
        return
    events = set(session.scalars(select(WebhookDelivery.event_id).where(WebhookDelivery.id.in_(delivery_ids))))
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(delivery_ids)))
    session.execute(delete(WebhookEvent).where(WebhookEvent.id.in_(events)))
    session.commit()


def undelivered(sessions: sessionmaker[Session], since: datetime | None = None) -> list[uuid.UUID]:
    """Deliveries written (from `since` on) but never attempted: their workflow may never have been started."""
    query = select(WebhookDelivery.id).where(
        WebhookDelivery.status == DeliveryStatus.PENDING, WebhookDelivery.attempts == 0
    )
    if since is not None:
        query = query.where(WebhookDelivery.created_at >= since)
    with sessions() as session:
        return list(session.scalars(query))


# --- what the events say -------------------------------------------------------------------------


def request_filed(request: ClusterRequest) -> dict[str, Any]:
    return {
        "requestId": str(request.id),
        "name": request.name,
        "requestedBy": str(request.requested_by_id),
        "cloudProviderId": str(request.cloud_provider_id),
        "size": {
            "numberOfNodes": request.number_of_nodes,
            "nodeType": request.node_type,
            "storage": request.storage_gb,
        },
        "tools": [{"name": t["name"], "version": t["version"]} for t in request.tools],
        "services": [{"name": s["name"], "version": s["version"]} for s in request.services],
    }


def request_decided(request: ClusterRequest, expired: bool) -> dict[str, Any]:
    return {
        "requestId": str(request.id),
        "name": request.name,
        "decision": "expired" if expired else request.status,
        "decidedBy": str(request.approved_by_id) if request.approved_by_id else None,
        "rejectionReason": request.rejection_reason,
        "clusterId": str(request.cluster_id) if request.cluster_id else None,
    }


# Cluster statuses that are events, and the event each is.
CLUSTER_EVENTS = {
    ClusterStatus.AVAILABLE: "cluster.available",
    ClusterStatus.ERROR: "cluster.failed",
    ClusterStatus.DELETED: "cluster.deleted",
}


def cluster_changed(cluster: Cluster) -> dict[str, Any]:
    return {
        "clusterId": str(cluster.id),
        "name": cluster.name,
        "status": cluster.status,
        "reason": cluster.status_reason,
        "requestId": str(cluster.request_id) if cluster.request_id else None,
    }


def install_finished(cluster_id: str, kind: str, item: Any, reason: str | None = None) -> dict[str, Any]:
    """A tool or service install that ended: `ok`, or `failed` with the reason."""
    return {
        "clusterId": cluster_id,
        "kind": kind,
        "itemId": str(item.id),
        "name": item.name,
        "version": item.version,
        "result": "failed" if reason is not None else "ok",
        "reason": reason,
    }


# --- starting deliveries -------------------------------------------------------------------------


async def start_deliveries(client: Client, settings: Settings, delivery_ids: Iterable[uuid.UUID]) -> int:
    """Start a delivery workflow for each id (once: a running or finished one is left alone), all at once.
    Failures are logged and left for the resume; returns how many were started now."""
    started = await asyncio.gather(*(_start_delivery(client, settings, d) for d in delivery_ids))
    return sum(started)


async def _start_delivery(client: Client, settings: Settings, delivery_id: uuid.UUID) -> bool:
    try:
        delivery = starts.delivery(
            str(delivery_id),
            settings.webhook_retry_initial_seconds,
            settings.webhook_retry_maximum_seconds,
            settings.webhook_give_up_after.total_seconds(),
        )
        await starts.start(client, settings.task_queue, delivery, repair=False)
        return True
    except WorkflowAlreadyStartedError:
        return False
    except Exception as e:  # noqa: BLE001 - Temporal down or slow: the next resume starts it
        log.warning("webhook delivery %s not started now (it is started at the next resume): %s", delivery_id, e)
        return False


class DeliveryStarter:
    """Starts delivery workflows from the worker's activities, on the worker's event loop (activities
    that are plain functions run in threads), after the activity's transaction has committed."""

    def __init__(self, client: Client, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.settings = settings
        self.loop = loop
        self._tasks: set[asyncio.Task] = set()

    def after_commit(self, session: Session, delivery_ids: list[uuid.UUID]) -> None:
        """Start these deliveries once `session`'s transaction commits; forget them if it rolls back."""
        if not session.info.get(_PENDING):
            session.info[_PENDING] = []
            if not event.contains(session, "after_commit", self._committed):
                event.listen(session, "after_commit", self._committed)
                event.listen(session, "after_rollback", self._rolled_back)
        session.info[_PENDING].extend(delivery_ids)

    def _committed(self, session: Session) -> None:
        self.start(session.info.pop(_PENDING, []))

    def _rolled_back(self, session: Session) -> None:
        session.info.pop(_PENDING, None)

    def start(self, delivery_ids: list[uuid.UUID]) -> None:
        if not delivery_ids:
            return
        starting = start_deliveries(self.client, self.settings, delivery_ids)
        try:
            on_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            on_loop = False
        if on_loop:  # an async activity's own thread: start in the background, never block the loop
            task = self.loop.create_task(starting)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        try:
            asyncio.run_coroutine_threadsafe(starting, self.loop).result(timeout=START_WAIT_SECONDS)
        except Exception as e:  # noqa: BLE001 - slow or down: the resume starts them
            log.warning("webhook deliveries %s not started now (the next resume starts them): %s", delivery_ids, e)


class Outbox:
    """The one way to tell of an act: `emit` within the act's transaction. The worker's outbox has a
    starter, which starts the deliveries once the transaction commits. The API's has none: a route starts
    them itself (start_deliveries) after its workflow has started, so that no receiver hears of a request
    the API then takes back."""

    def __init__(self, starter: DeliveryStarter | None, min_runway_hours: float) -> None:
        # None: the caller starts the deliveries emit returns, or they wait for the resume.
        self.starter = starter
        # balance.low: below this many hours of runway (the budget guard's threshold).
        self.min_runway_hours = min_runway_hours

    def emit(
        self, session: Session, tenant_id: uuid.UUID, event_type: str, data: dict[str, Any], key: str | None = None
    ) -> list[uuid.UUID]:
        """Write the event and its deliveries (see _write); returns the deliveries, which the starter, if
        any, starts after the commit. `key` names the act, so that a retried activity writes it once."""
        delivery_ids = _write(session, tenant_id, event_type, data, key)
        if delivery_ids and self.starter is not None:
            self.starter.after_commit(session, delivery_ids)
        return delivery_ids

    def check_balance(self, session: Session, tenant_id: uuid.UUID) -> None:
        """After a metering collection: send balance.low when the tenant's runway has just fallen below the
        threshold (or its balance to zero), once per crossing; back above, it is armed again. Only for
        tenants with webhooks: the others pay for no extra queries."""
        active = select(Webhook.id).where(Webhook.tenant_id == tenant_id, Webhook.deleted_at.is_(None)).limit(1)
        if session.scalar(active) is None:
            return
        # One collection at a time per tenant decides a crossing (collectors of its clusters run at once).
        session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
        standing = credits.standing(session, tenant_id)
        runway_hours = standing.balance / standing.rate / 60 if standing.rate > 0 else None
        low = standing.balance <= 0 or (runway_hours is not None and runway_hours < self.min_runway_hours)
        alert = session.get(BalanceAlert, tenant_id)
        if alert is None:
            alert = BalanceAlert(tenant_id=tenant_id, low_since=None)
            session.add(alert)
        if not low:
            alert.low_since = None  # back above: the next fall below is told again
            return
        if alert.low_since is not None:
            return  # told already, when it fell below
        alert.low_since = utcnow()
        data = {
            "balance": credits.as_credits(standing.balance),
            "ratePerHour": credits.as_rate(standing.rate),
            "runwayHours": round(runway_hours, 2) if runway_hours is not None else None,
            "thresholdHours": self.min_runway_hours,
        }
        self.emit(session, tenant_id, "balance.low", data, key=f"balance.low/{tenant_id}/{alert.low_since.isoformat()}")


# Enough for every integration a tenant runs; more is most likely a script registering in a loop.
MAX_WEBHOOKS_PER_TENANT = 20


def require_room_for_webhook(session: Session, tenant_id: uuid.UUID) -> None:
    """Refuse a new webhook of a tenant that has as many as it may."""
    active = session.scalar(select(func.count()).where(Webhook.tenant_id == tenant_id, Webhook.deleted_at.is_(None)))
    if active >= MAX_WEBHOOKS_PER_TENANT:
        raise Refused("Conflict", f"a tenant may have at most {MAX_WEBHOOKS_PER_TENANT} webhooks; delete one first")


def register_webhook(
    session: Session, box: CredentialBox, tenant_id: uuid.UUID, url: str, events: list[str], by: uuid.UUID, source: str
) -> tuple[Webhook, str]:
    """A webhook registered by a person (`by`, from `source`), audited; see create_webhook."""
    webhook, secret = create_webhook(session, box, tenant_id, url, events, by)
    audit.record(
        session,
        tenant_id,
        by,
        "webhook.create",
        f"webhook {webhook.id}",
        source,
        url=webhook.url,
        events=webhook.events,
    )
    return webhook, secret


def delete_webhook(session: Session, webhook: Webhook, by: uuid.UUID, source: str) -> None:
    """Stop telling the webhook's endpoint of events: its deliveries still being retried are dropped (the
    delivery activity sees it deleted), and its secret is forgotten."""
    webhook.deleted_at, webhook.secret_encrypted = utcnow(), None
    audit.record(session, webhook.tenant_id, by, "webhook.delete", f"webhook {webhook.id}", source)


def create_webhook(
    session: Session, box: CredentialBox, tenant_id: uuid.UUID, url: str, events: list[str], by: uuid.UUID | None
) -> tuple[Webhook, str]:
    """A new webhook and its secret (which only the caller ever sees in clear)."""
    secret = new_secret()
    webhook = Webhook(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        url=url,
        events=events,
        secret_encrypted=seal_secret(box, secret),
        created_by_id=by,
        created_at=utcnow(),
    )
    session.add(webhook)
    session.flush()
    return webhook, secret
