"""Cloud providers a tenant can provision on (extension): `cloudProviderId` points here."""

from fastapi import APIRouter, Request
from sqlalchemy.exc import IntegrityError

from api import idempotency, schemas
from api.deps import CurrentUser, SessionDep, SettingsDep, require_role
from api.errors import Problem, problems
from api.pagination import Page
from core.enums import Role
from core.models import CloudProvider, Tenant
from core.providers import ON_PLATFORM_MACHINES
from services.accounts import AccountError, create_provider
from services.permissions import providers_visible_to

router = APIRouter(prefix="/cloud-providers", tags=["providers"])


@router.get(
    "", response_model=list[schemas.CloudProvider], operation_id="listCloudProviders", summary="List cloud providers"
)
def list_providers(session: SessionDep, user: CurrentUser, page: Page) -> list[schemas.CloudProvider]:
    """The tenant's cloud providers (every tenant's, for admins), by name."""
    rows = session.scalars(page.apply(providers_visible_to(user).order_by(CloudProvider.name, CloudProvider.id)))
    return [schemas.CloudProvider.model_validate(p) for p in rows]


@router.post(
    "",
    status_code=201,
    response_model=schemas.CloudProvider,
    responses=problems(403, 409),
    operation_id="createCloudProvider",
    summary="Register a cloud provider",
)
def register_provider(
    body: schemas.CloudProviderIn,
    session: SessionDep,
    user: CurrentUser,
    settings: SettingsDep,
    http_request: Request,
) -> schemas.CloudProvider:
    """Register a cloud provider for the tenant (IT managers, admins). A `local` provider, whose clusters
    run as root on the platform's own machine, is for admins only (403). With the operator's list of
    allowed cloud accounts set, a cloud provider must name an account it allows the provider's tenant
    (422). A name the tenant already uses is a 409."""
    require_role(user, Role.IT_MANAGER, Role.ADMIN, action="register cloud providers")
    if body.kind in ON_PLATFORM_MACHINES and user.role != Role.ADMIN:
        raise Problem(
            403, f"only admins may register {body.kind} providers: their clusters run on the platform's own machines"
        )
    tenant_id = body.tenant_id or user.tenant_id
    if tenant_id != user.tenant_id and (user.role != Role.ADMIN or session.get(Tenant, tenant_id) is None):
        raise Problem(
            422, f"tenantId {tenant_id} is not a tenant you can register providers for; leave it out for your own"
        )
    try:
        # The accounts allowed are those of the tenant the provider will belong to, not the caller's.
        provider = create_provider(
            session, tenant_id, name=body.name, kind=body.kind, region=body.region, config=body.config,
            allowed_accounts=settings.allowed_cloud_accounts,
        )  # fmt: skip
    except AccountError as e:
        raise Problem(409, str(e)) from e
    except IntegrityError as e:  # the same name, registered by a call at the same time
        session.rollback()
        raise Problem(409, f"this tenant has a cloud provider named {body.name!r} already") from e
    idempotency.record_created(session, http_request, f"cloud-provider {provider.id}")
    session.commit()
    return schemas.CloudProvider.model_validate(provider)
