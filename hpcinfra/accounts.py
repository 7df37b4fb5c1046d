"""Tenants, users, API tokens and cloud providers: what an administrator sets up."""

import hashlib
import re
import secrets
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hpcinfra import audit, credits
from hpcinfra.credits import BUDGET_POLICIES
from hpcinfra.models import ApiToken, CloudProvider, Tenant, User
from infra.providers import KINDS, check_config

ROLES = ("cad_manager", "it_manager", "admin")
TOKEN_PREFIX = "hpci_"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


class AccountError(ValueError):
    """Input an administrator can correct; the message says how."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_tenant(session: Session, name: str, *, opening_credits: Decimal, budget_policy: str = "flag") -> Tenant:
    """A new tenant, with its opening grant of credits (none when `opening_credits` is 0)."""
    name = name.strip()
    if not name:
        raise AccountError("a tenant needs a name")
    if session.scalar(select(Tenant).where(Tenant.name == name)) is not None:
        raise AccountError(f"tenant {name!r} exists already")
    if budget_policy not in BUDGET_POLICIES:
        raise AccountError(f"budget policy must be one of {', '.join(BUDGET_POLICIES)}, not {budget_policy!r}")
    tenant = Tenant(name=name, credit_balance=0, budget_policy=budget_policy)
    session.add(tenant)
    session.flush()
    if opening_credits > 0:
        credits.grant(session, tenant, opening_credits, "opening grant")
    return tenant


def tenant_by_name(session: Session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        raise AccountError(f"no tenant named {name!r}; create it with `hpcinfra tenants create {name}`")
    return tenant


def create_user(session: Session, tenant: Tenant, *, email: str, name: str, role: str) -> User:
    email = email.strip().lower()
    if not _EMAIL.match(email):
        raise AccountError(f"{email!r} is not an e-mail address")
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if session.scalar(select(User).where(User.tenant_id == tenant.id, User.email == email)) is not None:
        raise AccountError(f"tenant {tenant.name!r} has a user {email!r} already")
    user = User(tenant_id=tenant.id, email=email, name=name.strip() or email, role=role)
    session.add(user)
    session.flush()
    return user


def user_by_email(session: Session, tenant: Tenant, email: str) -> User:
    user = session.scalar(select(User).where(User.tenant_id == tenant.id, User.email == email.strip().lower()))
    if user is None:
        raise AccountError(f"tenant {tenant.name!r} has no user {email!r}")
    return user


def issue_token(session: Session, user: User, source: str = audit.CLI) -> str:
    """A new API token for `user`. Only its hash is stored: this is the one time it can be seen."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, token_hash=hash_token(token))
    session.add(row)
    session.flush()
    audit.record(session, user.tenant_id, None, "token.create", f"user {user.id}", source, token_id=str(row.id))
    return token


def user_for_token(session: Session, token: str) -> User | None:
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    return row.user if row else None


def create_provider(
    session: Session, tenant_id: uuid.UUID, *, name: str, kind: str, region: str, config: dict[str, Any] | None = None
) -> CloudProvider:
    if kind not in KINDS:
        raise AccountError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    name, region = name.strip(), region.strip()
    if not name or not region:
        raise AccountError("a cloud provider needs a name and a region")
    try:
        check_config(kind, config or {})
    except ValueError as e:
        raise AccountError(str(e)) from None
    exists = session.scalar(
        select(CloudProvider).where(CloudProvider.tenant_id == tenant_id, CloudProvider.name == name)
    )
    if exists is not None:
        raise AccountError(f"this tenant has a cloud provider named {name!r} already")
    provider = CloudProvider(
        tenant_id=tenant_id, name=name.strip(), kind=kind, region=region.strip(), config=config or {}
    )
    session.add(provider)
    session.flush()
    return provider
