"""AgentDeployment: the reasoning loop, reaching tools and embeddings through handles."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from ray.serve.handle import DeploymentHandle

from agent.config import AgentConfig
from agent.dto import ChatRequest, ChatResponse, Message, ToolSpec
from agent.errors import AgentError
from agent.events import AgentEvent, ErrorEvent
from agent.loop import Agent
from agent.ports import MemoryHit, MemoryItem, Page, Session
from agent.semantic import SemanticMemory
from deployments.handles import HandleEmbedder, HandleToolExecutor
from deployments.process import set_up_replica_process
from deployments.streaming import batched
from memory.factory import build_conversation_store
from memory.session_cache import CachedConversationStore, InProcessSessionCache, RedisSessionCache
from serve_app.args import AgentServeArgs
from serve_app.autoscaling import CPU_METRIC, CpuMeter
from serve_app.health_watch import DependencyWatch
from serve_app.http.services import CheckResult
from serve_app.observability.observer import MetricsObserver
from serve_app.settings import Settings

logger = logging.getLogger(__name__)

MEMORY_DRAIN_S = 10.0  # how long a stopping replica gives its queued memory writes
EMBEDDING_CHECK_S = 2.0  # the health report's wait for an Embedding replica (health)


async def _timed(name: str, coro: Any, required: bool = True) -> tuple[str, CheckResult]:
    started = time.perf_counter()
    try:
        await coro
        return name, CheckResult(ok=True, latency_ms=(time.perf_counter() - started) * 1000, required=required)
    except Exception as exc:
        error = getattr(exc, "message", None) or ("timed out" if isinstance(exc, TimeoutError) else type(exc).__name__)
        ms = (time.perf_counter() - started) * 1000
        return name, CheckResult(ok=False, latency_ms=ms, error=error, required=required)


class AgentDeployment:
    """Builds the core ``Agent`` from typed args and the environment's settings.

    Args:
        tool_executor: Handle to the ToolExecutorDeployment.
        embedder: Handle to the EmbeddingDeployment.
        args: ``AgentServeArgs`` (or its dict); ``user_config`` later overrides
            ``args.agent`` field by field through ``reconfigure``.
    """

    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self,
        tool_executor: DeploymentHandle,
        embedder: DeploymentHandle,
        args: AgentServeArgs | dict[str, Any] | None = None,
    ) -> None:
        # NOTE: imported here, not at the top: the controller's build task imports this
        # module to build the app, and openai + lancedb were ~1.4 s of its ~4 s of imports
        # on the path to ready (goal 5 of docs/benchmarks.md); only the replica needs them.
        from agent.llm import OpenAILLMClient
        from memory.lance_memory import LanceVectorMemory

        set_up_replica_process()
        self.args = AgentServeArgs.model_validate(args or {})
        settings = Settings()
        self.llm = OpenAILLMClient(self.args.llm.endpoint(settings))
        self.tools = HandleToolExecutor(tool_executor)
        self.embedder = HandleEmbedder(embedder)
        database_url = settings.database_url.get_secret_value() if settings.database_url else None
        redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
        self.store = CachedConversationStore(
            build_conversation_store(database_url, settings.agentserve_data_dir, pool_size=settings.database_pool_size),
            RedisSessionCache(redis_url) if redis_url else InProcessSessionCache(),
        )
        self._store_ready = False
        lance_uri = settings.lancedb_uri or os.path.join(settings.agentserve_data_dir, "lancedb")
        observer = MetricsObserver()
        vectors = LanceVectorMemory(lance_uri, cache_mb=settings.lancedb_cache_mb, observer=observer)
        self.memory = SemanticMemory(self.embedder, vectors, observer=observer)
        # NOTE: Serve replaces a replica whose check_health raises; only a long outage does.
        # AGENTSERVE_UNHEALTHY_AFTER_S: the grace for a replica that has been healthy; one
        # that never reached its store fails its first check (serve_app/health_watch.py).
        grace_s = float(os.environ.get("AGENTSERVE_UNHEALTHY_AFTER_S", "120"))
        self.watch = DependencyWatch(self._ready_and_ping, unhealthy_after_s=grace_s)
        self.agent = Agent(
            self.llm,
            self.tools,
            self.store,
            self.args.agent,
            context_window=self.args.llm.context_window,
            memory=self.memory,
            observer=observer,
        )
        # Migrations at start-up; a database that is down now is retried on first use,
        # so a replica starting during an outage still comes up (and answers 503).
        try:
            await asyncio.wait_for(self._ready(), timeout=30)
        except Exception as exc:
            logger.warning("store not ready at start-up (%s); retrying on first use", type(exc).__name__)
        # NOTE: made last: the start-up's imports must not read as load (a new replica
        # reporting a busy core would ask for the next one).
        self._cpu = CpuMeter()

    async def __del__(self) -> None:
        """Serve's graceful stop, after the last request: store the messages still queued."""
        # NOTE: bounded well inside graceful_shutdown_timeout_s (60 s in configs/), after
        # which Serve kills the replica; what is left is logged (SemanticMemory.close).
        memory: SemanticMemory | None = getattr(self, "memory", None)  # None: __init__ failed before it
        if memory is not None and not await memory.close(timeout_s=MEMORY_DRAIN_S):  # else it warned
            logger.info("graceful stop: every queued memory write stored")

    async def _ready(self) -> None:
        """Apply migrations once per replica; retried on the next call if the database was down."""
        if self._store_ready:
            return
        # NOTE: no lock here: concurrent first calls share one attempt inside the
        # store, so during an outage each waits one pool timeout, not N of them.
        await self.store.setup()
        await self.memory.store.setup()
        self._store_ready = True

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply live settings (system prompt, temperature, max_steps, ...) without a restart."""
        merged = {**self.args.agent.model_dump(), **(user_config or {})}
        self.agent.reconfigure(AgentConfig.model_validate(merged))

    def get_config(self) -> AgentConfig:
        return self.agent.config

    async def chat(self, request: ChatRequest) -> ChatResponse:
        await self._ready()
        return await self.agent.chat(request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[AgentEvent]:
        try:
            await self._ready()
        except AgentError as exc:
            yield ErrorEvent(error_type=exc.code, message=exc.message)
            return
        async for event in self.agent.stream(request):
            yield event

    async def stream_batches(self, request: ChatRequest) -> AsyncIterator[list[AgentEvent]]:
        """``stream`` with events coalesced per handle trip (what the Ingress uses)."""
        async for batch in batched(self.stream(request)):
            yield batch

    async def list_sessions(self, user_id: str, limit: int = 20, cursor: str | None = None) -> Page[Session]:
        await self._ready()
        return await self.store.list_sessions(user_id, limit, cursor)

    async def get_session(self, session_id: str, user_id: str) -> Session:
        await self._ready()
        return await self.store.get_session(session_id, user_id)

    async def list_messages(
        self, session_id: str, user_id: str, limit: int = 50, cursor: str | None = None
    ) -> Page[Message]:
        await self._ready()
        return await self.store.list_messages(session_id, user_id, limit, cursor)

    async def delete_session(self, session_id: str, user_id: str) -> None:
        await self._ready()
        await self.store.delete_session(session_id, user_id)
        await self.memory.forget_session(user_id, session_id)

    async def add_memory(self, user_id: str, text: str, session_id: str | None = None) -> MemoryItem:
        await self._ready()
        return await self.memory.remember(user_id, text, session_id, kind="note")

    async def search_memory(self, user_id: str, query: str, k: int = 5) -> list[MemoryHit]:
        await self._ready()
        return await self.memory.recall(user_id, query, k)

    async def delete_memory(self, user_id: str, memory_id: str) -> None:
        await self._ready()
        await self.memory.forget(user_id, memory_id)

    async def list_tools(self) -> list[ToolSpec]:
        return await self.agent.tool_specs()

    async def check_health(self) -> None:
        """Serve's replica health: fails after the store has been unreachable for two minutes."""
        await self.watch.verdict()

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve's custom autoscaling metric: the CPU this replica used (serve_app/autoscaling.py)."""
        return {CPU_METRIC: self._cpu.sample()}

    async def _ready_and_ping(self) -> None:
        await self._ready()
        await self.store.ping()

    async def health(self) -> dict[str, CheckResult]:
        # NOTE: side by side: the Ingress gives the whole report 5 s, and one slow check
        # must not make the others time out with it.
        results = await asyncio.gather(
            _timed("llm", self.llm.ping()),
            _timed("tools", self.tools.list_tools()),
            _timed("store", self._ready_and_ping()),
            # NOTE: not required: a turn goes on without its memories (a failed recall is
            # logged and counted). Bounded: a call waits while no Embedding replica is up
            # (one starting, or being replaced).
            _timed("embedding", asyncio.wait_for(self.embedder.ping(), EMBEDDING_CHECK_S), required=False),
        )
        return dict(results)
