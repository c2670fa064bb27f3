"""HTTP metrics: a pure ASGI middleware, and ``/metrics`` for the Prometheus backend."""

from __future__ import annotations

import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.observability.metrics import PrometheusBackend, get_metrics

UNMATCHED = "unmatched"


def _templates(app: Any) -> list[tuple[re.Pattern[str], str]]:
    """Every route's full path template, static ones first; built once per app.

    From the OpenAPI paths (included routers have their prefixes there) and the
    app's plain routes (``/metrics``, the docs): public views, where FastAPI's own
    routing tree is internal.
    """
    cached: list[tuple[re.Pattern[str], str]] | None = getattr(app.state, "metric_route_templates", None)
    if cached is None:
        paths = set(app.openapi().get("paths", {})) | {r.path for r in app.routes if isinstance(r, Route)}
        ordered = sorted(paths, key=lambda p: ("{" in p, -len(p), p))
        cached = [(compile_path(p)[0], p) for p in ordered]
        app.state.metric_route_templates = cached
    return cached


def route_template(scope: Scope) -> str:
    """The route's path template (``/api/sessions/{session_id}``), never the raw path.

    Matched here rather than read from ``scope["route"]``: a 429 or 413 is answered
    by a middleware before routing, and still needs its route.
    """
    state = scope.setdefault("state", {})
    found: str | None = state.get(_ROUTE_TEMPLATE)
    if found is None:  # matched once per request: metrics, the request log and errors all ask
        found = _match(scope)
        state[_ROUTE_TEMPLATE] = found
    return found


_ROUTE_TEMPLATE = "route_template"


def _match(scope: Scope) -> str:
    app = scope.get("app")
    if app is None or not hasattr(app, "openapi"):
        return UNMATCHED
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return next((t for regex, t in _templates(app) if regex.match(path)), UNMATCHED)


class HTTPMetricsMiddleware:
    """Requests by route and status, their latency, 429s, and open SSE streams."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route, method = route_template(scope), scope["method"]
        started = time.perf_counter()
        status, streaming = 500, False

        async def send_observed(message: Message) -> None:
            nonlocal status, streaming
            if message["type"] == "http.response.start":
                status = message["status"]
                ctype = dict(message.get("headers", [])).get(b"content-type", b"")
                if ctype.startswith(b"text/event-stream"):
                    streaming = True
                    get_metrics().stream_open(route, +1)
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            metrics = get_metrics()
            if streaming:
                metrics.stream_open(route, -1)
            metrics.http_request(route, method, status, time.perf_counter() - started)


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text of this process, when its backend is ``PrometheusBackend`` (else 404)."""
    backend = get_metrics().backend
    if not isinstance(backend, PrometheusBackend):
        return PlainTextResponse("metrics are exported by Ray in this process\n", status_code=404)
    return Response(backend.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
