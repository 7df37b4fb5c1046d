"""Authentication at the edge: every call under /api/v1 but the health probes must carry a valid
bearer token, checked before anything else (the body included) is looked at. Who may do what is
decided by the domain's rules (services/permissions.py), which the routes apply (api/access.py).

A bearer token is one of the platform's API tokens or, when OIDC is on (HPCINFRA_OIDC_ISSUER is set),
a JWT from the identity provider (see api/oidc.py): a value shaped like a JWT is checked as one,
anything else as an API token."""

import logging

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import problem_response
from api.oidc import OidcError, OidcVerifier, looks_like_jwt
from core.models import User
from core.settings import Settings
from services.accounts import user_for_token

log = logging.getLogger(__name__)

CHALLENGE = {"WWW-Authenticate": "Bearer"}


class Authentication:
    def __init__(self, app: ASGIApp, prefix: str, public: frozenset[str]) -> None:
        self.app = app
        self.prefix = prefix
        self.public = public
        # Made on first use from the app's settings (they are known once the app has started); it holds
        # the cache of the identity provider's signing keys.
        self._oidc: tuple[Settings, OidcVerifier] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(self.prefix) or path in self.public:
            await self.app(scope, receive, send)
            return
        scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            await problem_response(
                401, "send an API token as 'Authorization: Bearer <token>'", instance=path, headers=CHALLENGE
            )(scope, receive, send)
            return
        oidc = self._verifier(scope["app"].state.settings)
        if oidc is not None and looks_like_jwt(token):
            try:
                # Off the event loop: fetching the signing keys and the database are blocking.
                user = await run_in_threadpool(oidc.user, scope["app"].state.sessions, token)
            except OidcError as e:
                log.info("refused an OIDC token for %s: %s", path, e)
                detail = (
                    f"the OIDC token was refused: {e}"
                    if e.status == 401
                    else f"the OIDC token cannot be checked now: {e}"
                )
                headers = CHALLENGE if e.status == 401 else {"Retry-After": "10"}
                await problem_response(e.status, detail, instance=path, headers=headers)(scope, receive, send)
                return
        else:
            user = await run_in_threadpool(self._lookup, scope, token)
            if user is None:
                await problem_response(401, "the API token is not valid", instance=path, headers=CHALLENGE)(
                    scope, receive, send
                )
                return
        scope.setdefault("state", {})["user"] = user
        await self.app(scope, receive, send)

    def _verifier(self, settings: Settings) -> OidcVerifier | None:
        if not settings.oidc_issuer:
            return None
        if self._oidc is None or self._oidc[0] is not settings:
            self._oidc = (settings, OidcVerifier.from_settings(settings))
        return self._oidc[1]

    @staticmethod
    def _lookup(scope: Scope, token: str) -> User | None:
        with scope["app"].state.sessions() as session:
            return user_for_token(session, token)
