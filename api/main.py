"""The FastAPI application: assembles the routers under /api/v1 and the shared machinery."""

import asyncio
import gc
import logging
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from api import errors, openapi
from api.auth import Authentication
from api.deps import TemporalConnection
from api.idempotency import Idempotency
from api.limits import BodySizeLimit, RateLimit
from api.routes import audit, cluster_items, clusters, meta, metrics, providers, requests, tenants, webhooks
from core import observability
from core.credentials import credential_box
from core.db import make_engine, make_session_factory
from core.settings import Settings, get_settings
from services.credits import keep_standing_rates
from services.outbox import Outbox
from services.resume import resume_workflows

API_PREFIX = "/api/v1"
log = logging.getLogger(__name__)


async def _resume_workflows(app: FastAPI) -> None:
    """Start what an API process that stopped half way may have left unstarted (see services/resume.py).
    Best effort, in the background: the API serves meanwhile, and workers do the same when they start."""
    try:
        client = await app.state.temporal.client()
        resumed = await resume_workflows(client, app.state.sessions, app.state.settings)
        log.info("workflows resumed: %s", resumed)
    except Exception as e:  # noqa: BLE001 - Temporal may be down; the next start (or a worker) tries again
        log.warning("could not resume workflows at start: %s", e)


def _observe(app: FastAPI, settings: Settings) -> None:
    """Logs, metrics and traces (core/observability.py). RequestTelemetry is added after the other
    middleware so it runs first: the request id is set, and the request timed, even for a caller the
    authentication turns away. GET /metrics lies outside /api/v1, so it needs no token."""
    observability.configure_logging(settings)
    app.add_middleware(observability.RequestTelemetry)
    app.add_route("/metrics", observability.metrics_endpoint, methods=["GET"], include_in_schema=False)
    observability.configure_tracing(settings, "api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine = make_engine(settings.sqlalchemy_url)
        app.state.settings = settings
        app.state.sessions = make_session_factory(engine, hooks=[keep_standing_rates])
        app.state.temporal = TemporalConnection(settings)
        app.state.credentials = credential_box(settings)
        # No starter: a route starts the deliveries of what it made once that thing's workflow has started
        # (api/workflow_calls.create_and_start), so that no receiver hears of a request taken back.
        app.state.outbox = Outbox(None, settings.budget_min_runway_hours)
        # What is loaded by now lives as long as the app: keep it out of the garbage collector's
        # full collections, which otherwise pause requests for tens of milliseconds.
        gc.freeze()
        resuming = asyncio.create_task(_resume_workflows(app))
        yield
        resuming.cancel()
        engine.dispose()

    app = FastAPI(
        title="hpcinfra",
        version="0.1.0",
        description="Slurm clusters for chip-design teams: request, approval, provisioning, tools, services, credits.",
        lifespan=lifespan,
        telemetry=observability.fastapi_telemetry(),
        openapi_tags=openapi.TAGS,
        generate_unique_id_function=openapi.operation_id,
    )
    errors.install(app)
    # Middleware added later runs earlier: authentication, then the rate limit, then the body cap,
    # then Idempotency-Key (which reads the body, within the cap).
    app.add_middleware(Idempotency)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RateLimit, per_minute=settings.rate_limit_per_minute)
    # Added last, so it runs first: no body is read for a caller without a valid token.
    app.add_middleware(
        Authentication, prefix=API_PREFIX, public=frozenset({f"{API_PREFIX}/healthz", f"{API_PREFIX}/readyz"})
    )
    app.add_middleware(errors.BusyDatabase)
    _observe(app, settings)
    v1 = APIRouter(prefix=API_PREFIX)
    for module in (meta, requests, clusters, cluster_items, metrics, providers, tenants, audit, webhooks):
        v1.include_router(module.router)
    app.include_router(v1)
    return app
