"""The OpenAI-compatible HTTP surface of the embedded LLM: `/v1/models`, `/v1/chat/completions`, `/health`.

Ray-free: the LocalLLM deployment serves this app, and tests run it with uvicorn. It serves one
model, so any ``model`` in a request is accepted and our own name is echoed back.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_app.local_llm.engine import LocalLLMRequestError

logger = logging.getLogger(__name__)


class ChatEngine(Protocol):
    """What the app needs from an engine (``LlamaCppEngine``, or a fake in tests)."""

    async def chat(self, request: dict[str, Any]) -> dict[str, Any]: ...

    def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]: ...


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI adds fields; we ignore what we do not use


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class FunctionDefinition(_Open):
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolDefinition(_Open):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(BaseModel):
    name: str


class NamedToolChoice(_Open):
    type: Literal["function"] = "function"
    function: NamedFunction


class StreamOptions(_Open):
    include_usage: bool = False


class ChatCompletionRequest(_Open):
    model: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: Annotated[int, Field(ge=1, le=1)] | None = None


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


def create_local_llm_app(engine: ChatEngine, model_name: str) -> FastAPI:
    """The OpenAI-compatible app for one engine serving ``model_name``."""
    app = FastAPI(title="agentserve local LLM", version="1")
    created = int(time.time())

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        message = f"{'.'.join(loc) or 'body'}: {first.get('msg', 'invalid request')}"
        return JSONResponse(error_body(message, "invalid_request_error", ".".join(loc) or None), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return JSONResponse(error_body(str(exc.detail), type_), status_code=exc.status_code)

    @app.exception_handler(LocalLLMRequestError)
    async def bad_request(_: Request, exc: LocalLLMRequestError) -> JSONResponse:
        return JSONResponse(error_body(str(exc), "invalid_request_error"), status_code=400)

    @app.exception_handler(Exception)
    async def server_error(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("local LLM request failed")
        return JSONResponse(error_body("The local model failed to answer.", "server_error"), status_code=500)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness of the model server."""
        return {"status": "ok", "model": model_name}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        """The one model this server serves."""
        card = {"id": model_name, "object": "model", "created": created, "owned_by": "agentserve"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest) -> dict[str, Any] | StreamingResponse:
        """Create a chat completion (OpenAI wire format, streaming or not)."""
        request = body.model_dump(exclude_none=True)
        if not body.stream:
            return await engine.chat(request) | {"model": model_name}
        chunks = engine.stream(request)
        # NOTE: pull the first chunk before answering, so a bad request still gets its status code.
        first = await anext(chunks)
        return StreamingResponse(_events(first, chunks, model_name), media_type="text/event-stream")

    return app


async def _events(first: dict[str, Any], chunks: AsyncIterator[dict[str, Any]], model: str) -> AsyncIterator[str]:
    try:
        yield _sse(first | {"model": model})
        async for chunk in chunks:
            yield _sse(chunk | {"model": model})
        yield "data: [DONE]\n\n"
    except Exception:  # the status line is gone: end the stream with an error event
        logger.exception("local LLM stream failed")
        yield _sse(error_body("The local model failed while streaming.", "server_error"))
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
