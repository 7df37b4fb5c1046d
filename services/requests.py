"""Cluster requests as the domain writes them: filing one (`file_request`) and the notes written on it
(`add_note`). Decisions are the request workflow's (activities/requests.py). The callers commit."""

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import ClusterRequest, RequestNote, User
from services import leases, outbox
from services.clusters import ClusterAsk, require_resizable


def file_request(
    session: Session, user: User, ask: ClusterAsk, webhooks: outbox.Outbox
) -> tuple[ClusterRequest, list[uuid.UUID]]:
    """A `pending` request of the user for the cluster `ask` describes, in the session's transaction, and
    the webhook deliveries of its request.filed event (told through `webhooks`), to start once it commits.
    Refused for a provider that is not the tenant's or lacks what it asks for, and for a lease that ends in
    the past (a longer lease than a CAD manager may set is for the approver to grant). A request that resizes
    a cluster must name it as it is (require_resizable), and keeps its storage."""
    ask.provider_for(session, user)
    leases.require_future(ask.expires_at)
    storage_gb = ask.storage_gb
    if ask.resizes_cluster_id is not None:
        storage_gb = require_resizable(session, user, ask).storage_gb
    request = ClusterRequest(
        tenant_id=user.tenant_id,
        name=ask.name,
        cloud_provider_id=ask.cloud_provider_id,
        number_of_nodes=ask.number_of_nodes,
        node_type=ask.node_type,
        storage_gb=storage_gb,
        min_nodes=ask.min_nodes,
        idle_seconds=ask.idle_seconds,
        expires_at=ask.expires_at,
        resizes_cluster_id=ask.resizes_cluster_id,
        # Ids given now stay with each tool and service on the cluster the request becomes.
        tools=[{"id": str(uuid.uuid4()), **t} for t in ask.tools],
        services=[{"id": str(uuid.uuid4()), **s} for s in ask.services],
        requested_by_id=user.id,
    )
    session.add(request)
    session.flush()
    # request.filed, with the request (services/outbox.py); delivered once its workflow has started.
    deliveries = webhooks.emit(session, user.tenant_id, "request.filed", outbox.request_filed(request))
    return request, deliveries


def add_note(
    session: Session, request: ClusterRequest, by: User, text: str, key: uuid.UUID | None = None
) -> RequestNote:
    """A note by `by` on the request. The same note written again under its `key` (made by the request's
    workflow, so an activity's retry brings the same one) is the note written first."""
    if key is not None and (written := session.scalar(select(RequestNote).where(RequestNote.key == key))) is not None:
        return written
    note = RequestNote(request_id=request.id, by_id=by.id, note=text, key=key)
    session.add(note)
    session.flush()
    return note
