"""The audit log (extension): for a tenant's IT managers, and for admins across tenants."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from api import schemas
from api.deps import CurrentUser, SessionDep, require_role
from api.errors import problems
from api.pagination import Page
from core.enums import Role
from core.models import AuditEvent

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get(
    "",
    response_model=list[schemas.AuditEvent],
    responses=problems(403),
    operation_id="listAuditEvents",
    summary="List audit events",
)
def list_audit_events(
    session: SessionDep,
    user: CurrentUser,
    page: Page,
    # An action's name (lower-case words and dots): anything else, a NUL that PostgreSQL would refuse
    # included, matches no event and is refused as such.
    action: Annotated[
        str | None, Query(max_length=50, pattern=r"^[a-z][a-z0-9_.-]*$", description="e.g. request.approve")
    ] = None,
    tenant_id: Annotated[uuid.UUID | None, Query(alias="tenantId", description="admins: one tenant")] = None,
) -> list[schemas.AuditEvent]:
    """Decisions, clusters made and deleted, credentials shown, tokens issued and credits granted, newest
    first: an IT manager sees its tenant's, an admin every tenant's."""
    require_role(user, Role.IT_MANAGER, Role.ADMIN, action="read the audit log")
    query = select(AuditEvent)
    if user.role != Role.ADMIN:
        query = query.where(AuditEvent.tenant_id == user.tenant_id)
    elif tenant_id is not None:
        query = query.where(AuditEvent.tenant_id == tenant_id)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    rows = session.scalars(page.apply(query.order_by(AuditEvent.id.desc())))
    return [schemas.AuditEvent.model_validate(r) for r in rows]
