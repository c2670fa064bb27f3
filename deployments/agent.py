"""AgentDeployment: the reasoning loop, reaching tools and embeddings through handles."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from ray.serve.handle import DeploymentHandle

from agent.config import AgentConfig
from agent.dto import ChatRequest, ChatResponse, ToolSpec
from agent.events import AgentEvent
from agent.llm import OpenAILLMClient
from agent.loop import Agent
from deployments.handles import HandleEmbedder, HandleToolExecutor
from memory.in_memory import InMemoryConversationStore
from serve_app.args import AgentServeArgs
from serve_app.http.services import CheckResult
from serve_app.settings import Settings


async def _timed(name: str, coro: Any) -> tuple[str, CheckResult]:
    started = time.perf_counter()
    try:
        await coro
        return name, CheckResult(ok=True, latency_ms=(time.perf_counter() - started) * 1000)
    except Exception as exc:
        error = getattr(exc, "message", None) or type(exc).__name__
        return name, CheckResult(ok=False, latency_ms=(time.perf_counter() - started) * 1000, error=error)


class AgentDeployment:
    """Builds the core ``Agent`` from typed args and the environment's settings.

    Args:
        tool_executor: Handle to the ToolExecutorDeployment.
        embedder: Handle to the EmbeddingDeployment.
        args: ``AgentServeArgs`` (or its dict); ``user_config`` later overrides
            ``args.agent`` field by field through ``reconfigure``.
    """

    def __init__(
        self,
        tool_executor: DeploymentHandle,
        embedder: DeploymentHandle,
        args: AgentServeArgs | dict[str, Any] | None = None,
    ) -> None:
        self.args = AgentServeArgs.model_validate(args or {})
        self.llm = OpenAILLMClient(self.args.llm.endpoint(Settings()))
        self.tools = HandleToolExecutor(tool_executor)
        self.embedder = HandleEmbedder(embedder)
        self.agent = Agent(self.llm, self.tools, InMemoryConversationStore(), self.args.agent)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply live settings (system prompt, temperature, max_steps, ...) without a restart."""
        merged = {**self.args.agent.model_dump(), **(user_config or {})}
        self.agent.reconfigure(AgentConfig.model_validate(merged))

    def get_config(self) -> AgentConfig:
        return self.agent.config

    async def chat(self, request: ChatRequest) -> ChatResponse:
        return await self.agent.chat(request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[AgentEvent]:
        async for event in self.agent.stream(request):
            yield event

    async def list_tools(self) -> list[ToolSpec]:
        return await self.agent.tool_specs()

    async def health(self) -> dict[str, CheckResult]:
        results = [
            await _timed("llm", self.llm.ping()),
            await _timed("tools", self.tools.list_tools()),
        ]
        return dict(results)
