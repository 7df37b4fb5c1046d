"""Tenants, users, API tokens, the identity provider accounts users are linked to, and cloud providers: what
an administrator sets up."""

import hashlib
import re
import secrets
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.enums import Role
from core.models import ApiToken, CloudProvider, Tenant, User
from core.providers import KINDS, check_account
from core.refusals import Refused
from infra.providers import check_config
from services import audit, credits
from services.credits import BUDGET_POLICIES

ROLES = tuple(Role)  # cad_manager, it_manager, admin
TOKEN_PREFIX = "hpci_"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
# What users.oidc_issuer and users.oidc_subject hold (255 is also the most OpenID Connect allows a `sub`).
# What the columns keep (a subject of at most 255 characters is also what OpenID Connect allows).
MAX_OIDC_ISSUER, MAX_OIDC_SUBJECT = User.oidc_issuer.type.length, User.oidc_subject.type.length


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


def link_oidc_account(session: Session, user: User, issuer: str, subject: str, source: str = audit.CLI) -> bool:
    """Link `user` to the account `subject` at the identity provider `issuer` (the `iss` and `sub` of its
    tokens), in place of any account it was linked to: from now on that account's tokens sign in as `user`
    (api/oidc.py). For users made with API tokens, and those made by OIDC sign-in before accounts were
    stored. False when it was linked to this account already."""
    # Kept exactly as given: a token's `iss` and `sub` are compared as they are.
    if not subject.strip():
        raise AccountError("a link to an identity provider account needs a subject (the `sub` of its tokens)")
    if len(subject) > MAX_OIDC_SUBJECT:
        raise AccountError(f"a subject is at most {MAX_OIDC_SUBJECT} characters; this one has {len(subject)}")
    if not issuer.strip():
        raise AccountError("a link to an identity provider account needs its issuer (the `iss` of its tokens)")
    if len(issuer) > MAX_OIDC_ISSUER:
        raise AccountError(f"an issuer is at most {MAX_OIDC_ISSUER} characters; this one has {len(issuer)}")
    holder = session.scalar(select(User).where(User.oidc_issuer == issuer, User.oidc_subject == subject))
    if holder is not None and holder.id == user.id:
        return False
    if holder is not None:
        # One account signs in as one user: taking it from its user silently would lock that user out.
        holder_tenant = session.get_one(Tenant, holder.tenant_id)
        raise AccountError(
            f"the account {subject!r} of {issuer} is linked to user {holder.email} of tenant {holder_tenant.name!r} "
            f"already; unlink it first (`hpcinfra users unlink-oidc --tenant {holder_tenant.name} --email "
            f"{holder.email}`)"
        )
    detail = {"issuer": issuer, "subject": subject}
    if user.oidc_issuer is not None:  # an account once linked by OIDC sign-in has no entry of its own
        detail |= {"replaced_issuer": user.oidc_issuer, "replaced_subject": user.oidc_subject}
    user.oidc_issuer, user.oidc_subject = issuer, subject
    session.flush()
    audit.record(session, user.tenant_id, None, "user.link-oidc", f"user {user.id}", source, **detail)
    return True


def unlink_oidc_account(session: Session, user: User, source: str = audit.CLI) -> tuple[str, str] | None:
    """Unlink `user` from its identity provider account, whose tokens then no longer sign in as it (its API
    tokens still do). The account it was linked to, as (issuer, subject); None when it was linked to none."""
    if user.oidc_issuer is None and user.oidc_subject is None:
        return None
    issuer, subject = user.oidc_issuer or "", user.oidc_subject or ""
    user.oidc_issuer = user.oidc_subject = None
    session.flush()
    audit.record(
        session, user.tenant_id, None, "user.unlink-oidc", f"user {user.id}", source, issuer=issuer, subject=subject
    )
    return issuer, subject


def create_provider(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    name: str,
    kind: str,
    region: str,
    config: dict[str, Any] | None = None,
    allowed_accounts: list[str] | tuple[str, ...] = (),
) -> CloudProvider:
    """A new cloud provider for the tenant. `allowed_accounts` is the operator's HPCINFRA_ALLOWED_CLOUD_ACCOUNTS:
    an account it does not allow the tenant is Refused (Invalid); anything else wrong is an AccountError."""
    if kind not in KINDS:
        raise AccountError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    name, region = name.strip(), region.strip()
    if not name or not region:
        raise AccountError("a cloud provider needs a name and a region")
    try:
        check_config(kind, config or {})
    except ValueError as e:
        raise AccountError(str(e)) from None
    try:
        if allowed_accounts:
            check_account(kind, config or {}, session.get_one(Tenant, tenant_id).name, allowed_accounts)
    except ValueError as e:
        raise Refused("Invalid", str(e)) from None
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
