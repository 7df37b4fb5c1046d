"""A tenant's outbound webhooks (extension): registered by its IT managers and admins, told of the
tenant's events by the delivery workflows (services/outbox.py, workflows/webhooks.py)."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from api import idempotency
from api import webhook_schemas as schemas
from api.access import NO_STORE, tenant_for
from api.deps import CredentialsDep, CurrentUser, SessionDep, SettingsDep, source_of
from api.errors import Problem, problems
from api.pagination import Page
from api.params import TenantId
from core.enums import Role
from core.models import Tenant, Webhook, WebhookDelivery
from services import outbox
from services.addresses import AddressRefused, HostUnresolved, ReceiverAddresses, receiver_host

router = APIRouter(prefix="/tenants", tags=["webhooks"])

WebhookId = Annotated[uuid.UUID, Path(alias="webhookId")]


def _check_receiver(url: str, allowed_networks: list[str]) -> None:
    """Refuse a URL whose host is, or resolves to, an internal address outside the allowed networks. A name
    that does not resolve (yet) is accepted: each delivery checks again (services/addresses.py)."""
    try:
        ReceiverAddresses(allowed_networks).check(*receiver_host(url))
    except AddressRefused as e:
        raise Problem(422, f"url: {e}", errors=[{"field": "url", "message": str(e)}]) from None
    except HostUnresolved:
        pass


def _webhook(session: Session, tenant: Tenant, webhook_id: uuid.UUID) -> Webhook:
    webhook = session.get(Webhook, webhook_id)
    if webhook is None or webhook.tenant_id != tenant.id or webhook.deleted_at is not None:
        raise Problem(404, f"there is no webhook {webhook_id} in tenant {tenant.id}")
    return webhook


@router.post(
    "/{tenantId}/webhooks",
    status_code=201,
    response_model=schemas.WebhookCreated,
    responses=problems(403, 409),
    operation_id="createWebhook",
    summary="Register a webhook (its signing secret is shown only in this answer)",
)
def create_webhook(
    tenant_id: TenantId,
    body: schemas.WebhookIn,
    session: SessionDep,
    user: CurrentUser,
    credentials: CredentialsDep,
    settings: SettingsDep,
    http_request: Request,
    response: Response,
) -> schemas.WebhookCreated:
    """Register a webhook for the tenant's events. The answer holds its signing secret, shown only now. Its
    URL must lead to a public address, or into a network the operator allows."""
    tenant = tenant_for(session, user, tenant_id, Role.IT_MANAGER, Role.ADMIN, action="register webhooks")
    outbox.require_room_for_webhook(session, tenant.id)
    session.commit()  # the connection goes back to the pool while the receiver's name is looked up
    _check_receiver(body.url, settings.webhook_allowed_networks)
    webhook, secret = outbox.register_webhook(
        session, credentials, tenant.id, body.url, body.events, user.id, source_of(http_request)
    )
    idempotency.record_created(session, http_request, f"webhook {webhook.id}")
    session.commit()
    # The secret is in this answer only: no cache may keep it (and Idempotency-Key keeps it encrypted).
    response.headers["Cache-Control"] = NO_STORE
    return schemas.WebhookCreated(**schemas.Webhook.from_row(webhook).model_dump(), secret=secret)


@router.get(
    "/{tenantId}/webhooks",
    response_model=list[schemas.Webhook],
    responses=problems(403),
    operation_id="listWebhooks",
    summary="List a tenant's webhooks",
)
def list_webhooks(tenant_id: TenantId, session: SessionDep, user: CurrentUser, page: Page) -> list[schemas.Webhook]:
    """The tenant's webhooks, oldest first, without their secrets."""
    tenant = tenant_for(session, user, tenant_id, Role.IT_MANAGER, Role.ADMIN, action="read webhooks")
    rows = session.scalars(
        page.apply(
            select(Webhook)
            .where(Webhook.tenant_id == tenant.id, Webhook.deleted_at.is_(None))
            .order_by(Webhook.created_at, Webhook.id)
        )
    )
    return [schemas.Webhook.from_row(w) for w in rows]


@router.delete(
    "/{tenantId}/webhooks/{webhookId}",
    status_code=204,
    responses=problems(403),
    operation_id="deleteWebhook",
    summary="Delete a webhook",
)
def delete_webhook(
    tenant_id: TenantId, webhook_id: WebhookId, session: SessionDep, user: CurrentUser, http_request: Request
) -> Response:
    """Stop telling this endpoint of events; deliveries still being retried are dropped, and its secret is
    forgotten."""
    tenant = tenant_for(session, user, tenant_id, Role.IT_MANAGER, Role.ADMIN, action="delete webhooks")
    outbox.delete_webhook(session, _webhook(session, tenant, webhook_id), user.id, source_of(http_request))
    session.commit()
    return Response(status_code=204)


@router.get(
    "/{tenantId}/webhooks/{webhookId}/deliveries",
    response_model=list[schemas.WebhookDelivery],
    responses=problems(403),
    operation_id="listWebhookDeliveries",
    summary="List a webhook's deliveries",
)
def list_deliveries(
    tenant_id: TenantId, webhook_id: WebhookId, session: SessionDep, user: CurrentUser, page: Page
) -> list[schemas.WebhookDelivery]:
    """The webhook's deliveries, newest first: which event, whether it was accepted, how many attempts,
    and the last answer or error."""
    tenant = tenant_for(session, user, tenant_id, Role.IT_MANAGER, Role.ADMIN, action="read webhook deliveries")
    webhook = _webhook(session, tenant, webhook_id)
    rows = session.scalars(
        page.apply(
            select(WebhookDelivery)
            .where(WebhookDelivery.webhook_id == webhook.id)
            .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id)
        )
    )
    return [schemas.WebhookDelivery.from_row(d) for d in rows]
