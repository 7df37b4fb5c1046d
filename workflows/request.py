"""The request workflow: waits for an IT manager's decision, takes notes, expires a request
nobody decided, and on approval starts the cluster's own workflow.

Its search attributes (core/search_attributes.py) follow the decision: HpcinfraStatus becomes
approved, rejected or expired, and an approval adds HpcinfraClusterId. Runs that began before they
existed replay without them (the "search-attributes" patch)."""

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.requests import RequestActivities
    from core import search_attributes, starts
    from core.enums import RequestStatus
    from core.messages import (
        Decision,
        DecisionRecord,
        NoteInput,
        NoteRecord,
        RequestInput,
        RequestState,
        cluster_workflow_id,
    )
    from core.refusals import as_update_failure
    from workflows.activity_options import AWAITED_WRITE, DB_WRITE


@workflow.defn(name=starts.REQUEST_WORKFLOW)
class RequestWorkflow:
    @workflow.init
    def __init__(self, input: RequestInput) -> None:
        self._request_id = input.request_id
        self._tenant_id = input.tenant_id
        self._state = RequestState(status=RequestStatus.PENDING)
        # The update, the signal and expiry may race; the lock lets exactly one of them decide.
        self._deciding = asyncio.Lock()

    @workflow.run
    async def run(self, input: RequestInput) -> RequestState:
        expires_after = timedelta(seconds=input.expires_after_seconds)
        try:
            await workflow.wait_condition(lambda: self._state.status != RequestStatus.PENDING, timeout=expires_after)
        except TimeoutError:
            await self._expire(expires_after)

        if self._state.status == RequestStatus.APPROVED and self._state.resize is not None:
            cluster = workflow.get_external_workflow_handle(cluster_workflow_id(self._state.cluster_id))
            await cluster.signal("resize_approved", self._state.resize)
        elif self._state.status == RequestStatus.APPROVED and self._state.cluster_id:
            # Already started by the resume sweep (services/resume.py) when this run was long held up.
            await starts.start_child(starts.cluster(self._state.cluster_id, self._tenant_id), labelled=_labelled())
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._state

    @workflow.update(name="decide")
    async def decide(self, decision: Decision) -> RequestState:
        """The API's way to decide: refused before anything is written if the request is decided."""
        return await self._decide(decision)

    @decide.validator
    def _validate_decision(self, decision: Decision) -> None:
        if decision.status not in (RequestStatus.APPROVED, RequestStatus.REJECTED):
            raise ValueError(f"status must be 'approved' or 'rejected', not {decision.status!r}")
        if decision.status == RequestStatus.REJECTED and not (decision.rejection_reason or "").strip():
            raise ValueError("a rejection needs a rejectionReason")
        if self._state.status != RequestStatus.PENDING:
            raise ValueError(f"the request is already {self._state.status}")

    @workflow.signal(name="decide")
    async def decide_by_signal(self, decision: Decision) -> None:
        """The same decision for people using the Temporal CLI or web UI. A signal cannot be
        refused, so a decision that does not hold (already decided, not an approver, signal decisions
        turned off) is logged and dropped. Anyone who may signal in the namespace can name any decider:
        without the API's proof, the decision is recorded as the named decider's claim, from "temporal"
        whatever it says (RecordDecision; so is an update the API did not send)."""
        try:
            self._validate_decision(decision)
            await self._decide(decision)
        except (ValueError, ApplicationError) as e:
            workflow.logger.warning("decision signal ignored: %s", e)

    @workflow.signal(name="add_note")
    async def add_note(self, note: NoteInput) -> None:
        try:
            record = NoteRecord(note, str(workflow.uuid4()))
            await workflow.execute_activity_method(RequestActivities.add_note, record, **DB_WRITE)
        except ActivityError as e:
            workflow.logger.warning("note signal ignored: %s", e.cause or e)

    @workflow.query(name="state")
    def state(self) -> RequestState:
        return self._state

    async def _decide(self, decision: Decision) -> RequestState:
        async with self._deciding:
            if self._state.status != RequestStatus.PENDING:
                raise ApplicationError(f"the request is already {self._state.status}", type="AlreadyDecided")
            cluster_id = str(workflow.uuid4()) if decision.status == RequestStatus.APPROVED else None
            record = DecisionRecord(
                request_id=self._request_id,
                status=decision.status,
                decided_at=workflow.now(),
                decided_by=decision.decided_by,
                rejection_reason=decision.rejection_reason if decision.status == RequestStatus.REJECTED else None,
                cluster_id=cluster_id,
                source=decision.source,
                proof=decision.proof,
            )
            return await self._record(record, AWAITED_WRITE)

    async def _expire(self, after: timedelta) -> None:
        async with self._deciding:
            if self._state.status != RequestStatus.PENDING:
                return
            reason = f"expired: nobody decided within {_human(after)}"
            record = DecisionRecord(self._request_id, RequestStatus.REJECTED, workflow.now(), None, reason, None)
            # Nobody waits on an expiry, so it retries until the database takes it.
            await self._record(record, DB_WRITE, label=search_attributes.EXPIRED)

    async def _record(self, record: DecisionRecord, options: dict, label: str | None = None) -> RequestState:
        try:
            outcome = await workflow.execute_activity_method(RequestActivities.record_decision, record, **options)
        except ActivityError as e:
            # Nothing was recorded: the request is still pending.
            raise as_update_failure(e, "the decision") from e
        self._state = outcome
        if _labelled():  # `label`: the HpcinfraStatus when it says more than the status (an expiry)
            changes = [search_attributes.STATUS.value_set(label or outcome.status)]
            if outcome.cluster_id:
                changes.append(search_attributes.CLUSTER_ID.value_set(outcome.cluster_id))
            workflow.upsert_search_attributes(changes)
        return outcome


def _labelled() -> bool:
    """Whether this run keeps its search attributes current and gives them to its cluster: false only
    for a run that had decided before the change, replayed (its history has no upsert)."""
    return workflow.patched("search-attributes")


def _human(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"
