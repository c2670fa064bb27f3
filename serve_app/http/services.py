"""What the HTTP layer needs from the rest of the platform.

The Ingress deployment implements ``AgentService`` with deployment handles;
``serve_app.inprocess`` implements it in one process (tests, the benchmark
baseline). Routes know nothing else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from pydantic import BaseModel

from agent.dto import ChatRequest, ChatResponse, Message, ToolInvocation, ToolResult, ToolSpec
from agent.events import AgentEvent
from agent.ports import MemoryHit, MemoryItem, Page, Session


class CheckResult(BaseModel):
    ok: bool
    latency_ms: float
    error: str | None = None
    # False for what turns go on without (the Embedding: a turn goes on without its
    # memories): /ready ignores it, /health reports it and says "degraded".
    required: bool = True


class AgentService(Protocol):
    async def chat(self, request: ChatRequest) -> ChatResponse:
        """Run one turn. Raises the core's ``AgentError`` subclasses."""
        ...

    def stream(self, request: ChatRequest) -> AsyncIterator[AgentEvent]:
        """Run one turn as events; failures arrive as a final ``ErrorEvent``."""
        ...

    async def list_tools(self) -> list[ToolSpec]: ...

    async def execute_tool(self, invocation: ToolInvocation) -> ToolResult: ...

    async def list_sessions(self, user_id: str, limit: int, cursor: str | None) -> Page[Session]: ...

    async def get_session(self, session_id: str, user_id: str) -> Session: ...

    async def list_messages(self, session_id: str, user_id: str, limit: int, cursor: str | None) -> Page[Message]: ...

    async def delete_session(self, session_id: str, user_id: str) -> None: ...

    async def add_memory(self, user_id: str, text: str, session_id: str | None) -> MemoryItem: ...

    async def search_memory(self, user_id: str, query: str, k: int) -> list[MemoryHit]: ...

    async def delete_memory(self, user_id: str, memory_id: str) -> None: ...

    async def health(self) -> dict[str, CheckResult]:
        """Each dependency's check, by name."""
        ...
