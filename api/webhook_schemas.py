"""The JSON shapes of the webhook routes (extension), camelCase like the rest of the API."""

import uuid
from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import AfterValidator, ConfigDict, Field, StringConstraints

from api import examples as ex
from api.examples import examples
from api.schemas import Input, Model
from core import enums, models
from core.webhooks import EVENT_TYPES

# The event names, as core.webhooks defines them (Literal of a tuple is a Literal of its items).
EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
DeliveryStatus = Literal[tuple(s.value for s in enums.DeliveryStatus)]  # type: ignore[valid-type]


def _webhook_url(value: str) -> str:
    """An absolute http(s) URL that can be posted to, with no credentials in it (they would be stored and
    shown in clear: a receiver authenticates deliveries by their signature instead)."""
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain spaces or control characters")
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL, such as https://hooks.example.com/hpcinfra")
    if not parts.hostname:
        raise ValueError("must name a host, such as https://hooks.example.com/hpcinfra")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "must not contain a user name or password; check the X-Hpcinfra-Signature of each delivery instead"
        )
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number from 0 to 65535
    except ValueError:
        raise ValueError("has a port that is not a number from 1 to 65535") from None
    try:
        httpx.URL(value)
    except (ValueError, httpx.InvalidURL) as e:
        raise ValueError(f"is not a valid URL: {e}") from None
    return value


WebhookUrl = Annotated[
    str,
    StringConstraints(min_length=1, max_length=2048),
    AfterValidator(_webhook_url),
    Field(
        description="where events are posted: an http:// or https:// URL without credentials, such as "
        "https://hooks.example.com/hpcinfra, whose host is a public address or a name of public addresses (an "
        "internal one only in a network the operator allows)",
        json_schema_extra={"pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"},
    ),
]


def _once_each(events: list[str]) -> list[str]:
    return list(dict.fromkeys(events))


class WebhookIn(Input):
    model_config = ConfigDict(json_schema_extra=examples(ex.WEBHOOK_IN))

    url: WebhookUrl
    events: Annotated[list[EventType], Field(min_length=1, max_length=50), AfterValidator(_once_each)]


class Webhook(Model):
    model_config = ConfigDict(json_schema_extra=examples(ex.WEBHOOK))

    id: uuid.UUID
    tenant_id: uuid.UUID
    url: str
    events: list[EventType]
    created_by: uuid.UUID | None = None
    created_at: datetime

    @classmethod
    def from_row(cls, row: models.Webhook) -> "Webhook":
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            url=row.url,
            events=row.events,
            created_by=row.created_by_id,
            created_at=row.created_at,
        )


class WebhookCreated(Webhook):
    model_config = ConfigDict(json_schema_extra=examples(ex.WEBHOOK_CREATED))

    secret: str = Field(
        description="the key of the deliveries' HMAC-SHA256 signatures: shown only in this answer, keep it safe"
    )


class WebhookDelivery(Model):
    model_config = ConfigDict(json_schema_extra=examples(ex.WEBHOOK_DELIVERY))

    id: uuid.UUID
    event_id: uuid.UUID
    event_type: EventType
    occurred_at: datetime
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None = None
    last_error: str | None = None
    last_attempt_at: datetime | None = None
    finished_at: datetime | None = None

    @classmethod
    def from_row(cls, row: models.WebhookDelivery) -> "WebhookDelivery":
        return cls(
            id=row.id,
            event_id=row.event_id,
            event_type=row.event.type,
            occurred_at=row.event.occurred_at,
            status=row.status,
            attempts=row.attempts,
            last_status_code=row.last_status_code,
            last_error=row.last_error,
            last_attempt_at=row.last_attempt_at,
            finished_at=row.finished_at,
        )
