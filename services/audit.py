"""The audit log: who did what, when and from where. Written in the same transaction as the act itself,
so an act is never without its entry; it names objects by id and never holds a secret or a token."""

import uuid
from typing import Any

from sqlalchemy.orm import Session

from core.models import AuditEvent, Cluster, User, utcnow

# Where an act came from, when not from the API (which gives "api <client address>").
CLI, TEMPORAL, PLATFORM = "cli", "temporal", "platform"


def record(
    session: Session,
    tenant_id: uuid.UUID,
    actor_id: uuid.UUID | None,
    action: str,
    target: str,
    source: str,
    **detail: Any,
) -> None:
    session.add(
        AuditEvent(
            tenant_id=tenant_id,
            actor_id=actor_id,
            action=action,
            target=target,
            source=source[:100],
            detail=detail,
            time=utcnow(),
        )
    )


def credentials_read(session: Session, user: User, cluster: Cluster, services: list[str], source: str) -> None:
    """Service credentials were shown to `user`: the audit log says so (which services, never the secrets)."""
    record(session, cluster.tenant_id, user.id, "credentials.read", f"cluster {cluster.id}", source, services=services)
