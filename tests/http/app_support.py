"""The whole HTTP app for the front-door tests: the real core, auth, limiter and logs, against the scripted LLM."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import jwt
from fastapi import FastAPI

from agent.config import AgentConfig
from agent.dto import utcnow
from agent.llm import LLMEndpoint, OpenAILLMClient
from agent.loop import Agent
from memory.in_memory import InMemoryConversationStore
from serve_app.auth.config import AuthSettings
from serve_app.http.app import create_app
from serve_app.inprocess import InProcessAgentService
from serve_app.ratelimit.config import LiveRateLimitConfig
from serve_app.ratelimit.limiter import RateLimiter
from tests.unit.auth.support import SECRET, make_settings
from tools import build_registry

UNLIMITED = {"requests_per_minute": 1_000_000, "ip_requests_per_minute": 1_000_000, "tokens_per_minute": 10**9}


def build_full_app(
    llm_base_url: str,
    *,
    auth: AuthSettings | None = None,
    store: InMemoryConversationStore | None = None,
    rate_limits: dict[str, Any] | None = None,
    limiter: RateLimiter | None = None,
    log_message_contents: bool = False,
) -> FastAPI:
    """``create_app`` around the real agent (built-in tools and ``sleep``), API keys in ``store``."""
    llm = OpenAILLMClient(LLMEndpoint(base_url=llm_base_url, model="scripted", max_retries=0))
    tools = build_registry(["tests.support.sample_tools:SleepTool"])
    store = store if store is not None else InMemoryConversationStore()
    agent = Agent(llm, tools, store, AgentConfig(tool_timeout_s=2, max_steps=3))
    return create_app(
        InProcessAgentService(agent, tools),
        auth=auth or make_settings(),
        key_store=store,
        rate_limiter=limiter,
        rate_limits=LiveRateLimitConfig(rate_limits if rate_limits is not None else UNLIMITED),
        log_message_contents=log_message_contents,
    )


def client_of(app: FastAPI, ip: str = "10.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def token(sub: str = "alice", scope: str = "chat", **extra: Any) -> str:
    """An HS256 token the test settings (``make_settings``) accept."""
    now = utcnow()
    claims = {"sub": sub, "scope": scope, "iat": now, "exp": now + timedelta(minutes=5), **extra}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}
