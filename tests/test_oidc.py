"""OIDC sign-in: JWT bearer tokens from an identity provider, next to the API tokens.

The identity provider is played here: RSA and EC key pairs made with `cryptography`, their public
halves served as a JWKS document by a small HTTP server on a free port, and tokens signed with
PyJWT. The app is the real one (`create_app`) on the test database (SQLite and PostgreSQL), called
in-process; GET /me and GET /requests need no Temporal.
"""

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from jwt.algorithms import get_default_algorithms
from pydantic import ValidationError
from sqlalchemy import func, select

from api.main import create_app
from api.oidc import ALGORITHMS, Identity, JwksCache, user_for_identity
from core.models import User
from core.settings import Settings
from harness.servers import free_port
from harness.world import TenantWorld, make_tenant

ISSUER = "https://idp.test.example/realms/chips"
AUDIENCE = "hpcinfra-api"

# --- the identity provider ----------------------------------------------------------------------


@dataclass
class Signer:
    """A key pair of the identity provider: signs tokens, and shows its public half as a JWK."""

    kid: str
    alg: str
    private_key: Any = field(repr=False)

    @classmethod
    def rsa(cls, kid: str) -> "Signer":
        return cls(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def ec(cls, kid: str) -> "Signer":
        return cls(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))

    def jwk(self) -> dict[str, Any]:
        algorithm = jwt.algorithms.RSAAlgorithm if self.alg.startswith("RS") else jwt.algorithms.ECAlgorithm
        public = algorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "use": "sig", "alg": self.alg}

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, claims: dict[str, Any], *, kid: str | None = None) -> str:
        return jwt.encode(claims, self.private_key, algorithm=self.alg, headers={"kid": kid or self.kid})


class JwksServer:
    """Serves `document` at /jwks, counting the fetches."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.fetches = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                body = json.dumps(owner.document).encode()
                self.send_response(200 if self.path == "/jwks" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, *signers: Signer) -> None:
        self.document = {"keys": [s.jwk() for s in signers]}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Keys:
    rsa: Signer
    ec: Signer
    stranger: Signer  # a key the identity provider does not publish


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(Signer.rsa("rsa-1"), Signer.ec("ec-1"), Signer.rsa("rsa-stranger"))


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.stop()


@pytest.fixture
def jwks(jwks_server: JwksServer, keys: Keys) -> JwksServer:
    """The provider's JWKS as it is at the start of every test: the RSA and the EC key."""
    jwks_server.publish(keys.rsa, keys.ec)
    jwks_server.fetches = 0
    return jwks_server


# --- the app ------------------------------------------------------------------------------------


def oidc_settings(db, tmp_path, jwks_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db.url,
        "data_dir": tmp_path,
        "oidc_issuer": ISSUER,
        "oidc_audience": AUDIENCE,
        "oidc_jwks_url": jwks_url,
    }
    return Settings(**{**values, **overrides})


@pytest.fixture
def client(db, jwks: JwksServer, tmp_path) -> Iterator[TestClient]:
    with TestClient(create_app(oidc_settings(db, tmp_path, jwks.url)), base_url="http://testserver/api/v1") as c:
        yield c


@pytest.fixture
def world(db) -> TenantWorld:
    return make_tenant(db.sessions)


def claims(world: TenantWorld, **changes: Any) -> dict[str, Any]:
    """What the provider says of a new CAD manager of `world`; a change to None leaves the claim out."""
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": uuid.uuid4().hex,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "email": f"oidc-{uuid.uuid4().hex[:8]}@{world.name}.example",
        "email_verified": True,
        "name": "Ada Lovelace",
        "hpcinfra_role": "cad_manager",
        "hpcinfra_tenant": world.name,
    }
    return {k: v for k, v in {**base, **changes}.items() if v is not None}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def users_with(db, world: TenantWorld, email: str) -> list[User]:
    with db.sessions() as session:
        return list(session.scalars(select(User).where(User.tenant_id == uuid.UUID(world.id), User.email == email)))


def assert_refused(response, token: str, reason: str, status: int = 401) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    detail = response.json()["detail"]
    assert reason in detail, detail
    assert all(part not in response.text for part in token.split(".") if len(part) > 8), "the token is echoed"
    return detail


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: dict[str, Any], sign: Callable[[bytes], bytes] | None = None) -> str:
    """A token put together by hand (for what PyJWT refuses to make): `sign` makes the signature."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode())) if sign else ''}"


# --- signing in ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_a_valid_token_signs_in_and_makes_the_user_once(client, db, world, keys, jwks, kind):
    said = claims(world)
    token = getattr(keys, kind).sign(said)

    first = client.get("/me", headers=bearer(token))
    assert first.status_code == 200, first.text
    me = first.json()
    assert (me["email"], me["role"], me["tenantId"], me["name"]) == (
        said["email"],
        "cad_manager",
        world.id,
        "Ada Lovelace",
    )
    second = client.get("/me", headers=bearer(token))
    assert second.status_code == 200 and second.json()["id"] == me["id"]
    assert [str(u.id) for u in users_with(db, world, said["email"])] == [me["id"]]
    # A signed-in user is a user like any other: its tenant's requests, as a CAD manager sees them (its own).
    listed = client.get("/requests", headers=bearer(token))
    assert listed.status_code == 200, listed.text
    assert jwks.fetches == 1  # the keys are cached


def test_the_name_defaults_to_the_email_and_the_email_is_case_insensitive(client, db, world, keys):
    said = claims(world, name=None)
    first = client.get("/me", headers=bearer(keys.rsa.sign(said)))
    assert first.status_code == 200, first.text
    assert first.json()["name"] == said["email"]
    shouted = client.get("/me", headers=bearer(keys.rsa.sign({**said, "email": said["email"].upper()})))
    assert shouted.status_code == 200 and shouted.json()["id"] == first.json()["id"]


def test_the_role_claim_is_the_source_of_truth(client, db, world, keys):
    said = claims(world)
    assert client.get("/me", headers=bearer(keys.rsa.sign(said))).json()["role"] == "cad_manager"

    promoted = client.get("/me", headers=bearer(keys.rsa.sign({**said, "hpcinfra_role": "it_manager"})))
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["role"] == "it_manager"
    assert [u.role for u in users_with(db, world, said["email"])] == ["it_manager"]
    # ... and what the role allows follows: an IT manager sees the tenant's requests, which GET /requests shows.
    assert client.get("/requests", headers=bearer(keys.rsa.sign({**said, "hpcinfra_role": "it_manager"}))).is_success


def test_the_user_keeps_its_identity_provider_account(client, db, world, keys):
    said = claims(world)
    me = client.get("/me", headers=bearer(keys.rsa.sign(said)))
    assert me.status_code == 200, me.text
    [user] = users_with(db, world, said["email"])
    assert (user.oidc_issuer, user.oidc_subject) == (ISSUER, said["sub"])


def test_a_user_made_with_api_tokens_cannot_be_signed_in_as(client, db, world, keys):
    """An e-mail is not an account: a token naming an API-token user's e-mail (here with a higher role) is
    refused, and the user is left as it was; its API token goes on working."""
    said = claims(world, email=world.it.email, hpcinfra_role="admin")
    token = keys.rsa.sign(said)
    detail = assert_refused(client.get("/me", headers=bearer(token)), token, "not linked to the identity provider")
    assert f"an account with the e-mail {world.it.email!r} exists in tenant {world.name!r}" in detail
    assert said["sub"] in detail  # what an admin needs to link the two
    [user] = users_with(db, world, world.it.email)
    assert (user.role, user.oidc_issuer, user.oidc_subject) == ("it_manager", None, None)
    assert client.get("/me", headers=world.it.headers).json()["id"] == world.it.id


def test_another_account_with_the_same_email_does_not_get_the_user(client, db, world, keys):
    said = claims(world)
    first = client.get("/me", headers=bearer(keys.rsa.sign(said)))
    assert first.status_code == 200, first.text
    impostor = keys.rsa.sign({**said, "sub": "someone-else", "hpcinfra_role": "admin"})
    assert_refused(client.get("/me", headers=bearer(impostor)), impostor, "is linked to another account")
    [user] = users_with(db, world, said["email"])
    assert (str(user.id), user.role, user.oidc_subject) == (first.json()["id"], "cad_manager", said["sub"])


def test_a_changed_email_follows_the_account_unless_another_user_has_it(client, db, world, keys):
    said = claims(world)
    first = client.get("/me", headers=bearer(keys.rsa.sign(said)))
    assert first.status_code == 200, first.text
    renamed = f"renamed-{uuid.uuid4().hex[:8]}@{world.name}.example"
    moved = client.get("/me", headers=bearer(keys.rsa.sign({**said, "email": renamed})))
    assert moved.status_code == 200 and moved.json()["id"] == first.json()["id"]
    assert moved.json()["email"] == renamed
    # An address another user of the tenant has is not taken from it: the account signs in, its e-mail kept.
    clash = client.get("/me", headers=bearer(keys.rsa.sign({**said, "email": world.cad.email})))
    assert clash.status_code == 200 and clash.json()["id"] == first.json()["id"]
    assert clash.json()["email"] == renamed
    assert [u.id for u in users_with(db, world, world.cad.email)] == [uuid.UUID(world.cad.id)]


def test_an_account_does_not_move_to_another_tenant(client, db, world, keys):
    said = claims(world)
    assert client.get("/me", headers=bearer(keys.rsa.sign(said))).status_code == 200
    other = make_tenant(db.sessions)
    token = keys.rsa.sign({**said, "hpcinfra_tenant": other.name})
    assert_refused(client.get("/me", headers=bearer(token)), token, f"not of tenant {other.name!r}")
    assert users_with(db, other, said["email"]) == []
    assert len(users_with(db, world, said["email"])) == 1


def test_unstated_email_verification_can_be_accepted(db, world, keys, jwks, tmp_path):
    """For a provider that verifies every address and does not say so; a stated `false` is still refused."""
    settings = oidc_settings(db, tmp_path, jwks.url, oidc_accept_unstated_email_verification=True)
    with TestClient(create_app(settings), base_url="http://testserver/api/v1") as c:
        unstated = c.get("/me", headers=bearer(keys.rsa.sign(claims(world, email_verified=None))))
        assert unstated.status_code == 200, unstated.text
        token = keys.rsa.sign(claims(world, email_verified=False))
        assert_refused(c.get("/me", headers=bearer(token)), token, "has not verified the e-mail")


def test_a_role_list_with_one_of_our_roles_is_accepted(client, world, keys):
    token = keys.rsa.sign(claims(world, hpcinfra_role=["offline_access", "it_manager"]))
    me = client.get("/me", headers=bearer(token))
    assert me.status_code == 200 and me.json()["role"] == "it_manager"


def test_api_tokens_still_work_with_oidc_on(client, world, jwks):
    me = client.get("/me", headers=world.cad.headers)
    assert me.status_code == 200 and me.json()["email"] == world.cad.email
    unknown = client.get("/me", headers=bearer("hpci_not-a-token"))
    assert_refused(unknown, "hpci_not-a-token", "the API token is not valid")
    assert jwks.fetches == 0  # an API token never sends the app to the identity provider


def test_with_oidc_off_a_jwt_is_just_an_unknown_api_token(db, world, keys, jwks, tmp_path):
    settings = Settings(database_url=db.url, data_dir=tmp_path)
    assert not settings.oidc_issuer
    with TestClient(create_app(settings), base_url="http://testserver/api/v1") as off:
        token = keys.rsa.sign(claims(world))
        assert_refused(off.get("/me", headers=bearer(token)), token, "the API token is not valid")
        assert off.get("/me", headers=world.cad.headers).status_code == 200
    assert jwks.fetches == 0


# --- refusals -----------------------------------------------------------------------------------


def hs256_with_the_public_key(keys: Keys, world: TenantWorld) -> str:
    """The classic confusion: the provider's public key (which anyone has) used as an HMAC secret."""
    secret = keys.rsa.public_pem()
    return unsigned(
        {"alg": "HS256", "typ": "JWT", "kid": keys.rsa.kid},
        claims(world),
        lambda data: hmac.new(secret, data, hashlib.sha256).digest(),
    )


REFUSALS: dict[str, tuple[Callable[[Keys, TenantWorld], str], str]] = {
    "wrong issuer": (
        lambda k, w: k.rsa.sign(claims(w, iss="https://evil.example")),
        "the token was issued by 'https://evil.example', not by",
    ),
    "no issuer": (lambda k, w: k.rsa.sign(claims(w, iss=None)), "the token has no 'iss' claim"),
    "wrong audience": (
        lambda k, w: k.rsa.sign(claims(w, aud="another-app")),
        "the token is meant for audience 'another-app', not 'hpcinfra-api'",
    ),
    "no audience": (lambda k, w: k.rsa.sign(claims(w, aud=None)), "the token has no 'aud' claim"),
    "expired": (lambda k, w: k.rsa.sign(claims(w, exp=int(time.time()) - 120)), "the token has expired"),
    "no expiry": (lambda k, w: k.rsa.sign(claims(w, exp=None)), "the token has no 'exp' claim"),
    "not valid yet": (lambda k, w: k.rsa.sign(claims(w, nbf=int(time.time()) + 600)), "the token is not valid yet"),
    "issued in the future": (
        lambda k, w: k.rsa.sign(claims(w, iat=int(time.time()) + 600)),
        "the token is not valid yet",
    ),
    "signed by another key": (
        lambda k, w: k.stranger.sign(claims(w), kid=k.rsa.kid),
        "the token's signature does not verify with the identity provider's key 'rsa-1'",
    ),
    "unknown kid": (
        lambda k, w: k.stranger.sign(claims(w)),
        "the token is signed with key 'rsa-stranger', which the identity provider does not publish",
    ),
    "alg none": (
        lambda k, w: unsigned({"alg": "none", "typ": "JWT", "kid": k.rsa.kid}, claims(w)),
        "the token is signed with algorithm 'none'; this API accepts only RS256, ES256",
    ),
    "HS256 with the public key": (
        hs256_with_the_public_key,
        "the token is signed with algorithm 'HS256'; this API accepts only RS256, ES256",
    ),
    "RS256 naming the EC key": (
        lambda k, w: k.rsa.sign(claims(w), kid=k.ec.kid),
        "the token's algorithm RS256 does not match its key 'ec-1' (ES256)",
    ),
    "role not in the list": (
        lambda k, w: k.rsa.sign(claims(w, hpcinfra_role="superuser")),
        "the token's role 'superuser' is not one of cad_manager, it_manager, admin",
    ),
    "no role": (lambda k, w: k.rsa.sign(claims(w, hpcinfra_role=None)), "the token has no 'hpcinfra_role' claim"),
    "two of our roles": (
        lambda k, w: k.rsa.sign(claims(w, hpcinfra_role=["cad_manager", "admin"])),
        "is not one of cad_manager, it_manager, admin",
    ),
    "unknown tenant": (
        lambda k, w: k.rsa.sign(claims(w, hpcinfra_tenant="no-such-tenant")),
        "the token's tenant 'no-such-tenant' does not exist on this platform",
    ),
    "no tenant": (lambda k, w: k.rsa.sign(claims(w, hpcinfra_tenant=None)), "the token has no 'hpcinfra_tenant' claim"),
    "no e-mail": (lambda k, w: k.rsa.sign(claims(w, email=None)), "the token has no 'email' claim"),
    "not an e-mail": (
        lambda k, w: k.rsa.sign(claims(w, email="ada")),
        "the token's 'email' claim 'ada' is not an e-mail address",
    ),
    "e-mail not verified": (
        lambda k, w: k.rsa.sign(claims(w, email_verified=False)),
        "the identity provider has not verified the e-mail",
    ),
    "e-mail verification a string": (
        lambda k, w: k.rsa.sign(claims(w, email_verified="false")),
        "the identity provider has not verified the e-mail",
    ),
    "e-mail verification unstated": (
        lambda k, w: k.rsa.sign(claims(w, email_verified=None)),
        "the token does not say whether the identity provider verified the e-mail",
    ),
    "no subject": (lambda k, w: k.rsa.sign(claims(w, sub=None)), "the token has no 'sub' claim"),
    "empty subject": (lambda k, w: k.rsa.sign(claims(w, sub="")), "the token has no 'sub' claim"),
    "subject not a string": (lambda k, w: k.rsa.sign(claims(w, sub=42)), "the token's 'sub' claim is not a string"),
    "subject too long": (lambda k, w: k.rsa.sign(claims(w, sub="s" * 256)), "longer than 255 characters"),
    "garbage shaped like a JWT": (lambda k, w: "bm90.anNvbg.c2ln", "its header cannot be read"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_a_bad_token_is_refused_with_the_reason(client, db, world, keys, case):
    make, reason = REFUSALS[case]
    token = make(keys, world)
    detail = assert_refused(client.get("/me", headers=bearer(token)), token, reason)
    assert detail.startswith("the OIDC token was refused: ")
    with db.sessions() as session:
        made = session.scalar(select(func.count()).select_from(User).where(User.tenant_id == uuid.UUID(world.id)))
    assert made == 3  # the tenant's own users, and no one else


def test_authentication_comes_before_the_body(client, world, keys):
    token = keys.rsa.sign(claims(world, aud="another-app"))
    body = {"name": "x", "this": "is not a valid request"}
    assert_refused(client.post("/requests", json=body, headers=bearer(token)), token, "meant for audience")


def test_tokens_are_never_logged(client, world, keys, caplog):
    good, bad = keys.rsa.sign(claims(world)), keys.rsa.sign(claims(world, aud="another-app"))
    with caplog.at_level(logging.DEBUG):
        assert client.get("/me", headers=bearer(good)).status_code == 200
        assert client.get("/me", headers=bearer(bad)).status_code == 401
    assert "refused an OIDC token" in caplog.text  # the refusal and its reason are logged ...
    for token in (good, bad):
        assert all(part not in caplog.text for part in token.split("."))  # ... never the token


# --- the signing keys ---------------------------------------------------------------------------


def test_keys_are_refetched_when_a_token_names_a_new_one(client, world, keys, jwks, monkeypatch):
    monkeypatch.setattr(JwksCache, "min_refetch_interval", 0.0)
    old = keys.rsa.sign(claims(world))
    assert client.get("/me", headers=bearer(old)).status_code == 200
    assert jwks.fetches == 1

    # The provider rotates: a new key is published and the old one withdrawn.
    rotated = Signer.rsa("rsa-2")
    jwks.publish(rotated, keys.ec)
    new = rotated.sign(claims(world))
    me = client.get("/me", headers=bearer(new))
    assert me.status_code == 200, me.text
    assert jwks.fetches == 2
    assert client.get("/me", headers=bearer(new)).status_code == 200
    assert jwks.fetches == 2  # the new key is cached now

    # The withdrawn key is no longer trusted.
    assert_refused(client.get("/me", headers=bearer(old)), old, "'rsa-1', which the identity provider does not publish")


def test_unknown_keys_cannot_make_the_app_hammer_the_provider(client, world, keys, jwks):
    assert client.get("/me", headers=bearer(keys.rsa.sign(claims(world)))).status_code == 200
    for n in range(5):
        token = keys.stranger.sign(claims(world), kid=f"made-up-{n}")
        assert_refused(client.get("/me", headers=bearer(token)), token, "does not publish")
    assert jwks.fetches <= 2  # the first fetch, and at most one refetch within the cool-down


def test_an_unreachable_provider_is_a_503_not_a_hang(db, world, keys, tmp_path):
    settings = oidc_settings(db, tmp_path, f"http://127.0.0.1:{free_port()}/jwks")
    with TestClient(create_app(settings), base_url="http://testserver/api/v1") as c:
        token = keys.rsa.sign(claims(world))
        started = time.monotonic()
        detail = assert_refused(c.get("/me", headers=bearer(token)), token, "could not be fetched", status=503)
        assert detail.startswith("the OIDC token cannot be checked now: ")
        assert time.monotonic() - started < JwksCache.timeout + 1
        # API tokens do not depend on the provider.
        assert c.get("/me", headers=world.cad.headers).status_code == 200


# --- just-in-time users -------------------------------------------------------------------------


def test_simultaneous_first_sign_ins_make_one_user(db, world):
    identity = Identity(
        issuer=ISSUER,
        subject=uuid.uuid4().hex,
        tenant=world.name,
        email=f"racer-{uuid.uuid4().hex[:8]}@{world.name}.example",
        role="cad_manager",
        name="racer",
    )
    with ThreadPoolExecutor(8) as pool:
        users = list(pool.map(lambda _: user_for_identity(db.sessions, identity), range(8)))
    assert len({u.id for u in users}) == 1
    assert len(users_with(db, world, identity.email)) == 1


# --- settings -----------------------------------------------------------------------------------

PRODUCTION = {"env": "production", "database_url": "postgresql+psycopg://x@h/db", "credential_keys": "k"}


def test_oidc_is_off_by_default_with_the_documented_claims(monkeypatch):
    for name in (
        "ISSUER",
        "ROLE_CLAIM",
        "TENANT_CLAIM",
        "EMAIL_CLAIM",
        "ALGORITHMS",
        "ACCEPT_UNSTATED_EMAIL_VERIFICATION",
    ):
        monkeypatch.delenv(f"HPCINFRA_OIDC_{name}", raising=False)
    settings = Settings()
    assert settings.oidc_issuer == ""
    assert (settings.oidc_role_claim, settings.oidc_tenant_claim, settings.oidc_email_claim) == (
        "hpcinfra_role",
        "hpcinfra_tenant",
        "email",
    )
    assert settings.oidc_algorithms == ["RS256", "ES256"]
    assert settings.oidc_accept_unstated_email_verification is False


@pytest.mark.parametrize(
    "values, message",
    [
        ({**PRODUCTION, "oidc_issuer": ISSUER, "oidc_jwks_url": "https://idp/jwks"}, "HPCINFRA_OIDC_AUDIENCE"),
        ({**PRODUCTION, "oidc_issuer": ISSUER, "oidc_audience": AUDIENCE}, "HPCINFRA_OIDC_JWKS_URL"),
        (
            {**PRODUCTION, "oidc_issuer": ISSUER, "oidc_audience": AUDIENCE, "oidc_jwks_url": "http://idp/jwks"},
            "https:// URL in production",
        ),
        ({"oidc_algorithms": ["RS256", "HS256"]}, "HPCINFRA_OIDC_ALGORITHMS"),
        ({"oidc_algorithms": ["none"]}, "HPCINFRA_OIDC_ALGORITHMS"),
        ({"oidc_algorithms": []}, "HPCINFRA_OIDC_ALGORITHMS"),
    ],
)
def test_bad_oidc_settings_are_refused_at_start(values, message):
    with pytest.raises(ValidationError, match=message):
        Settings(**values)


def test_the_settings_accept_exactly_the_algorithms_the_verifier_does():
    assert Settings(oidc_algorithms=list(ALGORITHMS)).oidc_algorithms == list(ALGORITHMS)
    for alg in get_default_algorithms():
        if alg not in ALGORITHMS:
            with pytest.raises(ValidationError):
                Settings(oidc_algorithms=[alg])


def test_complete_oidc_settings_are_accepted_in_production():
    settings = Settings(
        **PRODUCTION, oidc_issuer=ISSUER, oidc_audience=AUDIENCE, oidc_jwks_url="https://idp.example/jwks"
    )
    assert settings.oidc_issuer == ISSUER
