"""Typed stream events of one agent turn.

A turn streams ``token``\\* and ``tool_call``/``tool_result`` pairs, then one
``message`` and a final ``done``; a turn that fails ends with ``error`` instead.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter

from agent.dto import Usage


class TokenEvent(BaseModel):
    type: Literal["token"] = "token"
    text: str


class ToolCallEvent(BaseModel):
    type: Literal["tool_call"] = "tool_call"
    id: str
    name: str
    arguments: str


class ToolResultEvent(BaseModel):
    type: Literal["tool_result"] = "tool_result"
    id: str
    name: str
    content: str
    is_error: bool = False


class MessageEvent(BaseModel):
    type: Literal["message"] = "message"
    message_id: str
    content: str


class ErrorEvent(BaseModel):
    type: Literal["error"] = "error"
    error_type: str
    message: str


class DoneEvent(BaseModel):
    type: Literal["done"] = "done"
    session_id: str
    message_id: str
    usage: Usage
    steps: int
    finish_reason: Literal["stop", "max_steps"] = "stop"


AgentEvent = Annotated[
    TokenEvent | ToolCallEvent | ToolResultEvent | MessageEvent | ErrorEvent | DoneEvent,
    Field(discriminator="type"),
]
AGENT_EVENT_ADAPTER: TypeAdapter[AgentEvent] = TypeAdapter(AgentEvent)
