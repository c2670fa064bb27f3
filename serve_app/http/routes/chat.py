"""Chat routes: one turn as JSON, or as Server-Sent Events."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from agent.dto import ID_PATTERN, ChatRequest, ChatResponse
from agent.events import DoneEvent, ErrorEvent, MessageEvent
from serve_app.auth.deps import ChatPrincipal
from serve_app.auth.tool_scopes import ToolScopesDep, denied_tools
from serve_app.http.deps import AgentServiceDep
from serve_app.http.errors import BODY_ERROR_RESPONSES
from serve_app.http.identity import Principal, acting_user
from serve_app.observability.logs import note_contents, note_session
from serve_app.ratelimit.http import charge_request_tokens

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api", tags=["chat"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=ID_PATTERN,
        description="a retry with the same key gets the stored reply",
    ),
]


def _prepare(body: ChatRequest, principal: Principal, key: str | None, tool_scopes: Mapping[str, str]) -> ChatRequest:
    """The request as the agent runs it: for the principal, without the tools it lacks the scope for,
    with the header's idempotency key."""
    denied = sorted({*body.denied_tools, *denied_tools(principal, tool_scopes)})
    update: dict[str, Any] = {"user_id": acting_user(principal, body.user_id), "denied_tools": denied}
    if key:
        update["idempotency_key"] = key
    return body.model_copy(update=update)


SSE_HEADERS = {"X-Accel-Buffering": "no", "Cache-Control": "no-cache"}


@router.post("/chat", response_model=ChatResponse, responses=BODY_ERROR_RESPONSES)
async def chat(
    body: ChatRequest,
    agent: AgentServiceDep,
    principal: ChatPrincipal,
    request: Request,
    tool_scopes: ToolScopesDep,
    idempotency_key: IdempotencyKey = None,
) -> ChatResponse:
    """Send a message and get the agent's reply once the turn is done."""
    note_session(request, body.session_id)
    response = await agent.chat(_prepare(body, principal, idempotency_key, tool_scopes))
    note_session(request, response.session_id)
    note_contents(request, message=body.message, reply=response.response)
    await charge_request_tokens(request, response.usage.total_tokens)
    return response


@router.post(
    "/chat/stream",
    responses={**BODY_ERROR_RESPONSES, 200: {"content": {"text/event-stream": {}}}},
    response_class=EventSourceResponse,
)
async def chat_stream(
    body: ChatRequest,
    agent: AgentServiceDep,
    principal: ChatPrincipal,
    request: Request,
    tool_scopes: ToolScopesDep,
    idempotency_key: IdempotencyKey = None,
) -> EventSourceResponse:
    """Send a message; receive the turn as SSE: token, tool_call, tool_result, message, done|error."""

    note_session(request, body.session_id)
    note_contents(request, message=body.message)

    async def events() -> AsyncIterator[ServerSentEvent]:
        stream = agent.stream(_prepare(body, principal, idempotency_key, tool_scopes))
        try:
            async for event in stream:
                if isinstance(event, MessageEvent):
                    note_contents(request, reply=event.content)
                elif isinstance(event, DoneEvent):
                    note_session(request, event.session_id)
                    await charge_request_tokens(request, event.usage.total_tokens)
                yield ServerSentEvent(event=event.type, data=event.model_dump_json())
        except Exception:
            # NOTE: headers are sent already; the only honest ending left is an error event.
            logger.exception("stream failed")
            err = ErrorEvent(error_type="internal_error", message="internal error")
            yield ServerSentEvent(event=err.type, data=err.model_dump_json())
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    return EventSourceResponse(events(), ping=request.app.state.heartbeat_s, headers=SSE_HEADERS)
