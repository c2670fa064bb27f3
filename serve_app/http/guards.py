"""Request guards and response headers, as pure ASGI middleware (streams stay unbuffered).

- ``BodyGuardMiddleware``: bodies over ``max_body_bytes`` get 413 (declared by
  Content-Length, or counted as they stream in); a body on a JSON route that is
  not ``application/json`` gets 415. Both in our error shape (OpenAI's under
  ``/v1``), before any work.
- ``SecurityHeadersMiddleware``: nosniff, no framing, no referrer, a locked-down
  CSP (except on the interactive docs, which load their own assets), and HSTS
  when the request came over HTTPS (``X-Forwarded-Proto`` from the TLS proxy).
"""

from __future__ import annotations

import json

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.http.openai_compat.protocol import ErrorResponse, is_openai_path

DOCS_PATHS = ("/docs", "/redoc", "/openapi.json")
_BODY_METHODS = {"POST", "PUT", "PATCH"}


async def _reject(scope: Scope, send: Send, status: int, type_: str, message: str) -> None:
    if is_openai_path(scope):  # the OpenAI-compatible API answers in OpenAI's error shape
        body = ErrorResponse.build(status, message, code=type_).model_dump_json().encode()
    else:
        rid = scope.get("state", {}).get("request_id")
        error: dict[str, str] = {"type": type_, "message": message}
        if rid:
            error["request_id"] = rid
        body = json.dumps({"error": error}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyGuardMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int = 1_000_000) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit = self.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _reject(scope, send, 413, "payload_too_large", f"body: at most {limit} bytes")
            return
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if declared != "0" and ctype != "application/json":
            await _reject(scope, send, 415, "unsupported_media_type", "body: send application/json")
            return
        if declared is not None:
            await self.app(scope, receive, send)  # declared and within the limit
            return
        # NOTE: no Content-Length (chunked): read it here, up to the limit, and replay it.
        # The app's own body parser would swallow an error raised from receive().
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _reject(scope, send, 413, "payload_too_large", f"body: at most {limit} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        https = Headers(scope=scope).get("x-forwarded-proto") == "https" or scope.get("scheme") == "https"

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                h = MutableHeaders(scope=message)
                h.setdefault("X-Content-Type-Options", "nosniff")
                h.setdefault("X-Frame-Options", "DENY")
                h.setdefault("Referrer-Policy", "no-referrer")
                if not path.startswith(DOCS_PATHS):
                    h.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
                if https:
                    h.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
            await send(message)

        await self.app(scope, receive, with_headers)
