"""``AgentService`` in one process: the HTTP layer's tests and the benchmark baseline."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from agent.dto import ChatRequest, ChatResponse, Message, ToolInvocation, ToolResult, ToolSpec
from agent.errors import AgentError
from agent.events import AgentEvent
from agent.loop import Agent
from agent.ports import MemoryHit, MemoryItem, Page, Session, ToolExecutor
from agent.semantic import SemanticMemory
from serve_app.http.services import CheckResult


class InProcessAgentService:
    def __init__(self, agent: Agent, tools: ToolExecutor) -> None:
        self.agent = agent
        self.tools = tools

    async def chat(self, request: ChatRequest) -> ChatResponse:
        return await self.agent.chat(request)

    def stream(self, request: ChatRequest) -> AsyncIterator[AgentEvent]:
        return self.agent.stream(request)

    async def list_tools(self) -> list[ToolSpec]:
        return await self.tools.list_tools()

    async def execute_tool(self, invocation: ToolInvocation) -> ToolResult:
        return await self.tools.execute(invocation)

    async def list_sessions(self, user_id: str, limit: int, cursor: str | None) -> Page[Session]:
        return await self.agent.store.list_sessions(user_id, limit, cursor)

    async def get_session(self, session_id: str, user_id: str) -> Session:
        return await self.agent.store.get_session(session_id, user_id)

    async def list_messages(self, session_id: str, user_id: str, limit: int, cursor: str | None) -> Page[Message]:
        return await self.agent.store.list_messages(session_id, user_id, limit, cursor)

    async def delete_session(self, session_id: str, user_id: str) -> None:
        await self.agent.store.delete_session(session_id, user_id)
        if self.agent.memory is not None:
            await self.agent.memory.forget_session(user_id, session_id)

    def _memory(self) -> SemanticMemory:
        if self.agent.memory is None:
            raise AgentError("semantic memory is not configured")
        return self.agent.memory

    async def add_memory(self, user_id: str, text: str, session_id: str | None) -> MemoryItem:
        return await self._memory().remember(user_id, text, session_id, kind="note")

    async def search_memory(self, user_id: str, query: str, k: int) -> list[MemoryHit]:
        return await self._memory().recall(user_id, query, k)

    async def delete_memory(self, user_id: str, memory_id: str) -> None:
        await self._memory().forget(user_id, memory_id)

    async def health(self) -> dict[str, CheckResult]:
        started = time.perf_counter()
        try:
            await self.agent.llm.ping()
            return {"llm": CheckResult(ok=True, latency_ms=(time.perf_counter() - started) * 1000)}
        except Exception:
            return {
                "llm": CheckResult(ok=False, latency_ms=(time.perf_counter() - started) * 1000, error="unreachable")
            }
