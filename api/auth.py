"""Authentication at the edge: every call under /api/v1 but the health probes must carry a valid
bearer token, checked before anything else (the body included) is looked at. Who may do what is
decided by the routes (see api/access.py)."""

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import problem_response
from hpcinfra.accounts import user_for_token
from hpcinfra.models import User

CHALLENGE = {"WWW-Authenticate": "Bearer"}


class Authentication:
    def __init__(self, app: ASGIApp, prefix: str, public: frozenset[str]) -> None:
        self.app = app
        self.prefix = prefix
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(self.prefix) or path in self.public:
            await self.app(scope, receive, send)
            return
        scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            await problem_response(
                401, "send an API token as 'Authorization: Bearer <token>'", instance=path, headers=CHALLENGE
            )(scope, receive, send)
            return
        user = await run_in_threadpool(self._lookup, scope, token.strip())
        if user is None:
            await problem_response(401, "the API token is not valid", instance=path, headers=CHALLENGE)(
                scope, receive, send
            )
            return
        scope.setdefault("state", {})["user"] = user
        await self.app(scope, receive, send)

    @staticmethod
    def _lookup(scope: Scope, token: str) -> User | None:
        with scope["app"].state.sessions() as session:
            return user_for_token(session, token)
