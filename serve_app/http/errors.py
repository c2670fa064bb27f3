"""One error body for every failure, and the one table from error type to status."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent.errors import (
    AgentError,
    InvalidRequestError,
    LLMError,
    LLMRateLimitedError,
    LLMTimeoutError,
    LLMUnavailableError,
    NotFoundError,
    StoreUnavailableError,
    ToolTimeoutError,
)
from serve_app.auth.errors import ForbiddenError, UnauthorizedError
from serve_app.http.openai_compat.protocol import ErrorResponse, is_openai_path
from serve_app.observability.http import route_template
from serve_app.observability.metrics import get_metrics

logger = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    type: str
    message: str
    field: str | None = None
    request_id: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


# NOTE: most specific first; the first matching class wins.
STATUS_BY_ERROR: list[tuple[type[AgentError], int]] = [
    (UnauthorizedError, 401),
    (ForbiddenError, 403),
    (InvalidRequestError, 422),
    (NotFoundError, 404),
    (LLMRateLimitedError, 503),
    (LLMTimeoutError, 504),
    (ToolTimeoutError, 504),
    (LLMUnavailableError, 503),
    (LLMError, 502),
    (StoreUnavailableError, 503),
    (AgentError, 500),
]

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": desc}
    for status, desc in [
        (401, "No valid credential (see WWW-Authenticate)"),
        (403, "The credential lacks the scope this route needs"),
        (404, "Not found"),
        (429, "Rate limited: see Retry-After and the RateLimit-* headers"),
        (422, "Invalid request: the error names the field"),
        (500, "Internal error (no internals are shown)"),
        (502, "The LLM provider refused the request"),
        (503, "A dependency is unavailable; retry after Retry-After"),
        (504, "The LLM did not answer in time"),
    ]
}

# Routes that read a body also answer these (the body guard, and a body that is not UTF-8).
BODY_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    **{
        status: {"model": ErrorBody, "description": desc}
        for status, desc in [
            (400, "The body could not be read (not UTF-8)"),
            (413, "The body is larger than the limit"),
            (415, "The body is not application/json"),
        ]
    },
}


def status_for(exc: AgentError) -> int:
    return next(status for cls, status in STATUS_BY_ERROR if isinstance(exc, cls))


def error_response(
    request: Request | None,
    status: int,
    type_: str,
    message: str,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    rid = getattr(request.state, "request_id", None) if request is not None else None
    body = ErrorBody(error=ErrorDetail(type=type_, message=message, field=field, request_id=rid))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def _field_of(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    """Route every failure through ``ErrorBody``; a 500 never shows internals."""

    @app.exception_handler(AgentError)
    async def _agent_error(request: Request, exc: AgentError) -> JSONResponse:
        status = status_for(exc)
        if isinstance(exc, StoreUnavailableError):
            get_metrics().store_error(route_template(request.scope))
        headers = {"Retry-After": str(int(exc.retry_after or 1))} if status == 503 else None
        if status >= 500:
            logger.warning("request failed: %s (%s)", exc.code, exc.message)
        return error_response(request, status, exc.code, exc.message, exc.field, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        field = _field_of(tuple(first.get("loc", ())))
        msg = f"{field}: {first.get('msg', 'invalid value')}"
        if len(errors) > 1:
            msg += f" (and {len(errors) - 1} more)"
        if is_openai_path(request.scope):
            # The OpenAI-compatible API answers in OpenAI's error shape, and with 400 as OpenAI does.
            param = None if first.get("type") == "json_invalid" else field
            return JSONResponse(ErrorResponse.build(400, msg, param=param).model_dump(), status_code=400)
        return error_response(request, 422, "validation_error", msg, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if is_openai_path(request.scope):
            body = ErrorResponse.build(exc.status_code, str(exc.detail)).model_dump()
            return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
        kind = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        return error_response(request, exc.status_code, kind, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return error_response(request, 500, "internal_error", "internal error")
