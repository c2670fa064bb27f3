"""The reasoning loop: LLM ⇄ tools until the model answers or steps run out."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from typing import Literal

from agent.config import AgentConfig
from agent.context import ApproxTokenCounter, TokenCounter, fit_to_budget
from agent.dto import (
    ChatRequest,
    ChatResponse,
    Message,
    Role,
    ToolCall,
    ToolCallRecord,
    ToolErrorKind,
    ToolInvocation,
    ToolResult,
    ToolSpec,
    Usage,
)
from agent.errors import AgentError, ConflictError, InvalidRequestError, NotFoundError
from agent.events import (
    AgentEvent,
    DoneEvent,
    ErrorEvent,
    MessageEvent,
    TokenEvent,
    ToolCallEvent,
    ToolResultEvent,
)
from agent.ports import (
    ConversationStore,
    LLMClient,
    LLMParams,
    LLMResult,
    LLMTextDelta,
    MemoryHit,
    Observer,
    ToolExecutor,
    TurnRecord,
)
from agent.semantic import MEMORY_SEARCH_TOOL, SemanticMemory, format_memories

logger = logging.getLogger(__name__)

MAX_STEPS_MESSAGE = (
    "I could not finish this within {steps} reasoning steps, so I stopped here. Try asking a narrower question."
)


@dataclass
class _Turn:
    """What one turn accumulates on its way."""

    records: dict[str, ToolCallRecord] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    response: ChatResponse | None = None
    message_vector: list[float] | None = None  # the user message's embedding, once per turn


class Agent:
    """One agent: a system prompt, an LLM, tools and a conversation store.

    Args:
        llm: The chat model.
        tools: Where tool calls run (in-process registry or a deployment handle).
        store: The conversation store; a turn's messages (the request's
            ``history`` that starts a session, user message, tool calls and
            results, reply) are stored in one transaction before the turn
            reports ``done``; a failed turn stores nothing.
        config: Live-changeable behaviour; replace it with ``reconfigure``.
        context_window: The model's context in tokens; history is cut to fit
            it, less ``max_tokens`` for the reply.
        token_counter: How tokens are counted (an approximation by default).
        memory: Semantic memory: recalled before each turn, the user's message
            remembered after it, and searchable by the LLM (``memory_search``).
        observer: Told about every LLM and tool call (metrics); None by default.
    """

    def __init__(
        self,
        llm: LLMClient,
        tools: ToolExecutor,
        store: ConversationStore,
        config: AgentConfig | None = None,
        *,
        context_window: int = 8192,
        token_counter: TokenCounter | None = None,
        memory: SemanticMemory | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.llm = llm
        self.observer = observer
        self.model_name = str(getattr(llm, "model", type(llm).__name__))
        self.memory = memory
        self.context_window = context_window
        self.token_counter = token_counter or ApproxTokenCounter()
        self.tools = tools
        self.store = store
        self.config = config or AgentConfig()
        self._tool_specs: list[ToolSpec] | None = None

    def reconfigure(self, config: AgentConfig) -> None:
        self.config = config

    async def tool_specs(self, denied: Collection[str] = ()) -> list[ToolSpec]:
        """The tools offered to the LLM: the agent's allow-list, less those ``denied`` to this turn's caller."""
        if self._tool_specs is None:
            specs = await self.tools.list_tools()
            if self.memory is not None:
                specs = [*specs, MEMORY_SEARCH_TOOL]
            self._tool_specs = specs
        return [t for t in self._tool_specs if self._may_use(t.name, denied)]

    def _may_use(self, name: str, denied: Collection[str]) -> bool:
        allowed = self.config.allowed_tools
        return (allowed is None or name in allowed) and name not in denied

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """Run one turn to the end and return the reply.

        Raises:
            AgentError: the turn failed; nothing of it was stored.
        """
        turn = _Turn()
        async for _ in self._turn(request, turn):
            pass
        assert turn.response is not None
        return turn.response

    async def stream(self, request: ChatRequest) -> AsyncIterator[AgentEvent]:
        """Run one turn, yielding its events; a failure ends it with ``ErrorEvent``.

        Closing the generator (a client that went away) cancels the turn: no
        further LLM or tool call is made for it, and nothing of it is stored.
        """
        try:
            async for event in self._turn(request, _Turn()):
                yield event
        except AgentError as exc:
            yield ErrorEvent(error_type=exc.code, message=exc.message)
        except Exception:
            logger.exception("agent turn failed")
            yield ErrorEvent(error_type="internal_error", message="internal error")

    async def _turn(self, request: ChatRequest, turn: _Turn) -> AsyncIterator[AgentEvent]:
        # NOTE: the recall (an embedding, then a vector search) needs only the user and
        # the message, so it runs while the session and its history are read: behind
        # Serve the embedding is a hop to another replica, hidden this way.
        recall = self._start_recall(request.user, request.message, request.session_id, turn)
        try:
            async for event in self._turn_with(request, turn, recall):
                yield event
        finally:
            if recall is not None and not recall.done():
                recall.cancel()

    async def _turn_with(
        self, request: ChatRequest, turn: _Turn, recall: asyncio.Task[list[MemoryHit] | None] | None
    ) -> AsyncIterator[AgentEvent]:
        cfg = self.config
        user = request.user
        session = await self.store.get_or_create_session(request.session_id, user)
        key = request.idempotency_key
        if key and (prior := await self.store.find_turn(user, key)) is not None:
            async for event in self._replay(prior.response, turn):
                yield event
            return

        stored = await self.store.history(session.id, cfg.history_limit) if cfg.history_limit else []
        seed = await self._seed(session.id, request, stored)
        history = [*stored, *seed][-cfg.history_limit :] if cfg.history_limit else []  # one of them is empty
        user_msg = Message(role=Role.USER, content=request.message)
        system = Message(role=Role.SYSTEM, content=await self._system_prompt(session.id, recall))
        budget = max(self.context_window - (cfg.max_tokens or 0), 1)
        messages = fit_to_budget(system, history, [user_msg], budget, self.token_counter)
        denied = frozenset(request.denied_tools)
        specs = await self.tool_specs(denied)
        params = LLMParams(temperature=cfg.temperature, max_tokens=cfg.max_tokens)
        pending: list[Message] = [*seed, user_msg]

        for step in range(1, cfg.max_steps + 1):
            result: LLMResult | None = None
            async for item in self._llm_stream(messages, specs, params):
                if isinstance(item, LLMResult):
                    result = item
                elif item.text:
                    yield TokenEvent(text=item.text)
            assert result is not None, "LLMClient.stream_chat must end with an LLMResult"
            turn.usage = turn.usage + result.usage

            if not result.tool_calls:
                reply = Message(role=Role.ASSISTANT, content=result.content, usage=result.usage)
                async for event in self._finish(session.id, request, pending, reply, step, "stop", turn):
                    yield event
                return

            call_msg = Message(
                role=Role.ASSISTANT,
                content=result.content or None,
                tool_calls=result.tool_calls,
                usage=result.usage,
            )
            for call in result.tool_calls:
                turn.records[call.id] = ToolCallRecord(id=call.id, name=call.name, arguments=call.arguments)
                yield ToolCallEvent(id=call.id, name=call.name, arguments=call.arguments)
            tool_results = await self._run_tools(result.tool_calls, cfg.tool_timeout_s, user, denied)
            tool_msgs = [
                Message(role=Role.TOOL, content=r.content, tool_call_id=r.call_id, name=r.name) for r in tool_results
            ]
            pending.extend([call_msg, *tool_msgs])
            messages.extend([call_msg, *tool_msgs])
            for r in tool_results:
                if r.call_id in turn.records:
                    turn.records[r.call_id].result = r.content
                    turn.records[r.call_id].is_error = r.is_error
                yield ToolResultEvent(id=r.call_id, name=r.name, content=r.content, is_error=r.is_error)

        text = MAX_STEPS_MESSAGE.format(steps=cfg.max_steps)
        yield TokenEvent(text=text)
        reply = Message(role=Role.ASSISTANT, content=text)
        async for event in self._finish(session.id, request, pending, reply, cfg.max_steps, "max_steps", turn):
            yield event

    async def _seed(self, session_id: str, request: ChatRequest, stored: list[Message]) -> list[Message]:
        """``request.history`` as the messages to store before the turn's own.

        Raises:
            InvalidRequestError: (``history``) the session has stored messages already.
        """
        if not request.history:
            return []
        if stored or (not self.config.history_limit and await self.store.history(session_id, 1)):
            raise InvalidRequestError(
                "the session has stored messages already; send history only to start a session", field="history"
            )
        return [Message(role=Role(m.role), content=m.content) for m in request.history]

    async def _finish(
        self,
        session_id: str,
        request: ChatRequest,
        pending: list[Message],
        reply: Message,
        steps: int,
        finish_reason: Literal["stop", "max_steps"],
        turn: _Turn,
    ) -> AsyncIterator[AgentEvent]:
        """Store the whole turn in one transaction, then report it."""
        response = ChatResponse(
            response=reply.content or "",
            session_id=session_id,
            message_id=reply.id,
            tool_calls=list(turn.records.values()),
            usage=turn.usage,
            finish_reason=finish_reason,
        )
        record = None
        if request.idempotency_key:
            record = TurnRecord(
                user_id=request.user,
                idempotency_key=request.idempotency_key,
                session_id=session_id,
                response=response,
            )
        try:
            # NOTE: durable before acknowledged: the reply is only reported once stored.
            await self.store.append(session_id, [*pending, reply], turn=record)
        except ConflictError:
            # A concurrent retry with the same key finished first: answer with its reply.
            prior = await self.store.find_turn(request.user, request.idempotency_key or "")
            if prior is None:
                raise
            async for event in self._replay(prior.response, turn):
                yield event
            return
        turn.response = response
        if self.memory is not None and self.config.remember_messages:
            # NOTE: queued, not written: the reply does not wait for the vector store
            # (behind Serve the write overlaps the reply's hops back); reads of this
            # user's memory wait for it (SemanticMemory). Only a full queue waits here.
            try:
                async with asyncio.timeout(self.config.memory_timeout_s):
                    await self.memory.remember_later(
                        request.user,
                        request.message,
                        session_id,
                        turn.message_vector,
                        keep=functools.partial(self._session_stored, session_id, request.user),
                    )
            except Exception as exc:  # memory is an aid: a failure never fails the turn
                self.memory.warn("remember", exc)
        yield MessageEvent(message_id=reply.id, content=response.response)
        yield DoneEvent(
            session_id=session_id,
            message_id=reply.id,
            usage=turn.usage,
            steps=steps,
            finish_reason=finish_reason,
        )

    async def _session_stored(self, session_id: str, user: str) -> bool:
        """Whether the session is still stored (a memory write that lands after its deletion is undone)."""
        try:
            await self.store.get_session(session_id, user)
        except NotFoundError:
            return False
        return True

    async def _replay(self, response: ChatResponse, turn: _Turn) -> AsyncIterator[AgentEvent]:
        turn.response = response
        yield MessageEvent(message_id=response.message_id, content=response.response)
        yield DoneEvent(
            session_id=response.session_id,
            message_id=response.message_id,
            usage=response.usage,
            steps=0,
            finish_reason="max_steps" if response.finish_reason == "max_steps" else "stop",
        )

    def _start_recall(
        self, user: str, message: str, session_id: str | None, turn: _Turn
    ) -> asyncio.Task[list[MemoryHit] | None] | None:
        if self.memory is None or self.config.memory_top_k == 0:
            return None
        return asyncio.ensure_future(self._recall(self.memory, user, message, session_id, turn))

    async def _recall(
        self, memory: SemanticMemory, user: str, message: str, session_id: str | None, turn: _Turn
    ) -> list[MemoryHit] | None:
        """The memories for this turn's message, or None when memory failed (logged; the turn goes on)."""
        k = self.config.memory_top_k + 5
        started = time.perf_counter()
        hits: list[MemoryHit] | None = None
        try:
            async with asyncio.timeout(self.config.memory_timeout_s):  # a stuck Embedding must not hold the turn
                # The session's own hits are dropped (_system_prompt): its queued writes need no wait.
                hits, turn.message_vector = await memory.recall_with_vector(user, message, k, except_session=session_id)
            outcome = "ok"
        except Exception as exc:  # a cancelled turn (CancelledError) is not reported
            outcome = "timeout" if isinstance(exc, TimeoutError) else "error"
            memory.warn("recall", exc)
        if self.observer is not None:
            self.observer.on_memory_recall(outcome, time.perf_counter() - started)
        return hits

    async def _system_prompt(self, session_id: str, recall: asyncio.Task[list[MemoryHit] | None] | None) -> str:
        prompt = self.config.system_prompt
        hits = await recall if recall is not None else None
        if not hits:
            return prompt
        # The current session is in the history already; recall the others.
        hits = [h for h in hits if h.item.session_id != session_id and h.score >= self.config.memory_min_score]
        hits = hits[: self.config.memory_top_k]
        return f"{prompt}\n\n{format_memories(hits)}" if hits else prompt

    async def _llm_stream(
        self, messages: list[Message], specs: list[ToolSpec], params: LLMParams
    ) -> AsyncIterator[LLMTextDelta | LLMResult]:
        """``llm.stream_chat``, reported to the observer (a cancelled call is not reported)."""
        if self.observer is None:
            async for item in self.llm.stream_chat(messages, specs, params):
                yield item
            return
        started, ttft = time.perf_counter(), None
        usage = Usage()
        try:
            async for item in self.llm.stream_chat(messages, specs, params):
                if isinstance(item, LLMResult):
                    usage = item.usage
                elif item.text and ttft is None:
                    ttft = time.perf_counter() - started
                yield item
        except Exception:
            self.observer.on_llm_call(self.model_name, False, ttft, time.perf_counter() - started, 0, 0)
            raise
        duration = time.perf_counter() - started
        self.observer.on_llm_call(self.model_name, True, ttft, duration, usage.prompt_tokens, usage.completion_tokens)

    async def _run_tools(
        self, calls: list[ToolCall], timeout_s: float, user: str, denied: Collection[str]
    ) -> list[ToolResult]:
        """Run one step's calls concurrently, each under its own timeout."""
        return list(await asyncio.gather(*(self._observed_tool(c, timeout_s, user, denied) for c in calls)))

    async def _observed_tool(self, call: ToolCall, timeout_s: float, user: str, denied: Collection[str]) -> ToolResult:
        started = time.perf_counter()
        result = await self._run_tool(call, timeout_s, user, denied)
        if self.observer is not None:
            outcome = str(result.error_kind or ToolErrorKind.FAILED) if result.is_error else "ok"
            self.observer.on_tool_call(call.name, outcome, time.perf_counter() - started)
        return result

    async def _memory_search(self, call: ToolCall, user: str) -> ToolResult:
        assert self.memory is not None
        try:
            args = json.loads(call.arguments or "{}")
            query, k = str(args["query"]), int(args.get("k", 5))
        except (ValueError, KeyError, TypeError):
            return ToolResult(
                call_id=call.id, name=call.name, is_error=True, error_kind=ToolErrorKind.INVALID_ARGUMENTS,
                content="invalid arguments: query (string, required), k (integer 1-20)",
            )  # fmt: skip
        hits = await self.memory.recall(user, query, max(1, min(k, 20)))
        payload = [
            {"text": h.item.text, "score": round(h.score, 3), "created_at": h.item.created_at.isoformat()} for h in hits
        ]
        return ToolResult(call_id=call.id, name=call.name, content=json.dumps(payload))

    async def _run_tool(
        self, call: ToolCall, timeout_s: float, user: str = "anonymous", denied: Collection[str] = ()
    ) -> ToolResult:
        """One call, allow-listed, under its timeout, its output bounded before the LLM sees it."""
        # NOTE: checked again here: a model may call a tool it was not offered.
        if not self._may_use(call.name, denied):
            return ToolResult(call_id=call.id, name=call.name, is_error=True, error_kind=ToolErrorKind.NOT_FOUND,
                              content=f"tool '{call.name}' is not available to this agent")  # fmt: skip
        result = await self._run_tool_unbounded(call, timeout_s, user)
        limit = self.config.max_tool_output_chars
        if len(result.content) > limit:
            cut = len(result.content) - limit
            result = result.model_copy(update={"content": result.content[:limit] + f"\n[... {cut} characters cut]"})
        return result

    async def _run_tool_unbounded(self, call: ToolCall, timeout_s: float, user: str) -> ToolResult:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                if call.name == MEMORY_SEARCH_TOOL.name and self.memory is not None:
                    return await self._memory_search(call, user)
                return await self.tools.execute(
                    ToolInvocation(name=call.name, arguments=call.arguments, call_id=call.id)
                )
        except TimeoutError:
            kind, text = ToolErrorKind.TIMEOUT, f"tool '{call.name}' timed out after {timeout_s:g}s"
        except AgentError as exc:
            kind, text = ToolErrorKind.FAILED, exc.message
        except Exception:
            logger.exception("tool %s failed", call.name)
            kind, text = ToolErrorKind.INTERNAL, f"tool '{call.name}' failed unexpectedly"
        return ToolResult(
            call_id=call.id,
            name=call.name,
            content=text,
            is_error=True,
            error_kind=kind,
            duration_ms=(time.perf_counter() - started) * 1000,
        )
