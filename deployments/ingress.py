"""IngressDeployment: the HTTP front door (FastAPI) and the Python callers' entry."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from agent.dto import ChatRequest, ChatResponse
from agent.events import AgentEvent
from deployments.handles import HandleAgentService
from serve_app.http.app import create_app


@serve.ingress()
class IngressDeployment:
    """Serves the HTTP API; also answers ``chat``/``stream`` for app-handle callers.

    Args:
        agent: Handle to the AgentDeployment.
        tool_executor: Handle to the ToolExecutorDeployment (direct tool routes).
    """

    def __init__(self, agent: DeploymentHandle, tool_executor: DeploymentHandle) -> None:
        self.service = HandleAgentService(agent, tool_executor)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(self.service)

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """``serve.get_app_handle("agentserve").chat.remote(ChatRequest(...))``."""
        return await self.service.chat(request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[AgentEvent]:
        async for event in self.service.stream(request):
            yield event
