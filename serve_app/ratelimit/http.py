"""Rate limits at the HTTP edge: per client IP, per principal, and the principal's LLM tokens.

A pure ASGI middleware (as ``RequestIdMiddleware``: nothing is buffered, SSE
passes through). Per request, in order: the client IP's request limit
(``ip:<host>``), the principal's request limit (``p:<id>``), then on chat
paths the principal's token budget (``tok:<id>``, a pre-check that spends
nothing). The first refusal answers 429 with ``Retry-After``. Chat routes
charge a finished turn's tokens with ``charge_tokens``.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Collection

from starlette.datastructures import Headers, MutableHeaders, QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.dto import ID_PATTERN
from serve_app.http.errors import ErrorBody, ErrorDetail
from serve_app.http.openai_compat.protocol import ErrorResponse, is_openai_path
from serve_app.ratelimit.config import RateLimitConfig
from serve_app.ratelimit.limiter import RateLimitDecision, RateLimiter

WINDOW_S = 60.0
EXEMPT_PATHS = frozenset({"/live", "/ready", "/health"})
TOKEN_PATH_PREFIXES = ("/api/chat", "/v1/chat")

_ID = re.compile(ID_PATTERN)


def client_host(scope: Scope) -> str:
    """The peer address as the server saw it (behind a proxy, pass an ``ip_of`` that trusts it)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def principal_from_user_id(scope: Scope) -> str | None:
    """The interim principal, as ``get_principal`` reads it: ``user_id`` query, else ``X-User-ID``; None if absent."""
    user = QueryParams(scope.get("query_string", b"")).get("user_id") or Headers(scope=scope).get("x-user-id")
    return user if user is not None and _ID.match(user) else None


def principal_key(scope: Scope) -> str | None:
    """The rate-limit identity of a request, known before authentication runs.

    A credential (bearer token or API key) stands for its principal: the key is a
    hash of it, so a leaked key cannot be read back from Redis. Without one
    (authentication disabled), the interim ``user_id``. The middleware and the
    token charge after a turn both use this, so they count against one budget.
    """
    headers = Headers(scope=scope)
    credential = headers.get("x-api-key") or headers.get("authorization")
    if credential:
        return "c" + hashlib.sha256(credential.encode()).hexdigest()[:32]
    return principal_from_user_id(scope)


def rate_limit_headers(decision: RateLimitDecision) -> dict[str, str]:
    """``RateLimit-*`` in whole seconds, plus ``Retry-After`` (at least 1) on a refusal."""
    headers = {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(math.ceil(decision.reset_s)),
    }
    if not decision.allowed:
        headers["Retry-After"] = str(max(1, math.ceil(decision.retry_after_s)))
    return headers


async def check_tokens(limiter: RateLimiter, cfg: RateLimitConfig, principal: str) -> RateLimitDecision | None:
    """Refused while the principal's token budget is overdrawn; spends nothing. None when limits are off."""
    if not cfg.enabled:
        return None
    return await limiter.hit(f"tok:{principal}", cfg.tokens_per_minute, WINDOW_S, cost=0)


async def charge_tokens(
    limiter: RateLimiter, cfg: RateLimitConfig, principal: str, tokens: int
) -> RateLimitDecision | None:
    """Record a finished turn's LLM tokens; never refuses (a turn past the budget blocks the next ones).

    None when limits are off or nothing was used.
    """
    if not cfg.enabled or tokens <= 0:
        return None
    return await limiter.charge(f"tok:{principal}", cfg.tokens_per_minute, WINDOW_S, tokens)


class RateLimitMiddleware:
    """429 past a limit; ``RateLimit-*`` headers (the tightest request limit) on every non-exempt response.

    Args:
        app: The wrapped ASGI app.
        limiter: Where budgets are kept (in-process or Redis).
        config_provider: Read on every request, so a reconfigure applies to the next one.
        principal_of: The principal's id from the scope, None when unknown (then only the IP limit applies).
        ip_of: The client's address from the scope.
        exempt_paths: Never limited, no headers (health probes).
        token_paths: Path prefixes that spend LLM tokens (the token pre-check runs there).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: RateLimiter,
        config_provider: Callable[[], RateLimitConfig],
        principal_of: Callable[[Scope], str | None] = principal_from_user_id,
        ip_of: Callable[[Scope], str] = client_host,
        exempt_paths: Collection[str] = EXEMPT_PATHS,
        token_paths: tuple[str, ...] = TOKEN_PATH_PREFIXES,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.config_provider = config_provider
        self.principal_of = principal_of
        self.ip_of = ip_of
        self.exempt_paths = frozenset(exempt_paths)
        self.token_paths = token_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        cfg = self.config_provider()
        if not cfg.enabled:
            await self.app(scope, receive, send)
            return
        # NOTE: the IP goes first, so unauthenticated floods never reach per-principal state.
        shown = await self.limiter.hit(f"ip:{self.ip_of(scope)}", cfg.ip_requests_per_minute, WINDOW_S)
        if not shown.allowed:
            await _reject(scope, receive, send, shown, "too many requests from this address")
            return
        principal = self.principal_of(scope)
        if principal is not None:
            own = await self.limiter.hit(f"p:{principal}", cfg.requests_per_minute, WINDOW_S)
            if not own.allowed:
                await _reject(scope, receive, send, own, "too many requests")
                return
            shown = min(shown, own, key=lambda d: (d.remaining, d.limit))
            if scope["path"].startswith(self.token_paths):
                tokens = await check_tokens(self.limiter, cfg, principal)
                if tokens is not None and not tokens.allowed:
                    await _reject(scope, receive, send, tokens, "LLM token budget per minute used up")
                    return
        extra = rate_limit_headers(shown)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _reject(scope: Scope, receive: Receive, send: Send, decision: RateLimitDecision, message: str) -> None:
    if is_openai_path(scope):  # the OpenAI-compatible API answers in OpenAI's error shape
        content = ErrorResponse.build(429, message, code="rate_limited").model_dump()
    else:
        request_id = scope.get("state", {}).get("request_id")
        content = ErrorBody(error=ErrorDetail(type="rate_limited", message=message, request_id=request_id)).model_dump(
            exclude_none=True
        )
    response = JSONResponse(content, status_code=429, headers=rate_limit_headers(decision))
    await response(scope, receive, send)


async def charge_request_tokens(request: Request, tokens: int) -> None:
    """Count a finished turn's LLM tokens against the caller's per-minute budget.

    The key is the middleware's (``principal_key``), so the pre-check and the
    charge meet in one budget. Needs the app's ``rate_limiter`` and
    ``rate_limit_config`` on ``app.state`` (``create_app`` puts them there).
    """
    key = principal_key(request.scope)
    if key is not None and tokens > 0:
        state = request.app.state
        await charge_tokens(state.rate_limiter, state.rate_limit_config.get(), key, tokens)
