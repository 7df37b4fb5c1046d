"""Limits on what a caller may send: a cap on request bodies (answered with a problem document whether
or not Content-Length is sent), and a rate limit per caller."""

import math
import time

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
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
    """At most `per_minute` calls in any 60 seconds per caller (API token's user or signed-in user),
    counted by this API process in a moving window; beyond it, 429 with `Retry-After` (when the oldest
    call of the window leaves it). With several API processes behind a load balancer, each counts on its own."""

    def __init__(self, app: ASGIApp, per_minute: int) -> None:
        self.app = app
        self.per_minute = per_minute
        self._limit = RateLimitItemPerMinute(max(per_minute, 1))
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        user = scope.get("state", {}).get("user") if scope["type"] == "http" else None
        if user is None or self.per_minute <= 0:
            await self.app(scope, receive, send)
            return
        caller = str(user.id)
        if not self._limiter.hit(self._limit, caller):
            window = self._limiter.get_window_stats(self._limit, caller)
            retry_after = str(max(1, math.ceil(window.reset_time - time.time())))
            await problem_response(
                429,
                f"more than {self.per_minute} calls in a minute; try again in {retry_after} s",
                instance=scope["path"],
                headers={"Retry-After": retry_after},
            )(scope, receive, send)
            return
        await self.app(scope, receive, send)
