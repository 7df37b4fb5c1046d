"""The caller, the catalog, and the health probes."""

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api import schemas
from api.deps import CurrentUser
from core import catalog

router = APIRouter(tags=["meta"])


@router.get("/me", response_model=schemas.Me, operation_id="getMe", summary="Get the caller")
def me(user: CurrentUser) -> schemas.Me:
    """The user the token belongs to: who the other calls act as."""
    return schemas.Me.model_validate(user)


@router.get("/catalog", response_model=schemas.Catalog, operation_id="getCatalog", summary="Get the catalog")
def get_catalog(user: CurrentUser) -> schemas.Catalog:
    """Node types, tools and services that requests may name, with their rates in credits per hour."""
    return schemas.Catalog(
        node_types=[schemas.CatalogNodeType.model_validate(n) for n in catalog.NODE_TYPES.values()],
        tools=[
            schemas.CatalogTool.model_validate(
                {
                    **vars(t),
                    "versions_by_provider": catalog.tool_versions(t),
                }
            )
            for t in catalog.TOOLS.values()
        ],
        services=[
            schemas.CatalogService.model_validate(
                {
                    **vars(s),
                    "config_keys": [vars(k) for k in s.config_keys],
                    "versions_by_provider": catalog.service_versions(s),
                }
            )
            for s in catalog.SERVICES.values()
        ],
        provider_notes=catalog.PROVIDER_NOTES,
        storage_credits_per_gb_hour=catalog.STORAGE_CREDITS_PER_GB_HOUR,
        nodes={"min": catalog.MIN_NODES, "max": catalog.MAX_NODES},
        storage_gb={
            "min": catalog.MIN_STORAGE_GB,
            "max": catalog.MAX_STORAGE_GB,
            "default": catalog.DEFAULT_STORAGE_GB,
        },
    )


@router.get("/healthz", response_model=schemas.Health, operation_id="checkLiveness", summary="Liveness probe")
def healthz() -> schemas.Health:
    """Liveness: the process answers."""
    return schemas.Health(status="ok")


@router.get(
    "/readyz",
    response_model=schemas.Health,
    responses={503: {"model": schemas.Health}},
    operation_id="checkReadiness",
    summary="Readiness probe",
)
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the database and Temporal both answer."""
    checks = {}
    try:

        def ping() -> None:
            with request.app.state.sessions() as session:
                session.execute(text("SELECT 1"))

        await run_in_threadpool(ping)
        checks["database"] = "ok"
    except Exception as e:  # any failure means not ready; the reason is reported, not raised
        checks["database"] = f"unavailable: {type(e).__name__}"
    try:
        client = await request.app.state.temporal.client()
        await client.service_client.check_health()
        checks["temporal"] = "ok"
    except Exception as e:
        checks["temporal"] = f"unavailable: {type(e).__name__}"
    ready = all(v == "ok" for v in checks.values())
    body = schemas.Health(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
