"""A tenant's analytics and credits: for its IT managers and admins."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from fastapi import APIRouter, Request
from sqlalchemy import select

from api import idempotency, schemas
from api.access import tenant_for
from api.deps import CurrentUser, SessionDep, source_of
from api.errors import Problem, problems
from api.pagination import Page
from api.params import End, Start, TenantId, time_range
from core.enums import Role
from core.models import CreditEntry
from services import credits, reports

router = APIRouter(prefix="/tenants", tags=["tenants"])


@router.get(
    "/{tenantId}/analytics",
    response_model=schemas.Analytics,
    responses=problems(403),
    operation_id="getTenantAnalytics",
    summary="Get a tenant's analytics",
)
def get_analytics(
    tenant_id: TenantId, session: SessionDep, user: CurrentUser, start: Start = None, end: End = None
) -> schemas.Analytics:
    """Clusters, users, use and credits of the tenant over every hour [start, end) touches (default: the
    last 30 days), for its IT managers and admins."""
    tenant = tenant_for(session, user, tenant_id, Role.IT_MANAGER, Role.ADMIN, action="read tenant analytics")
    start, end = time_range(start, end, timedelta(days=30))
    return schemas.Analytics.of(reports.analytics(session, tenant.id, start, end, datetime.now(UTC)))


@router.get(
    "/{tenantId}/credits",
    response_model=schemas.CreditAccount,
    responses=problems(403),
    operation_id="getTenantCredits",
    summary="Get a tenant's credits and ledger",
)
def get_credits(tenant_id: TenantId, session: SessionDep, user: CurrentUser, page: Page) -> schemas.CreditAccount:
    """The tenant's balance, budget policy and ledger, newest first (extension), for its IT managers
    and admins."""
    tenant = tenant_for(session, user, tenant_id, Role.IT_MANAGER, Role.ADMIN, action="read a tenant's credits")
    entries = session.scalars(
        page.apply(select(CreditEntry).where(CreditEntry.tenant_id == tenant.id).order_by(CreditEntry.id.desc()))
    )
    return schemas.CreditAccount(
        tenant_id=tenant.id,
        balance=credits.as_credits(tenant.credit_balance),
        policy=tenant.budget_policy,
        entries=[
            schemas.LedgerEntry.model_validate({**_columns(e), "amount": credits.as_credits(e.amount)}) for e in entries
        ],
    )


@router.post(
    "/{tenantId}/credits",
    status_code=201,
    response_model=schemas.LedgerEntry,
    responses=problems(403),
    operation_id="grantTenantCredits",
    summary="Grant credits to a tenant",
)
def grant_credits(
    tenant_id: TenantId, body: schemas.GrantIn, session: SessionDep, user: CurrentUser, http_request: Request
) -> schemas.LedgerEntry:
    """Grant credits to a tenant: an entry in its ledger, added to its balance. Admins only."""
    tenant = tenant_for(session, user, tenant_id, Role.ADMIN, action="grant credits")
    try:
        entry = credits.grant(
            session,
            tenant,
            Decimal(str(body.amount)),
            body.note or "granted",
            by=user.id,
            source=source_of(http_request),
        )
    except ValueError as e:
        raise Problem(422, str(e), errors=[{"field": "amount", "message": str(e)}]) from None
    idempotency.record_created(session, http_request, f"credit-entry {entry.id}")
    session.commit()
    return schemas.LedgerEntry.model_validate({**_columns(entry), "amount": credits.as_credits(entry.amount)})


def _columns(entry: CreditEntry) -> dict:
    return {column.key: getattr(entry, column.key) for column in CreditEntry.__table__.columns}
