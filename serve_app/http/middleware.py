"""Pure ASGI middleware (no BaseHTTPMiddleware: it buffers and breaks SSE cancellation)."""

from __future__ import annotations

import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"


def _valid_request_id(value: str) -> bool:
    return 0 < len(value) <= 128 and value.isascii() and value.isprintable()


class RequestIdMiddleware:
    """Accept or make ``X-Request-ID``; echo it with ``X-Process-Time`` on every response.

    Behind Ray Serve the proxy has already put an ``x-request-id`` on the request
    (the client's, or one it made) and adds it to the response itself, so there
    ``echo_request_id`` is False and the app only reads it.
    """

    def __init__(self, app: ASGIApp, echo_request_id: bool = True) -> None:
        self.app = app
        self.echo_request_id = echo_request_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ""
        for key, value in scope.get("headers", []):
            if key == b"x-request-id":
                rid = value.decode("latin-1")
                break
        if not _valid_request_id(rid):
            rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if self.echo_request_id:
                    headers[REQUEST_ID_HEADER] = rid
                headers["X-Process-Time"] = f"{(time.perf_counter() - started) * 1000:.2f}ms"
            await send(message)

        await self.app(scope, receive, send_with_headers)
