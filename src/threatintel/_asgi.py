"""Pure-ASGI wrappers around the HTTP server: timing, bearer auth, a per-client request limit
and a body-size cap.

    app = Timing(BearerAuth(RateLimit(BodyLimit(api, limit_for), acquire, counted), token), observe)

Each is a plain ASGI callable, never Starlette's ``BaseHTTPMiddleware``: that one buffers
responses and breaks the streamed answers of /mcp. Their refusals are the API's JSON errors,
``{"error": code, "detail": one sentence}``. Lifespan messages pass straight through.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("threatintel.http")

#: Paths anyone may read without the token: liveness and readiness probes (a Kubernetes
#: probe cannot easily send a bearer token) and the API's documentation (a browser opening
#: /docs fetches /openapi.json without one). None of them says anything about the data.
OPEN_PATHS: Final = frozenset(
    {"/health", "/ready", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)


async def send_error(
    send: Send,
    status: int,
    error: str,
    detail: str,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Answer with the API's JSON error body."""
    body = json.dumps({"error": error, "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case), or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


class Timing:
    """Calls ``observe(scope, status, seconds)`` once per HTTP request, refusals included;
    an exception escaping the app counts as a 500 (and is raised on)."""

    __slots__ = ("app", "observe")

    def __init__(self, app: ASGIApp, observe: Callable[[Scope, int, float], None]) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            try:
                self.observe(scope, status, time.perf_counter() - started)
            except Exception:  # metrics must never break a request
                logger.exception("observing an HTTP request failed")


class BearerAuth:
    """Every request but those to ``open_paths`` must carry ``Authorization: Bearer <token>``;
    the token is compared in constant time. Refused: 401 with ``WWW-Authenticate: Bearer``."""

    __slots__ = ("app", "open_paths", "token")

    def __init__(self, app: ASGIApp, token: str, open_paths: frozenset[str] = OPEN_PATHS) -> None:
        if not token:
            raise ValueError("an empty token would let everyone in")
        self.app = app
        self.token = token.encode()
        self.open_paths = open_paths

    def allowed(self, scope: Scope) -> bool:
        if scope["path"] in self.open_paths:
            return True
        scheme, _, given = (header(scope, b"authorization") or b"").partition(b" ")
        # compare_digest on every request, even without a header: no timing difference.
        matches = hmac.compare_digest(given.strip(), self.token)
        return scheme.lower() == b"bearer" and matches

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.allowed(scope):
            await send_error(
                send,
                401,
                "unauthorized",
                "missing or wrong bearer token (Authorization: Bearer <THREATINTEL_API_TOKEN>)",
                [(b"www-authenticate", b'Bearer realm="threatintel"')],
            )
            return
        if scope["type"] == "websocket" and not self.allowed(scope):
            await send({"type": "websocket.close", "code": 1008})
            return
        await self.app(scope, receive, send)


#: ``acquire(client)``: None when the client may go on, else the seconds until it may.
Acquire = Callable[[str], Awaitable[float | None]]


class RateLimit:
    """At most the limit ``acquire`` enforces per client (the peer address uvicorn reports,
    which honours X-Forwarded-For only from FORWARDED_ALLOW_IPS) on the paths ``counted``
    accepts. Over it: 429 with Retry-After, at once; a request never waits here. A limiter
    failure lets the request through (the vendor quotas still hold)."""

    __slots__ = ("acquire", "app", "counted")

    def __init__(self, app: ASGIApp, acquire: Acquire, counted: Callable[[str], bool]) -> None:
        self.app = app
        self.acquire = acquire
        self.counted = counted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.counted(scope["path"]):
            client = scope.get("client")
            try:
                wait = await self.acquire(str(client[0]) if client else "unknown")
            except Exception as exc:
                logger.warning(
                    "request limit not checked (%s); request let through", type(exc).__name__
                )
                wait = None
            if wait is not None:
                seconds = max(1, math.ceil(wait))
                await send_error(
                    send,
                    429,
                    "rate_limited",
                    f"too many requests from this client; retry in {seconds} s "
                    "(API_RATE_LIMIT per minute)",
                    [(b"retry-after", str(seconds).encode())],
                )
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Request bodies at most ``limit_for(scope)`` bytes (None: no cap): a larger
    Content-Length is refused before anything is read, and a chunked body is counted while it
    is read, so the app never parses an oversized one (413). The app gets the body whole."""

    __slots__ = ("app", "limit_for")

    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], int | None]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limit_for(scope) if scope["type"] == "http" else None
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its whole body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _too_large(send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: bytes | None = b"".join(chunks)

        async def replay() -> Message:
            nonlocal body
            if body is None:
                return await receive()  # after the body: the disconnect, when it comes
            message: Message = {"type": "http.request", "body": body, "more_body": False}
            body = None
            return message

        await self.app(scope, replay, send)


async def _too_large(send: Send, limit: int) -> None:
    await send_error(
        send,
        413,
        "body_too_large",
        f"the request body is larger than this endpoint accepts ({limit} bytes)",
        [(b"connection", b"close")],
    )
