"""OIDC sign-in: JWT bearer tokens from an identity provider, next to the platform's own API tokens.

A token is accepted when its signature verifies against a key the provider publishes (its JWKS, fetched
and cached here), with an allowed public-key algorithm, and when it was issued by the configured issuer
for the configured audience and is within its validity (`exp`, and `nbf`/`iat` when present, give or
take `LEEWAY_SECONDS`). Its claims then name the caller: an account at the provider (`iss` and `sub`), a
role, a tenant (by name) and an e-mail the provider has verified (`email_verified: true`; a token that
does not say is refused unless `Settings.oidc_accept_unstated_email_verification` is set).

The caller is the user linked to that account, made in the tenant on first sign-in. An e-mail is never
enough to be a user: a token whose e-mail belongs to a user of the tenant that is not linked to its
account (one made with API tokens, or one linked to another account) is refused, and so is a token whose
tenant is not its user's. The identity provider is the source of truth for the role and the e-mail: a
changed role claim changes the stored role, and a changed e-mail the stored one unless another user of
the tenant has it (then the stored e-mail stays).

A refused token raises `OidcError`, whose message says why (never the token itself, which is never
logged either).
"""

import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core.db import transaction
from core.models import Tenant, User
from services import accounts

log = logging.getLogger(__name__)

# Public-key signatures only: never `none`, never HS* (a shared secret the provider's public keys are not).
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
# Clock skew tolerated between the identity provider and this server, for `exp`, `nbf` and `iat`.
LEEWAY_SECONDS = 30
# Three base64url parts (the third, the signature, is empty for `alg: none`): what a JWT looks like.
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
_MAX_NAME = 200  # users.name
_MAX_EMAIL = 320  # users.email


class OidcError(Exception):
    """A token refused (status 401), or one that cannot be checked now (503): the message says why."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.status = status


def looks_like_jwt(token: str) -> bool:
    return bool(_JWT_SHAPE.match(token))


def _quoted(value: Any, limit: int = 80) -> str:
    """A value from a token, quoted and cut short for a message."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return repr(text if len(text) <= limit else text[:limit] + "...")


class JwksCache:
    """The identity provider's signing keys by `kid`, fetched on first use and again when a token names a
    key not in the cache (the provider rotated its keys) or the cache is older than `max_age`. A burst of
    tokens naming unknown keys causes at most one fetch per `min_refetch_interval`. Thread-safe: it is
    used from the API's worker threads."""

    timeout = 5.0  # seconds, for the whole fetch
    min_refetch_interval = 10.0  # seconds
    max_age = 3600.0  # seconds

    def __init__(self, url: str, *, client: httpx.Client | None = None) -> None:
        self.url = url
        self._client = client or httpx.Client(timeout=self.timeout, follow_redirects=False)
        self._lock = threading.Lock()
        self._keys: dict[str, dict[str, Any]] | None = None
        self._fetched_at = 0.0  # of the last successful fetch
        self._tried_at = float("-inf")  # of the last attempt
        self._last_error = ""
        self.fetches = 0  # attempts, for tests and diagnostics

    def key(self, kid: str | None) -> dict[str, Any] | None:
        """The JWK named `kid` (or the only key, when the token names none), or None when the provider
        does not publish it. Raises OidcError(503) when the keys cannot be fetched and none are cached."""
        keys = self._keys
        if keys is None or time.monotonic() - self._fetched_at > self.max_age:
            keys = self._refresh(keys)
        found = self._pick(keys, kid)
        if found is None:
            found = self._pick(self._refresh(keys), kid)
        return found

    @staticmethod
    def _pick(keys: dict[str, dict[str, Any]], kid: str | None) -> dict[str, Any] | None:
        if kid is None:
            return next(iter(keys.values())) if len(keys) == 1 else None
        return keys.get(kid)

    def _refresh(self, seen: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
        """The keys fetched anew, unless another thread did so since the caller looked (`seen`) or the
        last attempt is too recent; a failed fetch keeps the cached keys (if there are any)."""
        with self._lock:
            current = self._keys
            if current is not None and current is not seen:
                return current
            if time.monotonic() - self._tried_at < self.min_refetch_interval:
                if current is None:
                    raise OidcError(self._last_error, 503)
                return current
            self._tried_at = time.monotonic()
            self.fetches += 1
            try:
                keys = self._fetch()
            except OidcError as e:
                self._last_error = str(e)
                if current is None:
                    raise
                log.warning("keeping the cached OIDC signing keys: %s", e)
                return current
            self._keys, self._fetched_at = keys, time.monotonic()
            log.info("fetched %d OIDC signing key(s) from %s", len(keys), self.url)
            return keys

    def _fetch(self) -> dict[str, dict[str, Any]]:
        unavailable = f"the identity provider's signing keys could not be fetched from {self.url}"
        try:
            response = self._client.get(self.url, headers={"Accept": "application/json"})
        except httpx.HTTPError as e:
            raise OidcError(f"{unavailable} ({type(e).__name__}); try again shortly", 503) from None
        if response.status_code != 200:
            raise OidcError(f"{unavailable} (HTTP {response.status_code}); try again shortly", 503)
        try:
            document = response.json()
            listed = document["keys"]
            if not isinstance(listed, list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise OidcError(
                f"{unavailable}: it is not a JWKS document (a JSON object with a list of keys)", 503
            ) from None
        keys: dict[str, dict[str, Any]] = {}
        for jwk in listed:
            # Signing keys only: no symmetric ones, none meant for encryption, none without a usable type.
            if (
                not isinstance(jwk, dict)
                or jwk.get("kty") not in ("RSA", "EC", "OKP")
                or jwk.get("use", "sig") != "sig"
            ):
                continue
            keys[str(jwk.get("kid", ""))] = jwk
        return keys


@dataclass(frozen=True)
class Identity:
    """Who a verified token says the caller is: an account at the identity provider (`issuer`, `subject`)
    and what the provider says of it."""

    issuer: str
    subject: str
    tenant: str
    email: str
    role: str
    name: str


class OidcVerifier:
    """Checks tokens against one issuer's configuration (see `Settings.oidc_*`)."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_url: str,
        algorithms: list[str],
        role_claim: str = "hpcinfra_role",
        tenant_claim: str = "hpcinfra_tenant",
        email_claim: str = "email",
        accept_unstated_email_verification: bool = False,
        jwks: JwksCache | None = None,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.algorithms = [a for a in algorithms if a in ALGORITHMS]
        self.role_claim = role_claim
        self.tenant_claim = tenant_claim
        self.email_claim = email_claim
        self.accept_unstated_email_verification = accept_unstated_email_verification
        self.jwks = jwks or JwksCache(jwks_url)

    @classmethod
    def from_settings(cls, settings) -> "OidcVerifier":
        return cls(
            issuer=settings.oidc_issuer,
            audience=settings.oidc_audience,
            jwks_url=settings.oidc_jwks_url,
            algorithms=list(settings.oidc_algorithms),
            role_claim=settings.oidc_role_claim,
            tenant_claim=settings.oidc_tenant_claim,
            email_claim=settings.oidc_email_claim,
            accept_unstated_email_verification=settings.oidc_accept_unstated_email_verification,
        )

    def claims(self, token: str) -> dict[str, Any]:
        """The claims of a token whose signature, issuer, audience and validity are all right."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise OidcError("the bearer token looks like a JWT but its header cannot be read") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise OidcError(
                f"the token is signed with algorithm {_quoted(alg)}; this API accepts only {', '.join(self.algorithms)}"
            )
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise OidcError("the token's key id (kid) is not a string")
        jwk = self.jwks.key(kid)
        if jwk is None:
            if kid is None:
                raise OidcError("the token names no signing key (kid) and the identity provider publishes several")
            raise OidcError(
                f"the token is signed with key {_quoted(kid)}, which the identity provider does not publish"
            )
        if jwk.get("alg") not in (None, alg):
            raise OidcError(f"the token's algorithm {alg} does not match its key {_quoted(kid)} ({jwk['alg']})")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg)
        except jwt.PyJWTError:
            raise OidcError(f"the token's algorithm {alg} does not fit its key {_quoted(kid)}") from None
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                # `sub` is checked in `identity`, with a reason to show (PyJWT 2.10+ checks only its type).
                options={"require": ["exp", "iss", "aud"], "verify_sub": False},
            )
        except jwt.InvalidSignatureError:
            which = f"key {_quoted(kid)}" if kid is not None else "key"
            raise OidcError(f"the token's signature does not verify with the identity provider's {which}") from None
        except jwt.ExpiredSignatureError:
            raise OidcError("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise OidcError("the token is not valid yet (its nbf or iat is in the future)") from None
        except jwt.MissingRequiredClaimError as e:
            raise OidcError(f"the token has no {e.claim!r} claim") from None
        except jwt.InvalidIssuerError:
            issued_by = _unverified(token).get("iss")
            raise OidcError(f"the token was issued by {_quoted(issued_by)}, not by {self.issuer!r}") from None
        except jwt.InvalidAudienceError:
            meant_for = _unverified(token).get("aud")
            raise OidcError(f"the token is meant for audience {_quoted(meant_for)}, not {self.audience!r}") from None
        except jwt.PyJWTError as e:
            raise OidcError(f"the token is not valid ({type(e).__name__})") from None

    def identity(self, claims: dict[str, Any]) -> Identity:
        """Who verified `claims` (see `claims`) say the caller is; raises OidcError when they do not say enough."""
        subject = claims.get("sub")
        if subject is not None and not isinstance(subject, str):
            raise OidcError("the token's 'sub' claim is not a string")
        if not subject or not subject.strip():
            raise OidcError("the token has no 'sub' claim (the caller's account at the identity provider)")
        if len(subject) > accounts.MAX_OIDC_SUBJECT:
            raise OidcError(f"the token's 'sub' claim is longer than {accounts.MAX_OIDC_SUBJECT} characters")
        role = claims.get(self.role_claim)
        if isinstance(role, list):  # some providers send roles as a list: exactly one of ours must be in it
            ours = [r for r in role if r in accounts.ROLES]
            role = ours[0] if len(ours) == 1 else role
        if role is None:
            raise OidcError(f"the token has no {self.role_claim!r} claim (the caller's role)")
        if role not in accounts.ROLES:
            raise OidcError(f"the token's role {_quoted(role)} is not one of {', '.join(accounts.ROLES)}")
        tenant = claims.get(self.tenant_claim)
        if not isinstance(tenant, str) or not tenant.strip():
            raise OidcError(f"the token has no {self.tenant_claim!r} claim (the name of the caller's tenant)")
        email = claims.get(self.email_claim)
        if not isinstance(email, str) or not email.strip():
            raise OidcError(f"the token has no {self.email_claim!r} claim (the caller's e-mail)")
        email = email.strip().lower()
        if len(email) > _MAX_EMAIL or not re.fullmatch(r"[^@\s]+@[^@\s]+", email):
            raise OidcError(f"the token's {self.email_claim!r} claim {_quoted(email)} is not an e-mail address")
        # The e-mail names the user a first sign-in makes, and no two users of a tenant share one: an address
        # the provider has not verified could squat a colleague's.
        verified = claims.get("email_verified")
        if verified is None:
            if not self.accept_unstated_email_verification:
                raise OidcError(
                    f"the token does not say whether the identity provider verified the e-mail {_quoted(email)} "
                    "(it has no 'email_verified' claim)"
                )
        elif verified is not True:  # a string "false" is not a verification either
            raise OidcError(
                f"the identity provider has not verified the e-mail {_quoted(email)} "
                f"(its 'email_verified' claim is {_quoted(verified)}, not true)"
            )
        name = claims.get("name")
        name = name.strip()[:_MAX_NAME] if isinstance(name, str) and name.strip() else email
        return Identity(
            issuer=claims["iss"],  # verified by `claims`: the configured issuer
            subject=subject,
            tenant=tenant.strip(),
            email=email,
            role=role,
            name=name,
        )

    def user(self, sessions: sessionmaker[Session], token: str) -> User:
        """The user a token signs in (made on first sign-in); raises OidcError when the token is refused."""
        return user_for_identity(sessions, self.identity(self.claims(token)))


def _unverified(token: str) -> dict[str, Any]:
    """The claims of a token already known to be well formed, for an error message only."""
    try:
        return jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}


class _Raced(OidcError):
    """Another sign-in made or changed the user meanwhile: it is looked up again in a new transaction."""

    def __init__(self) -> None:
        super().__init__("another sign-in changed this user at the same moment; try again", 503)


def user_for_identity(sessions: sessionmaker[Session], identity: Identity, *, attempts: int = 3) -> User:
    """The user linked to the identity's account, made in its tenant on first sign-in, with the identity's
    role and (when no other user of the tenant has it) e-mail. Raises OidcError when the token may not sign
    in. Two first sign-ins at once may race to make the user; the loser finds it on its next attempt."""
    for attempt in range(attempts):
        try:
            with transaction(sessions) as session:
                return _find_or_make(session, identity)
        except (IntegrityError, OperationalError, _Raced):
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _find_or_make(session: Session, identity: Identity) -> User:
    tenant = session.scalar(select(Tenant).where(Tenant.name == identity.tenant))
    if tenant is None:
        raise OidcError(f"the token's tenant {_quoted(identity.tenant)} does not exist on this platform")
    user = session.scalar(
        select(User).where(User.oidc_issuer == identity.issuer, User.oidc_subject == identity.subject)
    )
    if user is None:
        return _make(session, tenant, identity)
    if user.tenant_id != tenant.id:
        # A user's requests, clusters and ledger are its tenant's: a changed tenant claim does not carry the
        # user (or make a second one for the same account) into another tenant.
        raise OidcError(
            f"the token's account (subject {identity.subject!r}) is a user of another tenant, "
            f"not of tenant {_quoted(identity.tenant)}; a user stays in the tenant it was made in"
        )
    return _updated(session, user, identity)


def _make(session: Session, tenant: Tenant, identity: Identity) -> User:
    holder = session.scalar(select(User).where(User.tenant_id == tenant.id, User.email == identity.email))
    if holder is not None:
        if (holder.oidc_issuer, holder.oidc_subject) == (identity.issuer, identity.subject):
            # Made by this account's other sign-in since the lookup by account (each read sees the latest commit).
            return _updated(session, holder, identity)
        raise _taken(tenant, holder, identity)
    try:
        user = accounts.create_user(session, tenant, email=identity.email, name=identity.name, role=identity.role)
    except accounts.AccountError as e:
        taken = select(User.id).where(User.tenant_id == tenant.id, User.email == identity.email)
        if session.scalar(taken) is not None:
            raise _Raced() from None  # made meanwhile: by this account's other sign-in, or someone else's
        raise OidcError(f"the token's user cannot be made: {e}") from None
    user.oidc_issuer, user.oidc_subject = identity.issuer, identity.subject
    session.flush()
    log.info("OIDC sign-in made user %s (%s, %s) in tenant %s", user.id, identity.email, identity.role, tenant.name)
    return user


def _taken(tenant: Tenant, holder: User, identity: Identity) -> OidcError:
    """The refusal of a first sign-in whose e-mail another user of the tenant has: an e-mail is not an account."""
    link = f"to this identity provider account (subject {identity.subject!r})"
    if holder.oidc_issuer is None:
        return OidcError(
            f"an account with the e-mail {identity.email!r} exists in tenant {tenant.name!r} that is not linked "
            f"to the identity provider; sign in with its API token, or ask an admin to link it {link}"
        )
    return OidcError(
        f"the user with the e-mail {identity.email!r} in tenant {tenant.name!r} is linked to another account "
        f"of the identity provider; if it is the same person, an admin can link it {link}"
    )


def _updated(session: Session, user: User, identity: Identity) -> User:
    if user.role != identity.role:
        log.info("OIDC sign-in changed the role of user %s from %s to %s", user.id, user.role, identity.role)
        user.role = identity.role
    if user.email != identity.email:
        holder = session.scalar(select(User.id).where(User.tenant_id == user.tenant_id, User.email == identity.email))
        if holder is None:
            log.info("OIDC sign-in changed the e-mail of user %s from %s to %s", user.id, user.email, identity.email)
            user.email = identity.email
        else:
            # Signing in is the account's right; the address is not taken from the user who has it.
            log.warning(
                "OIDC sign-in kept the e-mail %s of user %s: its new e-mail %s is user %s's",
                user.email,
                user.id,
                identity.email,
                holder,
            )
    return user
