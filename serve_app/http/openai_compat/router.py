"""The OpenAI-compatible routes under ``/v1``; the logic is in ``serving``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent.dto import ID_PATTERN
from agent.errors import AgentError
from serve_app.auth.deps import ChatPrincipal, PrincipalDep
from serve_app.http.deps import AgentServiceDep
from serve_app.http.openai_compat import serving
from serve_app.http.openai_compat.protocol import (
    OPENAI_PREFIX,
    ChatCompletion,
    ChatCompletionRequest,
    ErrorResponse,
    ModelList,
)

logger = logging.getLogger(__name__)


class OpenAIRoute(APIRoute):
    """Answers failures in OpenAI's error shape (validation errors: ``serve_app.http.errors``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except AgentError as exc:
                return serving.error_response(exc)
            except (RequestValidationError, StarletteHTTPException):
                raise
            except Exception:
                logger.exception("unhandled error")
                return JSONResponse(ErrorResponse.build(500, "internal error").model_dump(), status_code=500)

        return handle


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": desc}
    for status, desc in [
        (400, "Invalid request: `param` names the field"),
        (401, "No valid credential (see WWW-Authenticate)"),
        (403, "The credential lacks the scope this route needs"),
        (404, "Unknown model (`model_not_found`) or session"),
        (429, "Rate limited: see Retry-After and the RateLimit-* headers"),
        (500, "Internal error (no internals are shown)"),
        (502, "The LLM provider refused the request"),
        (503, "A dependency is unavailable; retry after Retry-After"),
        (504, "The LLM did not answer in time"),
    ]
}

# Routes that read a body also answer these (the body guard).
BODY_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    413: {"model": ErrorResponse, "description": "The body is larger than the limit"},
    415: {"model": ErrorResponse, "description": "The body is not application/json"},
}

router = APIRouter(prefix=OPENAI_PREFIX, tags=["openai"], route_class=OpenAIRoute)

SessionHeader = Annotated[
    str | None,
    Header(alias="X-Session-ID", pattern=ID_PATTERN, description="continue this stored session"),
]


@router.get("/models", response_model=ModelList, responses=ERROR_RESPONSES)
async def list_models(request: Request, principal: PrincipalDep) -> ModelList:
    """The models served: one per configured agent."""
    return serving.list_models(request)


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={**BODY_ERROR_RESPONSES, 200: {"content": {"text/event-stream": {}}}},
)
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    agent: AgentServiceDep,
    principal: ChatPrincipal,
    session_id: SessionHeader = None,
) -> Response:
    """Run one agent turn, OpenAI-style: a chat.completion, or chat.completion.chunk SSE with stream=true."""
    return await serving.create_chat_completion(body, request, agent, principal, session_id)
