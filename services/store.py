"""Reads and writes shared by the API, the activities and the admin commands."""

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import ClusterRequest, RequestNote, User

APPROVER_ROLES = ("it_manager", "admin")


def parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None


def find_user(session: Session, tenant_id: uuid.UUID, who: str) -> User | None:
    """A user named by id or e-mail address, as people signalling from the Temporal UI do.
    An admin acts in every tenant, so an admin's id is found whatever the tenant."""
    user_id = parse_uuid(who)
    if user_id is not None:
        user = session.get(User, user_id)
        if user is not None and (user.tenant_id == tenant_id or user.role == "admin"):
            return user
        return None
    return session.scalar(select(User).where(User.tenant_id == tenant_id, User.email == who.strip().lower()))


def may_decide(user: User, request: ClusterRequest) -> bool:
    return user.role == "admin" or (user.role == "it_manager" and user.tenant_id == request.tenant_id)


def may_see_request(user: User, request: ClusterRequest) -> bool:
    return may_decide(user, request) or request.requested_by_id == user.id


def add_note(
    session: Session, request: ClusterRequest, by: User, text: str, key: uuid.UUID | None = None
) -> RequestNote:
    if key is not None and (written := session.scalar(select(RequestNote).where(RequestNote.key == key))) is not None:
        return written
    note = RequestNote(request_id=request.id, by_id=by.id, note=text, key=key)
    session.add(note)
    session.flush()
    return note
