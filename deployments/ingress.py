"""IngressDeployment: the HTTP front door (FastAPI) and the Python callers' entry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from agent.dto import ChatRequest, ChatResponse
from agent.events import AgentEvent
from deployments.handles import HandleAgentService
from deployments.process import set_up_replica_process
from memory.factory import build_conversation_store
from serve_app.auth.config import AuthSettings
from serve_app.http.app import create_app
from serve_app.ratelimit.config import LiveRateLimitConfig
from serve_app.ratelimit.limiter import InProcessRateLimiter, RateLimiter, RedisRateLimiter
from serve_app.settings import Settings


@serve.ingress()
class IngressDeployment:
    """Serves the HTTP API; also answers ``chat``/``stream`` for app-handle callers.

    Args:
        agent: Handle to the AgentDeployment.
        tool_executor: Handle to the ToolExecutorDeployment (direct tool routes).
    """

    def __init__(self, agent: DeploymentHandle, tool_executor: DeploymentHandle) -> None:
        set_up_replica_process()
        self.service = HandleAgentService(agent, tool_executor)
        settings = Settings()
        # NOTE: a production config that refuses (placeholder secret, auth disabled)
        # fails the replica here, on purpose.
        self.auth = AuthSettings()
        self.cors_origins = settings.cors_origin_list
        database_url = settings.database_url.get_secret_value() if settings.database_url else None
        # API keys live in the conversation store; it migrates itself on first use.
        self.key_store = build_conversation_store(
            database_url, settings.agentserve_data_dir, pool_size=settings.database_pool_size
        )
        self.rate_limits = LiveRateLimitConfig()
        self.limiter: RateLimiter = (
            RedisRateLimiter(settings.redis_url.get_secret_value(), fail_open=self.rate_limits.get().fail_open)
            if settings.redis_url
            else InProcessRateLimiter()
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(
            self.service,
            rate_limiter=self.limiter,
            rate_limits=self.rate_limits,
            auth=self.auth,
            key_store=self.key_store,  # type: ignore[arg-type]
            cors_origins=self.cors_origins,
            echo_request_id=False,  # Serve's proxy adds X-Request-ID to every response
        )

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live settings: ``rate_limit`` (see ``RateLimitConfig``); invalid values change nothing."""
        cfg = self.rate_limits.update((user_config or {}).get("rate_limit", {}))
        if isinstance(self.limiter, RedisRateLimiter):
            self.limiter.fail_open = cfg.fail_open

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """``serve.get_app_handle("agentserve").chat.remote(ChatRequest(...))``."""
        return await self.service.chat(request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[AgentEvent]:
        async for event in self.service.stream(request):
            yield event
