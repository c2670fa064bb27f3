"""Request logs: one structured line per request, through the standard ``logging`` module.

The line's fields travel as ``LogRecord`` attributes (``extra``), so a JSON
formatter writes each as a key. In a Serve replica the logger is a child of
``ray.serve``, whose handlers Serve configures from the deploy config's
``logging_config`` (``encoding: JSON``): Ray's JSON formatter writes every extra
attribute, and Serve adds the deployment, replica, application, and its own
``request_id`` and ``route`` (the same values: Serve's proxy puts its request id
in the ``X-Request-ID`` header our middleware reads, and matches the same route).

What a line never holds: headers (so no Authorization, API key or cookie), query
strings, bodies. Message contents only with ``LOG_MESSAGE_CONTENTS=true``, which
is for debugging (users' words in the logs) and refused in production.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.observability.http import route_template

# NOTE: under ``ray.serve`` on purpose: Serve's handlers (JSON, per-replica files) serve that tree only.
REQUEST_LOGGER = "ray.serve.agentserve.requests"
PROBE_PATHS = frozenset({"/live", "/ready", "/health"})
_CONTENTS = "log_contents"  # request.state: the turn's message and reply, when contents are logged
_SESSION = "log_session_id"  # request.state: the session a route worked on

logger = logging.getLogger(REQUEST_LOGGER)


def note_session(request: Request, session_id: str | None) -> None:
    """Name the session this request worked on in its log line (chat routes know it only after the turn)."""
    if session_id:
        setattr(request.state, _SESSION, session_id)


def note_contents(request: Request, *, message: str | None = None, reply: str | None = None) -> None:
    """Keep the turn's message and reply for the log line, only when ``LOG_MESSAGE_CONTENTS`` is on."""
    if not getattr(request.app.state, "log_message_contents", False):
        return
    contents: dict[str, str] = getattr(request.state, _CONTENTS, None) or {}
    if message is not None:
        contents["user_message"] = message
    if reply is not None:
        contents["reply"] = reply
    setattr(request.state, _CONTENTS, contents)


def _principal_id(state: dict[str, Any]) -> str | None:
    # NOTE: read by attribute, not by import: the auth layer sits above this module.
    outcome = state.get("auth_outcome")
    principal_id = getattr(outcome, "id", None)
    return principal_id if isinstance(principal_id, str) else None


class RequestLogMiddleware:
    """One log line per HTTP request when its response is done (a stream: when it ends).

    Fields: ``request_id``, ``method``, ``route`` (the template, never the raw
    path), ``status``, ``latency_ms``, ``principal_id`` (when authenticated),
    ``session_id`` (when the request had one), ``client_ip``; with contents on,
    ``user_message`` and ``reply``. INFO, ERROR for a 5xx; health probes at DEBUG.
    """

    def __init__(self, app: ASGIApp, *, log: logging.Logger = logger) -> None:
        self.app = app
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        response_session: str | None = None

        async def send_observed(message: Message) -> None:
            nonlocal status, response_session
            if message["type"] == "http.response.start":
                status = message["status"]
                response_session = MutableHeaders(scope=message).get("x-session-id")
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            self._emit(scope, status, (time.perf_counter() - started) * 1000, response_session)

    def _emit(self, scope: Scope, status: int, latency_ms: float, response_session: str | None) -> None:
        probe = scope["path"] in PROBE_PATHS
        level = logging.DEBUG if probe else (logging.ERROR if status >= 500 else logging.INFO)
        if not self.log.isEnabledFor(level):
            return
        state: dict[str, Any] = scope.get("state", {})
        route = route_template(scope)
        session = state.get(_SESSION) or scope.get("path_params", {}).get("session_id") or response_session
        client = scope.get("client")
        fields: dict[str, Any] = {
            "request_id": state.get("request_id"),
            "method": scope["method"],
            "route": route,
            "status": status,
            "latency_ms": round(latency_ms, 2),
            "principal_id": _principal_id(state),
            "session_id": session,
            "client_ip": str(client[0]) if client else None,
        }
        fields.update(state.get(_CONTENTS) or {})
        # NOTE: the message repeats who and which session: Serve's TEXT encoding writes the message only.
        self.log.log(
            level,
            "%s %s %d %.1fms principal=%s session=%s client=%s",
            scope["method"],
            route,
            status,
            latency_ms,
            fields["principal_id"] or "-",
            session or "-",
            fields["client_ip"] or "-",
            extra=fields,
        )
