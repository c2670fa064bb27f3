"""The FastAPI application of the Ingress (Ray-free; handles come in as services)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from agent.keys import ApiKeyStore
from serve_app.auth.config import AuthSettings
from serve_app.auth.deps import install_auth
from serve_app.http.errors import install_error_handlers
from serve_app.http.guards import BodyGuardMiddleware, SecurityHeadersMiddleware
from serve_app.http.middleware import RequestIdMiddleware
from serve_app.http.openai_compat import router as openai_router
from serve_app.http.routes import chat, health, keys, memory, sessions, tools
from serve_app.http.services import AgentService
from serve_app.observability.http import HTTPMetricsMiddleware, metrics_endpoint
from serve_app.observability.logs import RequestLogMiddleware
from serve_app.ratelimit.config import LiveRateLimitConfig
from serve_app.ratelimit.http import EXEMPT_PATHS, RateLimitMiddleware, authenticated_principal
from serve_app.ratelimit.limiter import InProcessRateLimiter, RateLimiter
from serve_app.settings import Settings

logger = logging.getLogger(__name__)


def create_app(
    service: AgentService,
    *,
    heartbeat_s: float = 15.0,
    model_name: str = "agentserve",
    rate_limiter: RateLimiter | None = None,
    rate_limits: LiveRateLimitConfig | None = None,
    auth: AuthSettings | None = None,
    key_store: ApiKeyStore | None = None,
    max_body_bytes: int = 1_000_000,
    cors_origins: Sequence[str] = (),
    metrics_path: str | None = None,
    log_message_contents: bool | None = None,
    echo_request_id: bool = True,
) -> FastAPI:
    """Build the HTTP app around an ``AgentService``.

    Args:
        service: Where turns and tool calls go (handles, or one process).
        heartbeat_s: Interval of the SSE comment heartbeat that keeps idle
            streams (a long tool call) open through proxies.
        model_name: The agent's model name on the OpenAI-compatible API (``/v1``).
        echo_request_id: Set ``X-Request-ID`` on responses. False behind Ray Serve,
            whose proxy (and direct ingress) always adds it; twice would be ``id, id``.
        rate_limiter: Where rate-limit state lives (Redis shared by every Ingress
            replica, or this process).
        rate_limits: The live limits; the Ingress updates them from ``user_config``.
        auth: JWT/API-key settings; from the environment (``AUTH_MODE``, ``JWT_*``) by default.
        key_store: Where API keys live (the conversation store); None refuses API keys.
        max_body_bytes: Larger request bodies get 413.
        cors_origins: Origins allowed by CORS (``CORS_ORIGINS``); none by default. A
            wildcard is refused: credentials are allowed, and the two must not meet.
        metrics_path: Serve this process's Prometheus text there (``/metrics``) when its
            metrics backend is ``PrometheusBackend`` (the app without Ray); None: no route.
        log_message_contents: Put chat turns' messages and replies in the request log
            (debugging only); None: ``LOG_MESSAGE_CONTENTS`` from the environment.
    """
    if "*" in cors_origins:
        raise ValueError("CORS_ORIGINS: list the allowed origins; '*' with credentials is unsafe")
    limiter = rate_limiter or InProcessRateLimiter()
    live = rate_limits or LiveRateLimitConfig()
    app = FastAPI(title="agentserve", version="0.1.0", description="An LLM agent platform on Ray Serve.")
    app.state.agent_service = service
    app.state.health_cache = None
    app.state.heartbeat_s = heartbeat_s
    app.state.agent_model_name = model_name
    app.state.rate_limiter = limiter
    app.state.rate_limit_config = live
    if log_message_contents is None:
        log_message_contents = Settings().log_message_contents
    app.state.log_message_contents = log_message_contents
    if log_message_contents:
        logger.warning("LOG_MESSAGE_CONTENTS is on: users' messages and replies go to the logs (debugging only)")
    install_error_handlers(app)
    install_auth(app, auth or AuthSettings(), key_store)
    app.include_router(chat.router)
    app.include_router(tools.router)
    app.include_router(sessions.router)
    app.include_router(memory.router)
    app.include_router(health.router)
    app.include_router(keys.router)
    app.include_router(openai_router.router)
    if metrics_path:
        app.add_route(metrics_path, metrics_endpoint, include_in_schema=False)
    exempt = EXEMPT_PATHS | {metrics_path} if metrics_path else EXEMPT_PATHS  # a scraper is never limited
    app.add_middleware(
        RateLimitMiddleware,
        limiter=limiter,
        config_provider=live.get,
        principal_of=authenticated_principal,
        exempt_paths=exempt,
    )
    app.add_middleware(BodyGuardMiddleware, max_body_bytes=max_body_bytes)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_credentials=True,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "Idempotency-Key", "X-Request-ID",
                           "X-Session-ID"],
            expose_headers=["X-Request-ID", "X-Session-ID", "Retry-After", "RateLimit-Limit",
                            "RateLimit-Remaining", "RateLimit-Reset"],
        )  # fmt: skip
    app.add_middleware(SecurityHeadersMiddleware)
    # NOTE: outside the rate limit and body guard, so their 429 and 413 are counted too.
    app.add_middleware(HTTPMetricsMiddleware)
    # NOTE: inside the request id (the line names it), outside everything that may answer early.
    app.add_middleware(RequestLogMiddleware)
    # NOTE: added last = outermost, so every error body (413, 415, 429) carries the request id.
    app.add_middleware(RequestIdMiddleware, echo_request_id=echo_request_id)
    return app
