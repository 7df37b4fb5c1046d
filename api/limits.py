"""Limits on what a caller may send: a cap on request bodies (answered with a problem document whether
or not Content-Length is sent), and a rate limit per caller."""

import math
import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import problem_response


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _detail(self) -> str:
        return f"the request body is larger than the limit of {self.max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await problem_response(413, self._detail(), instance=scope["path"])(scope, receive, send)
            return

        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                # Raised where the route reads its body; the app's handler turns it into the problem document.
                raise HTTPException(413, self._detail())
            return message

        await self.app(scope, counting_receive, send)


class RateLimit:
    """At most `per_minute` calls a minute per caller (API token's user or signed-in user), counted in
    fixed one-minute windows by this API process; beyond it, 429 with `Retry-After`. With several API
    processes behind a load balancer, each counts on its own."""

    def __init__(self, app: ASGIApp, per_minute: int) -> None:
        self.app = app
        self.per_minute = per_minute
        self._windows: dict[object, tuple[int, int]] = {}  # caller -> (minute, calls in it)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        user = scope.get("state", {}).get("user") if scope["type"] == "http" else None
        if user is None or self.per_minute <= 0:
            await self.app(scope, receive, send)
            return
        now = time.time()
        minute = int(now // 60)
        window, calls = self._windows.get(user.id, (minute, 0))
        if window != minute:
            window, calls = minute, 0
            if len(self._windows) > 100_000:  # forget callers of earlier minutes
                self._windows = {k: v for k, v in self._windows.items() if v[0] == minute}
        if calls >= self.per_minute:
            retry_after = str(max(1, math.ceil((minute + 1) * 60 - now)))
            await problem_response(
                429,
                f"more than {self.per_minute} calls in a minute; try again in {retry_after} s",
                instance=scope["path"],
                headers={"Retry-After": retry_after},
            )(scope, receive, send)
            return
        self._windows[user.id] = (window, calls + 1)
        await self.app(scope, receive, send)
