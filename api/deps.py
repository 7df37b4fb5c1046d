"""Typed dependencies for the routes (the database session, the caller, the Temporal client), and what
routes do alike around the domain's calls: putting a body in its terms."""

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client

from api.errors import Problem
from api.schemas import ClusterIn, RequestIn
from core.credentials import CredentialBox
from core.models import User
from core.settings import Settings
from core.temporal import connect
from services.clusters import ClusterAsk
from services.outbox import Outbox

T = TypeVar("T")
log = logging.getLogger(__name__)


class TemporalConnection:
    """One client for the app, connected on first use so the API starts even while Temporal is down."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> Client:
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await connect(self.settings)
                except RuntimeError as e:
                    # Where it is, and why it failed, is for operators (the log), not for callers.
                    log.warning("Temporal at %s is unreachable: %s", self.settings.temporal_address, e)
                    raise Problem(503, "the workflow engine is unreachable; try again shortly") from e
            return self._client


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    factory: sessionmaker[Session] = request.app.state.sessions
    with factory() as session:
        yield session


async def get_temporal(request: Request) -> Client:
    return await request.app.state.temporal.client()


def get_credentials(request: Request) -> CredentialBox:
    return request.app.state.credentials


def get_outbox(request: Request) -> Outbox:
    return request.app.state.outbox


async def read_then_release(session: Session, read: Callable[..., T], *args: Any) -> T:
    """`read(session, *args)` in the thread pool, then end the session's transaction (what it read stays loaded):
    the connection goes back to the pool before the route waits on a workflow, which can take seconds.
    Held meanwhile, a burst of such calls empties the pool and stalls every other call."""

    def run() -> T:
        try:
            return read(session, *args)
        finally:
            session.commit()

    return await run_in_threadpool(run)


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
CredentialsDep = Annotated[CredentialBox, Depends(get_credentials)]
OutboxDep = Annotated[Outbox, Depends(get_outbox)]

# Declared for the OpenAPI document; the token itself is checked by api.auth.Authentication.
_bearer = HTTPBearer(auto_error=False, description="An API token from `hpcinfra users create`")


def get_current_user(request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> User:
    return request.state.user


CurrentUser = Annotated[User, Depends(get_current_user)]


def source_of(request: Request) -> str:
    """Where a call came from, for the audit log."""
    return f"api {request.client.host if request.client else 'unknown'}"


def require_role(user: User, *roles: str, action: str) -> None:
    if user.role not in roles:
        raise Problem(403, f"only {' or '.join(roles)} users may {action}; you are {user.role}")


def ask_of(body: RequestIn | ClusterIn) -> ClusterAsk:
    """What a new request or cluster asks for, in the domain's terms."""
    return ClusterAsk(
        name=body.name,
        cloud_provider_id=body.cloud_provider_id,
        number_of_nodes=body.size.number_of_nodes,
        node_type=body.size.node_type,
        storage_gb=body.size.storage,
        tools=[t.model_dump() for t in body.tools],
        services=[s.model_dump() for s in body.services],
        min_nodes=body.scaling.min_nodes if body.scaling else None,
        idle_seconds=body.scaling.idle_seconds if body.scaling else None,
        expires_at=body.expires_at,
        resizes_cluster_id=getattr(body, "resizes_cluster_id", None),
    )
