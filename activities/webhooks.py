"""Activities of the webhook delivery workflow: post one delivery, record how it ended.

The secret is loaded and decrypted here, in the attempt that signs with it: it never passes through the
workflow (its input, results and errors carry ids, status codes and error texts only).

Each attempt connects only to an address the receiver rule allows (services/addresses.py), checked as it
connects. What it records of a failure is one of a few general sentences, never the connection's own
error: the deliveries list must not tell a tenant what answers where (that goes to the worker's log).
"""

import asyncio
import ssl
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import httpx
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core import webhooks
from core.credentials import CredentialBox
from core.db import transaction
from core.enums import DeliveryStatus
from core.models import Webhook, WebhookDelivery, utcnow
from core.webhooks import DeliveryFailure, DeliveryOutcome, DeliveryRef
from services.addresses import AddressRefused, CheckedTransport, HostUnresolved, ReceiverAddresses
from services.outbox import open_secret

USER_AGENT = "hpcinfra-webhooks/1"
# The longest error text kept per delivery.
ERROR_CHARS = 500


@dataclass
class _Prepared:
    url: str
    body: bytes
    event_id: str
    event_type: str
    secret: str


class WebhookActivities:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        credentials: CredentialBox,
        timeout_seconds: float,
        allowed_networks: Iterable[str] = (),
    ) -> None:
        self.sessions = sessions
        self.credentials = credentials
        self.timeout_seconds = timeout_seconds
        self.receivers = ReceiverAddresses(allowed_networks)

    @activity.defn(name="DeliverWebhook")
    async def deliver(self, ref: DeliveryRef) -> DeliveryOutcome:
        """Post the delivery once. A 2xx answer delivers it; anything else is recorded on the delivery and
        raised, for the workflow's retry policy to try again later."""
        attempt = activity.info().attempt
        prepared = await asyncio.to_thread(self._prepare, ref.delivery_id)
        if isinstance(prepared, DeliveryOutcome):
            return prepared
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            webhooks.HEADER_EVENT_ID: prepared.event_id,
            webhooks.HEADER_EVENT_TYPE: prepared.event_type,
            webhooks.HEADER_TIMESTAMP: str(timestamp),
            webhooks.HEADER_SIGNATURE: webhooks.signature(prepared.secret, timestamp, prepared.body),
        }
        try:
            # Redirects are not followed (a receiver answers where it was registered), and the answer's
            # body is never read: only its status counts. No proxy or .netrc from the environment: a proxy
            # would connect to the receiver itself, to an address nobody checked.
            async with (
                httpx.AsyncClient(
                    transport=CheckedTransport(self.receivers),
                    timeout=self.timeout_seconds,
                    follow_redirects=False,
                    trust_env=False,
                ) as client,
                client.stream("POST", prepared.url, content=prepared.body, headers=headers) as response,
            ):
                code, phrase = response.status_code, response.reason_phrase
        except (AddressRefused, HostUnresolved, httpx.HTTPError) as e:
            error = _failure(e)
            activity.logger.warning("webhook delivery %s not sent: %s (%r)", ref.delivery_id, error, e)
            await asyncio.to_thread(self._attempted, ref.delivery_id, attempt, None, error)
            raise ApplicationError(error, type="WebhookNotAccepted") from None
        if 200 <= code < 300:
            await asyncio.to_thread(self._attempted, ref.delivery_id, attempt, code, None)
            return DeliveryOutcome(DeliveryStatus.DELIVERED, attempt, code)
        error = f"the receiver answered {code} {phrase}".strip()
        await asyncio.to_thread(self._attempted, ref.delivery_id, attempt, code, error)
        raise ApplicationError(error, type="WebhookNotAccepted")

    @activity.defn(name="RecordWebhookFailure")
    def record_failure(self, failure: DeliveryFailure) -> DeliveryOutcome:
        """The delivery was given up: say so on it, after its last answer or error."""
        with transaction(self.sessions) as session:
            delivery = session.get(WebhookDelivery, uuid.UUID(failure.delivery_id))
            if delivery is None:
                return DeliveryOutcome(DeliveryStatus.DROPPED, 0)
            if delivery.status != DeliveryStatus.PENDING:
                return DeliveryOutcome(delivery.status, delivery.attempts, delivery.last_status_code)
            delivery.status, delivery.finished_at = DeliveryStatus.FAILED, utcnow()
            known = delivery.last_error is None or delivery.last_error in failure.reason
            last = "" if known else f"; the last attempt: {delivery.last_error}"
            delivery.last_error = (failure.reason + last)[:ERROR_CHARS]
            return DeliveryOutcome(DeliveryStatus.FAILED, delivery.attempts, delivery.last_status_code)

    def _prepare(self, delivery_id: str) -> _Prepared | DeliveryOutcome:
        with self.sessions() as session:
            delivery = session.get(WebhookDelivery, uuid.UUID(delivery_id))
            if delivery is None:
                # Taken back with the act it told of (see outbox.withdraw): nothing to send.
                return DeliveryOutcome(DeliveryStatus.DROPPED, 0)
            if delivery.status != DeliveryStatus.PENDING:
                return DeliveryOutcome(delivery.status, delivery.attempts, delivery.last_status_code)
            webhook = session.get_one(Webhook, delivery.webhook_id)
            event = delivery.event
            if webhook.deleted_at is not None or webhook.secret_encrypted is None:
                status = DeliveryStatus.DROPPED
            else:
                return _Prepared(
                    url=webhook.url,
                    body=webhooks.body(str(event.id), event.type, event.occurred_at, str(event.tenant_id), event.data),
                    event_id=str(event.id),
                    event_type=event.type,
                    secret=open_secret(self.credentials, webhook.secret_encrypted),
                )
        with transaction(self.sessions) as session:
            delivery = session.get_one(WebhookDelivery, uuid.UUID(delivery_id))
            delivery.status, delivery.finished_at = status, utcnow()
            delivery.last_error = "the webhook was deleted before the event could be delivered"
            return DeliveryOutcome(status, delivery.attempts)

    def _attempted(self, delivery_id: str, attempt: int, code: int | None, error: str | None) -> None:
        with transaction(self.sessions) as session:
            delivery = session.get_one(WebhookDelivery, uuid.UUID(delivery_id))
            delivery.attempts = max(delivery.attempts, attempt)
            delivery.last_attempt_at = utcnow()
            delivery.last_status_code, delivery.last_error = code, error[:ERROR_CHARS] if error else None
            if error is None:
                delivery.status, delivery.finished_at = DeliveryStatus.DELIVERED, utcnow()


def _failure(error: Exception) -> str:
    """What a delivery records of an attempt that got no answer."""
    if isinstance(error, AddressRefused):
        return "the receiver's address is not allowed"
    if isinstance(error, HostUnresolved):
        return "the receiver's host name could not be resolved"
    if isinstance(error, httpx.ConnectError) and _caused_by(error, ssl.SSLCertVerificationError):
        return "the receiver's TLS certificate could not be verified"
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
        return "could not connect to the receiver"
    if isinstance(error, httpx.TimeoutException):
        return "the receiver did not answer in time"
    if isinstance(error, httpx.ProtocolError):
        return "the receiver did not answer in HTTP"
    if isinstance(error, httpx.NetworkError):
        return "the receiver closed the connection without answering"
    return "the delivery could not be sent"


def _caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    while error is not None:
        if isinstance(error, kind):
            return True
        error = error.__cause__ or error.__context__
    return False
