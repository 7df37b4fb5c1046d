"""Activities of the request (approval) workflow: they make its decisions and notes durable."""

import uuid

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.credentials import CredentialBox
from core.db import transaction
from core.enums import ClusterStatus, RequestStatus
from core.messages import DecisionRecord, NoteRecord, RequestState, Resize, ResizeAsk, decision_text
from core.models import Cluster, ClusterRequest
from services import audit, credits
from services.clusters import create_approved_cluster, resize_shortfall
from services.outbox import Outbox, request_decided
from services.permissions import find_user, may_decide, may_see_request
from services.requests import add_note


class RequestActivities:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        min_runway_hours: float,
        webhooks: Outbox | None = None,
        signal_decisions: bool = True,
        proofs: CredentialBox | None = None,
    ) -> None:
        self.sessions = sessions
        # The budget guard: an approval must leave the tenant this many hours of credits.
        self.min_runway_hours = min_runway_hours
        # Tells the tenant's webhooks of each decision (request.decided), with the decision's transaction.
        self.webhooks = webhooks
        # Whether decisions and notes sent through Temporal, unproven, are taken (HPCINFRA_SIGNAL_DECISIONS).
        self.signal_decisions = signal_decisions
        # Checks the API's proofs of its decisions (Decision.proof); without it none is proven.
        self.proofs = proofs

    @activity.defn(name="RecordDecision")
    def record_decision(self, record: DecisionRecord) -> RequestState:
        """Write an approval or rejection, and on approval the cluster it creates, in one transaction.
        Running it again after it succeeded finds its own decision and returns it unchanged."""
        with transaction(self.sessions) as session:
            request = session.get(ClusterRequest, uuid.UUID(record.request_id), with_for_update={"of": ClusterRequest})
            if request is None:
                raise ApplicationError(
                    f"request {record.request_id} does not exist", type="NotFound", non_retryable=True
                )
            # A decision the API did not prove came through Temporal (a signal, or the update sent by hand):
            # its decider is only named. An expiry (no decider) is the workflow's own.
            claimed = record.decided_by is not None and not self._proven(record)
            if claimed and not self.signal_decisions:
                raise ApplicationError(
                    "decisions through Temporal are turned off (HPCINFRA_SIGNAL_DECISIONS=false); "
                    "decide through the API",
                    type="NotAllowed",
                    non_retryable=True,
                )
            decider = None
            if record.decided_by is not None:
                decider = find_user(session, request.tenant_id, record.decided_by)
                if decider is None or not may_decide(decider, request):
                    raise ApplicationError(
                        f"{record.decided_by!r} is not an it_manager of this request's tenant",
                        type="NotAnApprover",
                        non_retryable=True,
                    )
            if request.status != RequestStatus.PENDING:
                if request.status == record.status and request.approved_at == record.decided_at:
                    return _outcome(request)
                raise ApplicationError(
                    f"the request is already {request.status}", type="AlreadyDecided", non_retryable=True
                )

            resized = session.get(Cluster, request.resizes_cluster_id) if request.resizes_cluster_id else None
            if record.status == RequestStatus.APPROVED:
                refusal = self._shortfall(session, request, resized)
                if refusal is not None:
                    raise ApplicationError(f"not approved: {refusal}", type="Conflict", non_retryable=True)
            request.status = record.status
            request.approved_by_id = decider.id if decider else None
            request.approved_at = record.decided_at
            request.rejection_reason = record.rejection_reason
            if record.status == RequestStatus.APPROVED and resized is not None:
                request.cluster_id = resized.id
            elif record.status == RequestStatus.APPROVED:
                assert record.cluster_id is not None
                request.cluster_id = create_approved_cluster(session, request, uuid.UUID(record.cluster_id)).id
            action = "request.approve" if record.status == RequestStatus.APPROVED else "request.reject"
            if decider is None:
                action = "request.expire"
            approved = record.status == RequestStatus.APPROVED
            detail = {"cluster": str(request.cluster_id)} if approved else {"reason": record.rejection_reason}
            if claimed:
                # Who sent it is not known, only whom it names.
                detail["claimed"] = True
            audit.record(
                session, request.tenant_id, decider.id if decider else None, action, f"request {request.id}",
                "temporal" if claimed else record.source, **detail,
            )  # fmt: skip
            if self.webhooks is not None:
                data = request_decided(request, expired=decider is None)
                self.webhooks.emit(
                    session, request.tenant_id, "request.decided", data, key=f"request.decided/{request.id}"
                )
            return _outcome(request)

    def _shortfall(self, session: Session, request: ClusterRequest, resized: Cluster | None) -> str | None:
        """Why the tenant's credits would not last with the cluster approved (or its growth, for a resize)."""
        if resized is None:
            rate = credits.rate_of_request(request)
            return credits.shortfall(session, request.tenant_id, rate, self.min_runway_hours)
        if resized.status != ClusterStatus.AVAILABLE:
            raise ApplicationError(
                f"the cluster this request resizes is {resized.status}; only an available cluster is resized",
                type="Conflict",
                non_retryable=True,
            )
        return resize_shortfall(session, resized, request.number_of_nodes, self.min_runway_hours)

    def _proven(self, record: DecisionRecord) -> bool:
        text = decision_text(
            record.request_id, record.status, record.decided_by, record.rejection_reason, record.source
        )
        return self.proofs is not None and self.proofs.proves(text, record.proof)

    @activity.defn(name="AddNote")
    def add_note(self, record: NoteRecord) -> None:
        """A note sent by Temporal signal (the API writes its notes itself): its writer is only named."""
        if not self.signal_decisions:
            raise ApplicationError(
                "notes through Temporal are turned off (HPCINFRA_SIGNAL_DECISIONS=false); write them through the API",
                type="NotAllowed",
                non_retryable=True,
            )
        note = record.note
        with transaction(self.sessions) as session:
            request = session.get(ClusterRequest, uuid.UUID(note.request_id))
            if request is None:
                raise ApplicationError(f"request {note.request_id} does not exist", type="NotFound", non_retryable=True)
            writer = find_user(session, request.tenant_id, note.by)
            if writer is None or not may_see_request(writer, request):
                raise ApplicationError(
                    f"{note.by!r} may not write notes on this request", type="NotAllowed", non_retryable=True
                )
            add_note(session, request, writer, note.note, uuid.UUID(record.key))


def _outcome(request: ClusterRequest) -> RequestState:
    resize = None
    if request.resizes_cluster_id is not None and request.status == RequestStatus.APPROVED:
        to = Resize.of(request)
        # Keyed by the request: the step line of its resize is written once.
        key = str(uuid.uuid5(request.id, "resize"))
        resize = ResizeAsk(
            str(request.cluster_id),
            to,
            str(request.approved_by_id),
            "request",
            key,
            request.approved_at,
            str(request.id),
        )
    return RequestState(
        status=request.status, cluster_id=str(request.cluster_id) if request.cluster_id else None, resize=resize
    )
