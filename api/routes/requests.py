"""Cluster requests: filed by CAD managers, decided by IT managers through the request workflow."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from api import idempotency, schemas
from api.access import request_for
from api.deps import (
    CredentialsDep,
    CurrentUser,
    OutboxDep,
    SessionDep,
    SettingsDep,
    TemporalDep,
    ask_of,
    read_then_release,
    require_role,
    source_of,
)
from api.errors import Problem, problems
from api.estimates import Estimates
from api.pagination import Page
from api.params import RequestId
from api.workflow_calls import create_and_start, update
from core import starts
from core.enums import RequestStatus, Role
from core.messages import Decision, decision_text, request_workflow_id
from core.models import ClusterRequest
from services import requests
from services.permissions import may_decide, requests_visible_to
from workflows.request import RequestWorkflow

router = APIRouter(prefix="/requests", tags=["requests"])


@router.get(
    "", response_model=list[schemas.ClusterRequest], operation_id="listRequests", summary="List cluster requests"
)
def list_requests(
    session: SessionDep,
    user: CurrentUser,
    page: Page,
    status: schemas.RequestStatus | None = None,
    requested_by: Annotated[uuid.UUID | None, Query(alias="requestedBy")] = None,
) -> list[schemas.ClusterRequest]:
    """All requests the caller may see, newest first: a CAD manager those it filed, an IT manager all of
    its tenant's. Filter by `status` and `requestedBy`; page with `limit` and `offset`."""
    query = requests_visible_to(user)
    if status is not None:
        query = query.where(ClusterRequest.status == status)
    if requested_by is not None:
        query = query.where(ClusterRequest.requested_by_id == requested_by)
    rows = session.scalars(page.apply(query.order_by(ClusterRequest.requested_at.desc(), ClusterRequest.id.desc())))
    estimates = Estimates(session)
    return [schemas.ClusterRequest.from_row(r, estimates.of_request(r)) for r in rows]


@router.post(
    "",
    status_code=201,
    response_model=schemas.ClusterRequest,
    responses=problems(403),
    operation_id="createRequest",
    summary="Request a new cluster",
)
async def create_request(
    body: schemas.RequestIn,
    session: SessionDep,
    user: CurrentUser,
    temporal: TemporalDep,
    settings: SettingsDep,
    webhooks: OutboxDep,
    http_request: Request,
) -> schemas.ClusterRequest:
    """File a request for a cluster (CAD managers); it waits for an IT manager's decision. The server
    sets `id`, `status` (`pending`), `requestedBy` and `requestedAt`, whatever the body says. Node
    type, tools and services come from `GET /catalog`; `cloudProviderId` is one of the tenant's
    providers (`GET /cloud-providers`)."""
    require_role(user, Role.CAD_MANAGER, action="file cluster requests")
    ask, expires_after = ask_of(body), settings.request_expiry.total_seconds()
    request = await create_and_start(
        "request", session, user, http_request, temporal, settings,
        create=lambda: requests.file_request(session, user, ask, webhooks),
        find=request_for,
        workflow=lambda request: starts.request(str(request.id), str(request.tenant_id), expires_after),
    )  # fmt: skip
    return await run_in_threadpool(_view, session, request)


@router.get("/{requestId}", response_model=schemas.ClusterRequest, operation_id="getRequest", summary="Get a request")
def get_request(request_id: RequestId, session: SessionDep, user: CurrentUser) -> schemas.ClusterRequest:
    """The request, for its requester and the tenant's IT managers; once approved, `clusterId` names
    the cluster it became."""
    return _view(session, request_for(session, user, request_id))


@router.patch(
    "/{requestId}",
    response_model=schemas.ClusterRequest,
    responses=problems(403, 409),
    operation_id="decideRequest",
    summary="Approve or reject a request",
)
async def decide_request(
    request_id: RequestId,
    body: schemas.DecisionIn,
    session: SessionDep,
    user: CurrentUser,
    temporal: TemporalDep,
    credentials: CredentialsDep,
    http_request: Request,
) -> schemas.ClusterRequest:
    """Approve or reject a pending request (IT managers, admins). Rejecting needs a `rejectionReason`.
    The request's workflow makes the decision, so a decision sent through Temporal gives the same
    result; approval sets `approvedBy` and `approvedAt` and starts provisioning the cluster named in
    `clusterId`. A request that is no longer pending, or whose cluster the tenant's credits would not
    keep running, is a 409."""
    request = await read_then_release(session, request_for, user, request_id)
    if not may_decide(user, request):
        raise Problem(403, f"only it_manager or admin users may approve or reject requests; you are {user.role}")
    if body.status == RequestStatus.REJECTED and not body.rejection_reason:
        raise Problem(
            422,
            "a rejection needs a rejectionReason that tells the requester why",
            errors=[{"field": "rejectionReason", "message": "required when rejecting"}],
        )
    if request.status != RequestStatus.PENDING:
        raise Problem(409, f"the request is already {request.status}; only a pending request can be decided")

    # The proof covers the decision as the workflow records it (an approval carries no reason).
    source, reason = source_of(http_request), body.rejection_reason if body.status == RequestStatus.REJECTED else None
    text = decision_text(str(request_id), body.status, str(user.id), reason, source)
    decision = Decision(
        status=body.status,
        decided_by=str(user.id),
        rejection_reason=body.rejection_reason,
        source=source,
        proof=credentials.prove(text),
    )
    handle = temporal.get_workflow_handle(request_workflow_id(str(request_id)))
    await update(
        handle,
        RequestWorkflow.decide,
        decision,
        refused="the decision was refused",
        ended="the request's workflow has ended; it can no longer be decided",
    )

    def reload() -> schemas.ClusterRequest:
        session.expire_all()
        return _view(session, request_for(session, user, request_id))

    return await run_in_threadpool(reload)


def _view(session: Session, request: ClusterRequest) -> schemas.ClusterRequest:
    return schemas.ClusterRequest.from_row(request, Estimates(session).of_request(request))


@router.get(
    "/{requestId}/notes",
    response_model=list[schemas.Note],
    operation_id="listRequestNotes",
    summary="List a request's notes",
)
def list_notes(request_id: RequestId, session: SessionDep, user: CurrentUser) -> list[schemas.Note]:
    """The request's notes, oldest first, for its requester and the tenant's IT managers."""
    return [schemas.Note.model_validate(n) for n in request_for(session, user, request_id).notes]


@router.post(
    "/{requestId}/notes",
    status_code=201,
    response_model=schemas.Note,
    operation_id="addRequestNote",
    summary="Add a note to a request",
)
def create_note(
    request_id: RequestId, body: schemas.NoteIn, session: SessionDep, user: CurrentUser, http_request: Request
) -> schemas.Note:
    """Add a note to a request, at any stage; the requester and IT managers may. The server sets
    `time` and `by`."""
    note = requests.add_note(session, request_for(session, user, request_id), user, body.note)
    idempotency.record_created(session, http_request, f"note {note.id}")
    session.commit()
    return schemas.Note.model_validate(note)
