"""The OpenAI-compatible chat API over the agent: one agent turn per completion.

How an OpenAI request becomes a turn:

- The last message (a user message) is the turn's message. Client system and
  developer messages are ignored: the agent's configured system prompt applies.
- With a session (the ``session_id`` body field, else the ``X-Session-ID``
  header) the stored session is the history, and earlier request messages are
  ignored: OpenAI clients resend the whole conversation every time. Without
  one, the turn gets a fresh session, started with the earlier user and
  assistant text messages (``ChatRequest.history``): the LLM gets them as
  earlier turns, and they are stored before the turn, so the returned session
  continues the conversation. Tool messages, and assistant messages with only
  tool calls, are left out (client-side function calling is not offered).
  History over the limits is a 400 naming ``messages`` (or the message).
- Tool calls run server-side inside the agent: they are not sent as OpenAI
  ``tool_calls``; only the assistant's text is streamed.
- The session id comes back in the ``X-Session-ID`` response header (streaming
  or not) and, non-streaming, in the ``session_id`` extension field.
- A turn that fails mid-stream ends with an OpenAI error object as a data line,
  ``data: {"error": {...}}``, then ``data: [DONE]``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from agent.dto import ChatRequest, Usage, new_id
from agent.errors import AgentError, InvalidRequestError, NotFoundError
from agent.events import DoneEvent, ErrorEvent, MessageEvent, TokenEvent
from serve_app.auth.tool_scopes import denied_tools, get_tool_scopes
from serve_app.http.errors import STATUS_BY_ERROR, status_for
from serve_app.http.identity import Principal
from serve_app.http.openai_compat.protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChunkChoice,
    DeltaMessage,
    ErrorResponse,
    Model,
    ModelList,
)
from serve_app.http.services import AgentService
from serve_app.observability.logs import note_contents
from serve_app.ratelimit.http import charge_request_tokens

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "agentserve"
SESSION_HEADER = "X-Session-ID"
SSE_HEADERS = {"X-Accel-Buffering": "no", "Cache-Control": "no-cache"}
FINISH_REASONS = {"stop": "stop", "max_steps": "length"}
_STATUS_BY_CODE = {cls.code: status for cls, status in STATUS_BY_ERROR}
_CREATED = int(time.time())


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


def model_name(request: Request) -> str:
    return str(getattr(request.app.state, "agent_model_name", DEFAULT_MODEL_NAME))


def list_models(request: Request) -> ModelList:
    return ModelList(data=[Model(id=model_name(request), created=_CREATED)])


def error_response(exc: AgentError) -> JSONResponse:
    """A core error in OpenAI's shape; invalid requests are 400, as OpenAI answers them."""
    status = status_for(exc)
    status = 400 if status == 422 else status
    headers = {"Retry-After": str(int(exc.retry_after or 1))} if status == 503 else None
    if status >= 500:
        logger.warning("request failed: %s (%s)", exc.code, exc.message)
    body = ErrorResponse.build(status, exc.message, param=exc.field, code=exc.code)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def to_history(earlier: list[ChatMessage]) -> tuple[list[dict[str, str]], list[int]]:
    """The earlier user/assistant text messages as ``ChatRequest.history``, with each one's index in ``earlier``."""
    history: list[dict[str, str]] = []
    indices: list[int] = []
    for i, m in enumerate(earlier):
        if m.role in ("user", "assistant") and m.text:
            history.append({"role": m.role, "content": m.text})
            indices.append(i)
    return history, indices


def _invalid_history(exc: ValidationError, indices: list[int]) -> InvalidRequestError | None:
    """A ``ChatRequest.history`` error, naming the request's ``messages`` (or the one message) instead."""
    first = exc.errors()[0]
    loc = list(first["loc"])
    if loc[:1] != ["history"]:
        return None
    param = "messages"
    if len(loc) > 1 and isinstance(loc[1], int):
        param = ".".join(["messages", str(indices[loc[1]]), *map(str, loc[2:])])
    return InvalidRequestError(f"{param}: {first['msg']}", field=param)


def to_chat_request(
    body: ChatCompletionRequest,
    principal: Principal,
    session_header: str | None,
    tool_scopes: Mapping[str, str] | None = None,
) -> ChatRequest:
    """The agent turn for a request.

    Raises:
        InvalidRequestError: the earlier messages are over the history limits (``messages...``).
    """
    session_id = body.session_id or session_header
    history: list[dict[str, str]] = []
    indices: list[int] = []
    if session_id is None:
        history, indices = to_history(body.messages[:-1])
        # Minted here, not by the store, so a stream can name its session in a header.
        session_id = new_id("ses")
    denied = denied_tools(principal, tool_scopes or {})
    try:
        return ChatRequest.model_validate(
            {
                "message": body.messages[-1].text,
                "session_id": session_id,
                "user_id": principal.id,
                "denied_tools": denied,
                "history": history,
            }
        )
    except ValidationError as exc:
        if (error := _invalid_history(exc, indices)) is None:
            raise
        raise error from None


async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    service: AgentService,
    principal: Principal,
    session_header: str | None,
) -> JSONResponse | StreamingResponse:
    model = model_name(request)
    if body.model != model:
        raise ModelNotFoundError(f"The model `{body.model}` does not exist", field="model")
    chat_request = to_chat_request(body, principal, session_header, get_tool_scopes(request))
    note_contents(request, message=body.messages[-1].text)
    if body.stream:
        headers = {**SSE_HEADERS, SESSION_HEADER: chat_request.session_id or ""}
        chunks = stream_chunks(service, chat_request, model, body.include_usage, request)
        return StreamingResponse(chunks, media_type="text/event-stream", headers=headers)
    response = await service.chat(chat_request)
    note_contents(request, reply=response.response)
    await charge_request_tokens(request, response.usage.total_tokens)
    completion = ChatCompletion(
        id=completion_id(),
        created=int(time.time()),
        model=model,
        choices=[
            Choice(
                message=AssistantMessage(content=response.response),
                finish_reason="length" if response.finish_reason == "max_steps" else "stop",
            )
        ],
        usage=response.usage,
        session_id=response.session_id,
    )
    return JSONResponse(completion.model_dump(mode="json"), headers={SESSION_HEADER: response.session_id})


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def _error_line(code: str, message: str) -> str:
    body = ErrorResponse.build(_STATUS_BY_CODE.get(code, 500), message, code=code)
    return f"data: {body.model_dump_json()}\n\n"


async def stream_chunks(
    service: AgentService,
    chat_request: ChatRequest,
    model: str,
    include_usage: bool,
    request: Request | None = None,
) -> AsyncIterator[str]:
    """The turn as ``chat.completion.chunk`` data lines, ending with ``data: [DONE]``."""
    cid, created = completion_id(), int(time.time())
    # OpenAI: with include_usage, every chunk has "usage" (null but on the last one).
    exclude = None if include_usage else {"usage"}

    def chunk(delta: DeltaMessage | None, finish: str | None = None, usage: Usage | None = None) -> str:
        choices = [ChunkChoice(delta=delta, finish_reason=finish)] if delta is not None else []
        obj = ChatCompletionChunk(id=cid, created=created, model=model, choices=choices, usage=usage)
        return f"data: {obj.model_dump_json(exclude=exclude)}\n\n"

    stream = service.stream(chat_request)
    try:
        yield chunk(DeltaMessage(role="assistant", content=""))
        async for event in stream:
            if isinstance(event, TokenEvent) and event.text:
                yield chunk(DeltaMessage(content=event.text))
            elif isinstance(event, MessageEvent) and request is not None:
                note_contents(request, reply=event.content)
            elif isinstance(event, DoneEvent):
                if request is not None:
                    await charge_request_tokens(request, event.usage.total_tokens)
                yield chunk(DeltaMessage(), FINISH_REASONS[event.finish_reason])
                if include_usage:
                    yield chunk(None, usage=event.usage)
            elif isinstance(event, ErrorEvent):
                yield _error_line(event.error_type, event.message)
    except Exception:
        # NOTE: headers are sent already; the only honest ending left is an error line.
        logger.exception("stream failed")
        yield _error_line("internal_error", "internal error")
    finally:
        # A client that went away closes this generator: close the turn with it.
        await stream.aclose()  # type: ignore[attr-defined]
    yield "data: [DONE]\n\n"
