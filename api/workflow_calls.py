"""How the API asks workflows to do things (a new request's or cluster's start, updates), and how their
answers become HTTP answers."""

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session
from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api import idempotency
from api.deps import read_then_release
from api.errors import Problem
from core import starts
from core.models import Cluster, ClusterRequest, User
from core.refusals import REFUSALS as WORKFLOW_REFUSALS
from core.settings import Settings
from services import outbox

T = TypeVar("T")
Made = TypeVar("Made", ClusterRequest, Cluster)

# How long an API call waits for a workflow to take an update (a decision, a new tool, ...).
UPDATE_TIMEOUT = timedelta(seconds=20)
# How long an update turned away because its workflow has as many in flight as it takes waits to ask again.
BUSY_WAIT_SECONDS = 0.2
# Failures of an update that mean "no, and here is why", and their status: the workflows' refusals, and
# a validator's ValueError (refused before anything is written).
REFUSALS = {**WORKFLOW_REFUSALS, "ValueError": 409}


# Answers to a workflow start that do not say whether it happened (the call may have reached the server).
UNCERTAIN = (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED, RPCStatusCode.UNKNOWN)


async def start_or_take_back(
    start: Awaitable[object],
    session: Session,
    row: object,
    what: str,
    http_request: Request,
    *,
    resumed: bool,
    deliveries: list[uuid.UUID] = (),
) -> None:
    """Await `start`. A workflow already started (by the resume, or by an earlier try of this call) counts
    as started. If the workflow engine refuses the start, delete `row` again, and with it what the call's
    Idempotency-Key says it created: a request or cluster without its workflow would not move until the
    resume found it, so the caller is told nothing was made and to retry. A `resumed` call (the retry of
    one that failed after creating `row`), or a start that may have happened, keeps `row`: its retry, or
    the resume, starts it later. The webhook `deliveries` that tell of `row` go with it, or stay with it."""
    try:
        await start
    except WorkflowAlreadyStartedError:
        return
    except RPCError as e:
        if resumed or e.status in UNCERTAIN:
            # It may have started: `row` stays, for the retry (with the same key) or the resume sweep.
            raise Problem(
                503,
                f"the workflow engine did not confirm the start of the {what}; it was made, and starts within a "
                "minute: look it up, or send the call again with the same Idempotency-Key",
            ) from e

        def take_back() -> None:
            session.delete(row)
            idempotency.forget_created(session, http_request)
            outbox.withdraw(session, list(deliveries))  # the events that told of it, never sent
            session.commit()

        await run_in_threadpool(take_back)
        raise Problem(
            503, f"the workflow engine did not accept the {what}; nothing was created, try again shortly"
        ) from e


async def update(handle: WorkflowHandle, method: Any, *args: Any, refused: str, ended: str) -> Any:
    """Run the update `method(*args)` on the workflow of `handle`. A refusal (a validator or the workflow
    saying no) is a 409 that starts with `refused`; a workflow that has ended is a 409 saying `ended`;
    anything else is a 503. A workflow takes only so many updates at a time (Temporal answers the rest
    RESOURCE_EXHAUSTED): a burst of calls on one request or cluster waits its turn, up to UPDATE_TIMEOUT,
    so that each gets its answer (one decision wins, the others are refused) rather than a 503."""
    deadline = time.monotonic() + UPDATE_TIMEOUT.total_seconds()
    while True:
        try:
            return await handle.execute_update(method, args=list(args), rpc_timeout=UPDATE_TIMEOUT)
        except RPCError as e:
            if e.status == RPCStatusCode.RESOURCE_EXHAUSTED and time.monotonic() < deadline:
                await asyncio.sleep(BUSY_WAIT_SECONDS)
                continue
            raise _rpc_problem(e, ended) from e
        except WorkflowUpdateFailedError as e:
            cause = e.cause
            if isinstance(cause, ApplicationError) and cause.type in REFUSALS:
                raise Problem(REFUSALS[cause.type], f"{refused}: {cause.message}") from e
            raise Problem(503, "the change could not be recorded; nothing changed, try again") from e
        except WorkflowUpdateRPCTimeoutOrCancelledError as e:
            raise Problem(
                503, "no worker took the change in time; it may still be applied, so look again before trying again"
            ) from e


def _rpc_problem(error: RPCError, ended: str) -> Problem:
    if error.status == RPCStatusCode.NOT_FOUND:
        return Problem(409, ended)
    if error.status == RPCStatusCode.RESOURCE_EXHAUSTED:
        return Problem(503, "too many changes are being made to this at once; nothing changed, try again")
    return Problem(503, "the workflow engine is unreachable; nothing changed, try again")


async def create_and_start(
    what: str,
    session: Session,
    user: User,
    http_request: Request,
    temporal: Client,
    settings: Settings,
    *,
    create: Callable[[], tuple[Made, list[uuid.UUID]]],
    find: Callable[[Session, User, uuid.UUID], Made],
    workflow: Callable[[Made], starts.Start],
) -> Made:
    """The `what` ("request", "cluster") that `create` makes in the session's transaction (with the webhook
    deliveries that tell of it), committed with the call's Idempotency-Key, then its workflow started; taken
    back if the workflow engine refuses the start (start_or_take_back). The retry of a call that failed
    after its commit `find`s what that call made instead, and finishes it."""
    made = idempotency.resumed(http_request, what)
    if made is None:
        row, deliveries = await run_in_threadpool(_commit_created, what, session, http_request, create)
    else:  # its deliveries went with the first call's commit: the resume starts them
        row, deliveries = await read_then_release(session, find, user, made), []
    start = starts.start(temporal, settings.task_queue, workflow(row), repair=False)
    await start_or_take_back(start, session, row, what, http_request, resumed=made is not None, deliveries=deliveries)
    await outbox.start_deliveries(temporal, settings, deliveries)
    return row


def _commit_created(
    what: str, session: Session, http_request: Request, create: Callable[[], tuple[Made, list[uuid.UUID]]]
) -> tuple[Made, list[uuid.UUID]]:
    row, deliveries = create()  # a Refused is answered by its handler (api/errors.py)
    idempotency.record_created(session, http_request, f"{what} {row.id}")
    session.commit()
    return row, deliveries
