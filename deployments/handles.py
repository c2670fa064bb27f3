"""Adapters from deployment handles to the core's ports and the HTTP layer's service.

NOTE: an exception raised in a replica reaches the caller wrapped in
``RayTaskError``; ``_unwrap`` gives back the core's own error so the HTTP
error table sees the same types in Ray and in one process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from ray.exceptions import RayTaskError
from ray.serve.handle import DeploymentHandle

from agent.dto import ChatRequest, ChatResponse, Message, ToolInvocation, ToolResult, ToolSpec
from agent.errors import AgentError
from agent.events import AgentEvent, ErrorEvent
from agent.ports import MemoryHit, MemoryItem, Page, Session
from serve_app.http.services import CheckResult

logger = logging.getLogger(__name__)


class _Methods:
    """One handle per method, made once: ``handle.<method>`` copies the handle's options on every access."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self.handle = handle
        self._methods: dict[str, DeploymentHandle] = {}

    def __getitem__(self, method: str) -> DeploymentHandle:
        found = self._methods.get(method)
        if found is None:
            found = self._methods[method] = getattr(self.handle, method)
        return found


def _unwrap(exc: BaseException) -> BaseException:
    cause = getattr(exc, "cause", None)
    if isinstance(exc, RayTaskError) and isinstance(cause, AgentError):
        return cause
    return exc


class HandleToolExecutor:
    """``ToolExecutor`` over a ToolExecutorDeployment handle."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self.handle = handle
        self._execute = handle.execute

    async def list_tools(self) -> list[ToolSpec]:
        specs: list[ToolSpec] = await self.handle.list_tools.remote()
        return specs

    async def execute(self, invocation: ToolInvocation) -> ToolResult:
        result: ToolResult = await self._execute.remote(invocation)
        return result


class EmbeddingDown(Exception):
    """The Embedding replica's own reason (``EmbeddingDeployment.check_health``'s words, no
    internals), kept as ``message`` for the health report."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class HandleEmbedder:
    """``Embedder`` over an EmbeddingDeployment handle."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self.handle = handle
        self._embed = handle.embed

    async def embed(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = await self._embed.remote(texts)
        return vectors

    async def ping(self) -> None:
        """An Embedding replica answers and its model can encode (``EmbeddingDeployment.ping``)."""
        try:
            await self.handle.ping.remote()
        except RayTaskError as exc:
            raise EmbeddingDown(str(exc.cause)) from None


class HandleAgentService:
    """The HTTP layer's ``AgentService`` over the Agent and ToolExecutor handles."""

    def __init__(self, agent: DeploymentHandle, tools: DeploymentHandle) -> None:
        self.agent = agent
        self.methods = _Methods(agent)
        self.stream_batches = agent.options(stream=True).stream_batches
        self.tools = HandleToolExecutor(tools)

    async def chat(self, request: ChatRequest) -> ChatResponse:
        response: ChatResponse = await self._call("chat", request)
        return response

    async def stream(self, request: ChatRequest) -> AsyncIterator[AgentEvent]:
        gen = self.stream_batches.remote(request)
        finished = False
        try:
            async for batch in gen:
                for event in batch:
                    yield event
            finished = True
        except RayTaskError as exc:
            err = _unwrap(exc)
            finished = True
            if isinstance(err, AgentError):
                yield ErrorEvent(error_type=err.code, message=err.message)
            else:
                logger.error("agent stream failed: %s", type(err).__name__)
                yield ErrorEvent(error_type="internal_error", message="internal error")
        finally:
            if not finished:
                # NOTE: the client went away: cancel the turn in the Agent replica too.
                gen.cancel()

    async def _call(self, method: str, *args: object) -> Any:
        try:
            return await self.methods[method].remote(*args)
        except RayTaskError as exc:
            raise _unwrap(exc) from None

    async def list_sessions(self, user_id: str, limit: int, cursor: str | None) -> Page[Session]:
        page: Page[Session] = await self._call("list_sessions", user_id, limit, cursor)
        return page

    async def get_session(self, session_id: str, user_id: str) -> Session:
        session: Session = await self._call("get_session", session_id, user_id)
        return session

    async def list_messages(self, session_id: str, user_id: str, limit: int, cursor: str | None) -> Page[Message]:
        page: Page[Message] = await self._call("list_messages", session_id, user_id, limit, cursor)
        return page

    async def delete_session(self, session_id: str, user_id: str) -> None:
        await self._call("delete_session", session_id, user_id)

    async def add_memory(self, user_id: str, text: str, session_id: str | None) -> MemoryItem:
        item: MemoryItem = await self._call("add_memory", user_id, text, session_id)
        return item

    async def search_memory(self, user_id: str, query: str, k: int) -> list[MemoryHit]:
        hits: list[MemoryHit] = await self._call("search_memory", user_id, query, k)
        return hits

    async def delete_memory(self, user_id: str, memory_id: str) -> None:
        await self._call("delete_memory", user_id, memory_id)

    async def list_tools(self) -> list[ToolSpec]:
        return await self.tools.list_tools()

    async def execute_tool(self, invocation: ToolInvocation) -> ToolResult:
        return await self.tools.execute(invocation)

    async def health(self) -> dict[str, CheckResult]:
        started = time.perf_counter()
        try:
            checks: dict[str, CheckResult] = await self.agent.health.remote()
        except Exception:
            return {
                "agent": CheckResult(
                    ok=False, latency_ms=(time.perf_counter() - started) * 1000, error="agent unreachable"
                )
            }
        checks["agent"] = CheckResult(ok=True, latency_ms=(time.perf_counter() - started) * 1000)
        return checks
