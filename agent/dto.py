"""Data transfer objects: what crosses HTTP and deployment handles alike.

All are pydantic models, so they validate on the way in and pickle across
Ray handles unchanged.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"
TOOL_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"  # what OpenAI accepts as a function name

# Input limits, besides the HTTP body cap (1 MB). Fixed here, so the OpenAPI document shows them.
MAX_MESSAGE_CHARS = 32_000  # one chat message
MAX_REQUEST_MESSAGES = 256  # messages of one OpenAI-compatible request
MAX_HISTORY_MESSAGES = MAX_REQUEST_MESSAGES - 1  # ChatRequest.history: an OpenAI request's messages less the turn's
MAX_HISTORY_CHARS = 8 * MAX_MESSAGE_CHARS  # ChatRequest.history: all its messages' content together
MAX_TOOL_ARGUMENT_BYTES = 32_768  # one tool call's arguments, as UTF-8 JSON (the LLM's or the direct route's)
MAX_DENIED_TOOLS = 256


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Role(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class ToolCall(BaseModel):
    """A function call the LLM asked for; ``arguments`` is the raw JSON text."""

    id: str
    name: str
    arguments: str = "{}"


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
        )


class Message(BaseModel):
    """One message of a conversation, in OpenAI's chat shape plus an id."""

    id: str = Field(default_factory=lambda: new_id("msg"))
    role: Role
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    usage: Usage | None = None
    created_at: datetime = Field(default_factory=utcnow)

    def to_openai(self) -> dict[str, Any]:
        """The message as the OpenAI chat API expects it."""
        out: dict[str, Any] = {"role": self.role.value, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        if self.role is Role.TOOL:
            out["tool_call_id"] = self.tool_call_id
            if self.name:
                out["name"] = self.name
        return out


class ToolSpec(BaseModel):
    """A tool as the LLM sees it: name, description, JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]

    def to_openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


class ToolErrorKind(StrEnum):
    NOT_FOUND = "tool_not_found"
    INVALID_ARGUMENTS = "invalid_arguments"
    FAILED = "tool_error"
    TIMEOUT = "tool_timeout"
    INTERNAL = "internal_error"


class FieldError(BaseModel):
    field: str
    message: str


class ToolInvocation(BaseModel):
    """A request to run one tool; ``arguments`` is JSON text or an object."""

    name: str = Field(min_length=1, max_length=128)
    arguments: str | dict[str, Any] = "{}"
    call_id: str = Field(default_factory=lambda: new_id("call"))


class ToolResult(BaseModel):
    """What a tool run produced. Failures are values, never exceptions across a handle."""

    call_id: str
    name: str
    content: str
    is_error: bool = False
    error_kind: ToolErrorKind | None = None
    field_errors: list[FieldError] = Field(default_factory=list)
    duration_ms: float = 0.0


class HistoryMessage(BaseModel):
    """An earlier message of a conversation, supplied by the caller to start a session with.

    Only user and assistant text: the agent's own system prompt applies, and tool
    calls run server-side, so a client's system and tool messages have no place here.
    """

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)


class ChatRequest(BaseModel):
    """One user turn, from HTTP or from a Python caller holding a handle.

    ``history`` seeds a session that has no stored messages yet: the LLM sees it as
    the earlier turns, and it is stored before the turn, so the returned session
    continues it. For a session with stored messages it is refused (``history``):
    the stored session is the conversation.
    """

    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    session_id: str | None = Field(default=None, pattern=ID_PATTERN)
    user_id: str | None = Field(default=None, pattern=ID_PATTERN)
    idempotency_key: str | None = Field(default=None, pattern=ID_PATTERN)
    denied_tools: list[Annotated[str, Field(pattern=TOOL_NAME_PATTERN)]] = Field(
        default_factory=list,
        max_length=MAX_DENIED_TOOLS,
        description="tools this turn may not use; the server adds those the caller lacks the scope for",
    )
    history: list[HistoryMessage] = Field(
        default_factory=list,
        max_length=MAX_HISTORY_MESSAGES,
        description=(
            "earlier messages, oldest first, to start the session with; only for a session"
            f" without stored messages; at most {MAX_HISTORY_CHARS} characters in all"
        ),
    )

    @field_validator("history")
    @classmethod
    def _history_fits(cls, history: list[HistoryMessage]) -> list[HistoryMessage]:
        total = sum(len(m.content) for m in history)
        if total > MAX_HISTORY_CHARS:
            raise ValueError(f"at most {MAX_HISTORY_CHARS} characters of content in all, not {total}")
        return history

    @property
    def user(self) -> str:
        return self.user_id or "anonymous"


class ToolCallRecord(BaseModel):
    """A tool call made during a turn, with its result."""

    id: str
    name: str
    arguments: str
    result: str | None = None
    is_error: bool = False


class ChatResponse(BaseModel):
    response: str
    session_id: str
    message_id: str
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    finish_reason: str = "stop"
