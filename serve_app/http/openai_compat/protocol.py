"""OpenAI's chat-completions wire format, as far as agentserve speaks it.

Accepted but not applied: ``temperature``, ``top_p``, ``max_tokens`` and
``max_completion_tokens`` (the agent's configured values apply), ``user``
(identity is the principal), and client ``tools``/``tool_choice`` (our tools
run server-side inside the agent; client-side function calling is not offered).
Unknown request fields are ignored. Only text content parts are accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer

from agent.dto import ID_PATTERN, MAX_MESSAGE_CHARS, MAX_REQUEST_MESSAGES, Usage

OPENAI_PREFIX = "/v1"


def is_openai_path(scope: Mapping[str, Any]) -> bool:
    """Whether an ASGI request is for the OpenAI-compatible API, which answers errors in OpenAI's shape.

    The path is taken inside the app, without the prefix it is mounted at (a Serve route_prefix).
    """
    path, root = scope.get("path", ""), scope.get("root_path", "")
    path = path[len(root) :] if root and path.startswith(root) else path
    return bool(path.startswith(OPENAI_PREFIX + "/"))


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One request message; ``developer`` is OpenAI's newer name for ``system``."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model: str
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_REQUEST_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: Literal[1] | None = None
    user: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    session_id: str | None = Field(
        default=None, pattern=ID_PATTERN, description="extension: continue this stored session (or X-Session-ID)"
    )

    @field_validator("messages")
    @classmethod
    def _ends_with_a_user_message(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        last = messages[-1]
        if last.role != "user":
            raise ValueError("the last message must be a user message")
        if not 1 <= len(last.text) <= MAX_MESSAGE_CHARS:
            raise ValueError(f"the last message must have 1 to {MAX_MESSAGE_CHARS} characters of text")
        return messages

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    session_id: str = Field(description="extension: the stored session this turn belongs to")


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _only_set(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class ChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "agentserve"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo

    @classmethod
    def build(cls, status: int, message: str, param: str | None = None, code: str | None = None) -> ErrorResponse:
        """The error body for ``status``, typed as OpenAI types it."""
        kind = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}.get(status)
        kind = kind or ("server_error" if status >= 500 else "invalid_request_error")
        return cls(error=ErrorInfo(message=message, type=kind, param=param, code=code))
