"""Rate limits at the HTTP edge: per client IP, per principal, and the principal's LLM tokens.

A pure ASGI middleware (as ``RequestIdMiddleware``: nothing is buffered, SSE
passes through). Per request, ONE decision over every bucket that applies,
in one atomic limiter call (one Redis round trip): the client IP's request
limit (``ip:<host>``), the authenticated principal's request limit
(``p:<id>``) and, on chat paths, the principal's token budget (``tok:<id>``,
a pre-check that spends nothing). Admitted only if all admit; a refusal spends
from none and answers 429 with ``Retry-After``.

The principal is the authenticated one (JWT subject, API key owner), so one
principal with two keys and a token has one budget. The middleware
authenticates (the result is kept on the request, so the route's auth
dependency does not check the credential again); a request whose credential
fails counts against its address only. An address refused once is refused
again from this replica's memory, before any authentication work, until its
``Retry-After`` has passed: a flood of bad credentials costs neither a key
lookup nor a Redis call. Chat routes charge a finished turn's tokens with
``charge_request_tokens``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Awaitable, Callable, Collection

from starlette.datastructures import Headers, MutableHeaders, QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.dto import ID_PATTERN
from agent.errors import AgentError
from serve_app.auth.deps import get_authenticator
from serve_app.http.errors import ErrorBody, ErrorDetail
from serve_app.http.identity import Principal
from serve_app.http.openai_compat.protocol import ErrorResponse, is_openai_path
from serve_app.ratelimit.config import RateLimitConfig
from serve_app.ratelimit.limiter import Bucket, RateLimitDecision, RateLimiter

WINDOW_S = 60.0
EXEMPT_PATHS = frozenset({"/live", "/ready", "/health"})
TOKEN_PATH_PREFIXES = ("/api/chat", "/v1/chat")
REFUSED_ADDRESSES_KEPT = 10_000
_KEY = "rate_limit_key"  # request.state: the principal's budget key the middleware used

_ID = re.compile(ID_PATTERN)


def client_host(scope: Scope) -> str:
    """The peer address as the server saw it (behind a proxy, pass an ``ip_of`` that trusts it)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def principal_from_user_id(scope: Scope) -> str | None:
    """The development principal as ``get_principal`` reads it: ``user_id`` query, else ``X-User-ID``."""
    user = QueryParams(scope.get("query_string", b"")).get("user_id") or Headers(scope=scope).get("x-user-id")
    return user if user is not None and _ID.match(user) else None


def rate_limit_identity(principal: Principal, scope: Scope) -> str:
    """The principal's budget key: its id (JWT subject, API key owner, development user).

    The anonymous caller of development mode is one per address (``anonymous@<ip>``).
    """
    return f"anonymous@{client_host(scope)}" if principal.kind == "anonymous" else principal.id


async def authenticated_principal(scope: Scope) -> str | None:
    """The rate-limit identity of a request: its authenticated principal, None when it has none.

    Authenticates with the app's authenticator (``install_auth``); the outcome is
    kept on the request for the route's dependency. A credential that fails
    (401 later) or a bad ``user_id`` (422 later) leaves the address limit alone.
    """
    request = Request(scope)
    try:
        principal = await get_authenticator(request).principal_of(request)
    except AgentError:
        return None
    return rate_limit_identity(principal, scope)


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


async def charge_tokens(
    limiter: RateLimiter, cfg: RateLimitConfig, principal: str, tokens: int
) -> RateLimitDecision | None:
    """Record a finished turn's LLM tokens; never refuses (a turn past the budget blocks the next ones).

    None when limits are off or nothing was used.
    """
    if not cfg.enabled or tokens <= 0:
        return None
    return await limiter.charge(f"tok:{principal}", cfg.tokens_per_minute, WINDOW_S, tokens)


class RefusedAddresses:
    """Addresses this replica saw refused, until their refusal ends: refused again without asking anyone.

    Sound because a GCRA refusal lasts: the bucket's TAT only grows until time
    passes it, so a request before ``Retry-After`` would be refused anyway (for
    the same limit; another limit asks the limiter again).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, keep: int = REFUSED_ADDRESSES_KEPT) -> None:
        self._clock = clock
        self._keep = keep
        self._until: dict[str, tuple[float, float, int]] = {}  # ip -> (retry at, reset at, limit)

    def refusal(self, ip: str, limit: int) -> RateLimitDecision | None:
        found = self._until.get(ip)
        now = self._clock()
        if found is None or found[0] <= now or found[2] != limit:
            return None
        return RateLimitDecision(False, limit, 0, max(0.0, found[1] - now), found[0] - now)

    def remember(self, ip: str, decision: RateLimitDecision) -> None:
        now = self._clock()
        if len(self._until) >= self._keep:
            self._until = {k: v for k, v in self._until.items() if v[0] > now}
            if len(self._until) >= self._keep:
                self._until.clear()  # forgetting costs one more limiter call per address, nothing else
        self._until[ip] = (now + decision.retry_after_s, now + decision.reset_s, decision.limit)


class RateLimitMiddleware:
    """429 past a limit; ``RateLimit-*`` headers (the tightest request limit) on every non-exempt response.

    Args:
        app: The wrapped ASGI app.
        limiter: Where budgets are kept (in-process or Redis).
        config_provider: Read on every request, so a reconfigure applies to the next one.
        principal_of: The principal's budget key from the scope, None when unknown (then only the IP limit
            applies); ``authenticated_principal`` in the app.
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
        principal_of: Callable[[Scope], Awaitable[str | None]] = principal_from_user_id,
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
        self.refused = RefusedAddresses()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        cfg = self.config_provider()
        if not cfg.enabled:
            await self.app(scope, receive, send)
            return
        ip = self.ip_of(scope)
        # NOTE: before authentication, so a refused address costs no credential check.
        if (known := self.refused.refusal(ip, cfg.ip_requests_per_minute)) is not None:
            await _reject(scope, receive, send, known, "too many requests from this address")
            return
        buckets = [Bucket(f"ip:{ip}", cfg.ip_requests_per_minute, WINDOW_S)]
        messages = ["too many requests from this address"]
        principal = await self.principal_of(scope)
        if principal is not None:
            scope.setdefault("state", {})[_KEY] = principal  # the token charge after the turn uses it
            buckets.append(Bucket(f"p:{principal}", cfg.requests_per_minute, WINDOW_S))
            messages.append("too many requests")
            if scope["path"].startswith(self.token_paths):
                buckets.append(Bucket(f"tok:{principal}", cfg.tokens_per_minute, WINDOW_S, cost=0))
                messages.append("LLM token budget per minute used up")
        decisions = await self.limiter.hit_all(buckets)
        refused = [(d, m) for d, m in zip(decisions, messages, strict=True) if not d.allowed]
        if refused:
            # The refusal that lasts longest is when the request would fit.
            decision, message = max(refused, key=lambda r: r[0].retry_after_s)
            if not decisions[0].allowed:
                self.refused.remember(ip, decisions[0])
            await _reject(scope, receive, send, decision, message)
            return
        shown = min(decisions[:2], key=lambda d: (d.remaining, d.limit))  # the request limits, not tokens
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

    The key is the one the middleware's pre-check used (the authenticated
    principal's), so the two meet in one budget. Needs the app's ``rate_limiter``
    and ``rate_limit_config`` on ``app.state`` (``create_app`` puts them there).
    """
    key = getattr(request.state, _KEY, None)
    if isinstance(key, str) and tokens > 0:
        state = request.app.state
        await charge_tokens(state.rate_limiter, state.rate_limit_config.get(), key, tokens)
