"""`Idempotency-Key` on POST (as in Stripe's API and the IETF draft "The Idempotency-Key HTTP Header
Field"): a client that is not sure its POST arrived sends it again with the same key and gets the
first answer, and nothing is done twice.

- The same key with the same request (method, path, query and body) answers what the first call
  answered, with `Idempotent-Replayed: true`.
- The same key with another request is refused with 422; while the first call is still being
  answered, a second one is refused with 409.
- Keys belong to the caller (so to its tenant) and are kept for 24 hours. A first call that ends in
  a server error before it committed anything keeps no key, so that it can be retried.
- A call that creates something notes it in its key, in the transaction that creates it
  (`record_created`). If the call then fails (its workflow's start, reading back the answer), the key
  is kept: the retry of a request's or cluster's creation finishes the call (`resumed`: the route starts
  its workflow if it has none) and answers with it, instead of creating it again; the retry of any
  other is told that it was made (409), never made again.
- A key claimed by a call that never answered (its process died) is taken as failed after
  ABANDONED_AFTER: let go, or taken up by the retry as above.
- An answer marked `Cache-Control: no-store` (one that shows a secret once, such as a new webhook's
  signing secret) is kept encrypted with the credential keys, never in clear.
"""

import asyncio
import hashlib
import logging
import uuid
from datetime import timedelta

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import DATABASE_ERRORS, database_busy, problem_response, undecryptable_detail
from core.credentials import SEALED_ANSWER, CredentialBox, UndecryptableSecret
from core.db import transaction
from core.models import IdempotencyKey, utcnow

HEADER = "idempotency-key"
KEPT_FOR = IdempotencyKey.KEPT_FOR
# Longer than any call takes: a key claimed this long ago and never answered belongs to a call whose
# process died (killed, the machine lost). Its key is let go, or, if the call had created something,
# its retry finishes the call.
ABANDONED_AFTER = timedelta(minutes=5)
# How many times a call's answer is offered to a busy database to be kept (each waits out the busy timeout).
SETTLE_TRIES = 6
# What a retry can finish, for a call that failed after creating it: the routes of these start the
# workflow a new one needs (the calls that create anything else are done with their commit).
RESUMABLE = ("request", "cluster")
# In a call's scope["state"]: the key it holds, (user id, key), for the route to note what it creates in;
# and, on the retry of a call that failed after creating something, what that was ("request <id>").
CLAIM, RESUMED = "idempotency_claim", "idempotency_resumed"
log = logging.getLogger(__name__)


class Idempotency:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = Headers(scope=scope).get(HEADER) if scope["type"] == "http" and scope["method"] == "POST" else None
        user = scope.get("state", {}).get("user")
        if key is None or user is None:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if not 1 <= len(key) <= 255 or not key.isprintable():
            await problem_response(422, "an Idempotency-Key is 1 to 255 printable characters", instance=path)(
                scope, receive, send
            )
            return
        try:
            body = await _read_body(receive)
        except HTTPException as e:  # the body is over the size limit
            await problem_response(e.status_code, e.detail, instance=path)(scope, receive, send)
            return
        fingerprint = hashlib.sha256(
            b"\n".join([scope["method"].encode(), path.encode(), scope.get("query_string", b""), body])
        ).hexdigest()
        sessions, box = scope["app"].state.sessions, scope["app"].state.credentials
        claimed, earlier = await run_in_threadpool(_claim, sessions, user.id, key, fingerprint)
        app = self.app
        if not claimed:
            resumed = await run_in_threadpool(_resume, sessions, earlier, fingerprint)
            if resumed is None:
                await _answer_again(earlier, fingerprint, path, box, scope, receive, send)
                return
            scope["state"][RESUMED] = resumed
            if resumed.partition(" ")[0] not in RESUMABLE:
                # Made, and not to be made again; nor can its answer be made again (a webhook's secret, shown once).
                app = problem_response(
                    409,
                    f"this call was made ({resumed}) but its answer was lost; look the {resumed.partition(' ')[0]} "
                    "up instead of sending the call again",
                    instance=path,
                )
        scope["state"][CLAIM] = (user.id, key)

        answer: dict = {"status": 500, "headers": [], "body": b"", "kept": False}

        async def replay_body() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        async def keep_answer(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"], answer["headers"] = message["status"], message.get("headers", [])
            elif message["type"] == "http.response.body":
                answer["body"] += message.get("body", b"")
                if not message.get("more_body"):
                    # Kept before the caller has the answer, so that a call made on receiving it finds it.
                    await _settle_patiently(sessions, box, user.id, key, answer)
                    answer["kept"] = True
            await send(message)

        try:
            await app(scope, replay_body, keep_answer)
        finally:
            if not answer["kept"]:
                await _settle_patiently(sessions, box, user.id, key, {**answer, "status": 500})


async def _read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def _claim(sessions, user_id, key: str, fingerprint: str) -> tuple[bool, IdempotencyKey | None]:
    """Take the key for this call, or return the call that has it."""
    now = utcnow()
    with transaction(sessions) as session:
        session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.user_id == user_id,
                IdempotencyKey.key == key,
                or_(
                    IdempotencyKey.created_at < now - KEPT_FOR,
                    # A call that died before it committed anything.
                    and_(
                        IdempotencyKey.status_code.is_(None),
                        IdempotencyKey.resource.is_(None),
                        IdempotencyKey.created_at < now - ABANDONED_AFTER,
                    ),
                ),
            )
        )
    try:
        with transaction(sessions) as session:
            session.add(IdempotencyKey(user_id=user_id, key=key, fingerprint=fingerprint))
        return True, None
    except IntegrityError:
        with sessions() as session:
            return False, session.scalar(
                select(IdempotencyKey).where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
            )


def _resume(sessions, earlier: IdempotencyKey | None, fingerprint: str) -> str | None:
    """What the earlier call with this key created, if it failed after that (it ended in a server error,
    or its process died: its claim was abandoned) and this call, the same one again, is the first to
    take it up; else None."""
    if earlier is None or earlier.fingerprint != fingerprint or earlier.resource is None:
        return None
    now = utcnow()
    failed = and_(
        IdempotencyKey.status_code.is_(None),
        or_(IdempotencyKey.interrupted_at.is_not(None), IdempotencyKey.created_at < now - ABANDONED_AFTER),
    )
    with transaction(sessions) as session:
        taken = session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.id == earlier.id, failed)
            .values(interrupted_at=None, created_at=now)
        ).rowcount
    return earlier.resource if taken else None


def record_created(session: Session, request: Request, resource: str) -> None:
    """Note `resource` ("request <id>", "cluster <id>") in the caller's Idempotency-Key, if it sent one, in
    the transaction that creates it."""
    _note(session, request, resource)


def forget_created(session: Session, request: Request) -> None:
    """In the transaction that takes a created resource back: the key no longer holds it."""
    _note(session, request, None)


def _note(session: Session, request: Request, resource: str | None) -> None:
    claim = getattr(request.state, CLAIM, None)
    if claim is not None:
        user_id, key = claim
        session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
            .values(resource=resource)
        )


def resumed(request: Request, kind: str) -> uuid.UUID | None:
    """The id of the `kind` ("request", "cluster") that an earlier call with this call's key created
    before it failed: the route finishes that call instead of creating another."""
    kept, _, resource_id = (getattr(request.state, RESUMED, None) or "").partition(" ")
    return uuid.UUID(resource_id) if kept == kind else None


def _settle(sessions, box: CredentialBox, user_id, key: str, answer: dict) -> None:
    """Keep the first call's answer. After a server error, let the key go so the call can be made again;
    unless the call had created something (`record_created`), which the retry answers with."""
    with transaction(sessions) as session:
        row = session.scalar(select(IdempotencyKey).where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key))
        if row is None:
            return
        if answer["status"] >= 500:
            if row.resource is None:
                session.delete(row)
            else:
                row.interrupted_at = utcnow()
            return
        headers = dict(answer["headers"])
        row.status_code = answer["status"]
        row.content_type = headers.get(b"content-type", b"application/json").decode()
        row.body = answer["body"].decode()
        if b"no-store" in headers.get(b"cache-control", b""):
            row.body = SEALED_ANSWER + box.seal({"body": row.body})


async def _settle_patiently(sessions, box: CredentialBox, user_id, key: str, answer: dict) -> None:
    """`_settle`, tried again while the database is busy: the call has been made, and a key left without
    its answer would refuse every retry of it (409) for a day. Gives up, logging, after SETTLE_TRIES."""
    for attempt in range(SETTLE_TRIES):
        try:
            await run_in_threadpool(_settle, sessions, box, user_id, key, answer)
            return
        except DATABASE_ERRORS as e:
            if not database_busy(e):
                raise
            log.warning("database busy keeping the answer of Idempotency-Key %r (try %d): %s", key, attempt + 1, e)
            await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
    log.error("the answer of Idempotency-Key %r was not kept: the database stayed busy", key)


async def _answer_again(
    earlier: IdempotencyKey | None, fingerprint: str, path: str, box: CredentialBox, scope, receive, send
) -> None:
    if earlier is None:  # let go a moment ago, after a server error: the caller may try again
        await problem_response(409, "this Idempotency-Key was just released; send the request again", instance=path)(
            scope, receive, send
        )
    elif earlier.fingerprint != fingerprint:
        await problem_response(
            422,
            "this Idempotency-Key was used for another request (method, path or body differ); use a new key",
            instance=path,
        )(scope, receive, send)
    elif earlier.status_code is None:
        await problem_response(
            409, "a request with this Idempotency-Key is still being answered; try again shortly", instance=path
        )(scope, receive, send)
    else:
        body, headers = earlier.body or "", []
        if body.startswith(SEALED_ANSWER):
            try:
                body, headers = box.open(body.removeprefix(SEALED_ANSWER))["body"], [(b"cache-control", b"no-store")]
            except UndecryptableSecret as e:
                log.error("the kept answer of an Idempotency-Key cannot be read: %s", e)
                await problem_response(503, undecryptable_detail(), instance=path)(scope, receive, send)
                return
        await send(
            {
                "type": "http.response.start",
                "status": earlier.status_code,
                "headers": [
                    (b"content-type", (earlier.content_type or "application/json").encode()),
                    (b"idempotent-replayed", b"true"),
                    *headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})
