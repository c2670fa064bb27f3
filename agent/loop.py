"""The reasoning loop: LLM ⇄ tools until the model answers or steps run out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from agent.config import AgentConfig
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
from agent.errors import AgentError
from agent.events import (
    AgentEvent,
    DoneEvent,
    ErrorEvent,
    MessageEvent,
    TokenEvent,
    ToolCallEvent,
    ToolResultEvent,
)
from agent.ports import ConversationStore, LLMClient, LLMParams, LLMResult, ToolExecutor

logger = logging.getLogger(__name__)

MAX_STEPS_MESSAGE = (
    "I could not finish this within {steps} reasoning steps, so I stopped here. "
    "Try asking a narrower question."
)


def start_at_user_turn(history: list[Message]) -> list[Message]:
    """Drop leading messages until a user message, so no tool result loses its call."""
    for i, m in enumerate(history):
        if m.role is Role.USER:
            return history[i:]
    return []


class Agent:
    """One agent: a system prompt, an LLM, tools and a conversation store.

    Args:
        llm: The chat model.
        tools: Where tool calls run (in-process registry or a deployment handle).
        store: The conversation store; the user message is stored before the
            LLM is called and the reply before the turn reports ``done``.
        config: Live-changeable behaviour; replace it with ``reconfigure``.
    """

    def __init__(
        self,
        llm: LLMClient,
        tools: ToolExecutor,
        store: ConversationStore,
        config: AgentConfig | None = None,
    ) -> None:
        self.llm = llm
        self.tools = tools
        self.store = store
        self.config = config or AgentConfig()
        self._tool_specs: list[ToolSpec] | None = None

    def reconfigure(self, config: AgentConfig) -> None:
        self.config = config

    async def tool_specs(self) -> list[ToolSpec]:
        if self._tool_specs is None:
            self._tool_specs = await self.tools.list_tools()
        return self._tool_specs

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """Run one turn to the end and return the reply.

        Raises:
            AgentError: the turn failed; nothing after the failure was stored.
        """
        records: dict[str, ToolCallRecord] = {}
        answer: MessageEvent | None = None
        async for event in self._turn(request):
            if isinstance(event, ToolCallEvent):
                records[event.id] = ToolCallRecord(id=event.id, name=event.name, arguments=event.arguments)
            elif isinstance(event, ToolResultEvent) and event.id in records:
                records[event.id].result = event.content
                records[event.id].is_error = event.is_error
            elif isinstance(event, MessageEvent):
                answer = event
            elif isinstance(event, DoneEvent):
                assert answer is not None
                return ChatResponse(
                    response=answer.content,
                    session_id=event.session_id,
                    message_id=event.message_id,
                    tool_calls=list(records.values()),
                    usage=event.usage,
                    finish_reason=event.finish_reason,
                )
        raise AgentError("the turn ended without an answer")  # pragma: no cover

    async def stream(self, request: ChatRequest) -> AsyncIterator[AgentEvent]:
        """Run one turn, yielding its events; a failure ends it with ``ErrorEvent``.

        Closing the generator (a client that went away) cancels the turn: no
        further LLM or tool call is made for it.
        """
        try:
            async for event in self._turn(request):
                yield event
        except AgentError as exc:
            yield ErrorEvent(error_type=exc.code, message=exc.message)
        except Exception:
            logger.exception("agent turn failed")
            yield ErrorEvent(error_type="internal_error", message="internal error")

    async def _turn(self, request: ChatRequest) -> AsyncIterator[AgentEvent]:
        cfg = self.config
        session = await self.store.get_or_create_session(request.session_id, request.user)
        history = await self.store.history(session.id, cfg.history_limit) if cfg.history_limit else []
        history = start_at_user_turn(history)
        user_msg = Message(role=Role.USER, content=request.message)
        # NOTE: the user's message is durable before the model sees it (nothing is lost).
        await self.store.append(session.id, [user_msg])

        messages = [Message(role=Role.SYSTEM, content=cfg.system_prompt), *history, user_msg]
        specs = await self.tool_specs()
        params = LLMParams(temperature=cfg.temperature, max_tokens=cfg.max_tokens)
        usage = Usage()

        for step in range(1, cfg.max_steps + 1):
            result: LLMResult | None = None
            async for item in self.llm.stream_chat(messages, specs, params):
                if isinstance(item, LLMResult):
                    result = item
                elif item.text:
                    yield TokenEvent(text=item.text)
            assert result is not None, "LLMClient.stream_chat must end with an LLMResult"
            usage = usage + result.usage

            if not result.tool_calls:
                reply = Message(role=Role.ASSISTANT, content=result.content)
                await self.store.append(session.id, [reply])
                yield MessageEvent(message_id=reply.id, content=result.content)
                yield DoneEvent(session_id=session.id, message_id=reply.id, usage=usage, steps=step)
                return

            call_msg = Message(
                role=Role.ASSISTANT, content=result.content or None, tool_calls=result.tool_calls
            )
            for call in result.tool_calls:
                yield ToolCallEvent(id=call.id, name=call.name, arguments=call.arguments)
            tool_results = await self._run_tools(result.tool_calls, cfg.tool_timeout_s)
            tool_msgs = [
                Message(role=Role.TOOL, content=r.content, tool_call_id=r.call_id, name=r.name)
                for r in tool_results
            ]
            await self.store.append(session.id, [call_msg, *tool_msgs])
            messages.extend([call_msg, *tool_msgs])
            for r in tool_results:
                yield ToolResultEvent(id=r.call_id, name=r.name, content=r.content, is_error=r.is_error)

        text = MAX_STEPS_MESSAGE.format(steps=cfg.max_steps)
        reply = Message(role=Role.ASSISTANT, content=text)
        await self.store.append(session.id, [reply])
        yield TokenEvent(text=text)
        yield MessageEvent(message_id=reply.id, content=text)
        yield DoneEvent(
            session_id=session.id,
            message_id=reply.id,
            usage=usage,
            steps=cfg.max_steps,
            finish_reason="max_steps",
        )

    async def _run_tools(self, calls: list[ToolCall], timeout_s: float) -> list[ToolResult]:
        """Run one step's calls concurrently, each under its own timeout."""
        return list(await asyncio.gather(*(self._run_tool(c, timeout_s) for c in calls)))

    async def _run_tool(self, call: ToolCall, timeout_s: float) -> ToolResult:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
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
