"""Semantic memory routes: add a text, search by meaning, forget an item."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from agent.dto import ID_PATTERN
from agent.ports import MemoryHit, MemoryItem
from serve_app.auth.deps import MemoryPrincipal
from serve_app.http.deps import AgentServiceDep
from serve_app.http.errors import BODY_ERROR_RESPONSES, ERROR_RESPONSES
from serve_app.http.identity import acting_user

router = APIRouter(prefix="/api/memory", tags=["memory"])

UserQuery = Annotated[str | None, Query(pattern=ID_PATTERN, description="the caller, without authentication only")]


class MemoryCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=8000)
    session_id: str | None = Field(default=None, pattern=ID_PATTERN)
    user_id: str | None = Field(default=None, pattern=ID_PATTERN)


@router.post("", response_model=MemoryItem, status_code=201, responses=BODY_ERROR_RESPONSES)
async def add_memory(body: MemoryCreate, agent: AgentServiceDep, principal: MemoryPrincipal) -> MemoryItem:
    """Remember a text for the caller."""
    return await agent.add_memory(acting_user(principal, body.user_id), body.text, body.session_id)


@router.get("/search", response_model=list[MemoryHit], responses=ERROR_RESPONSES)
async def search_memory(
    agent: AgentServiceDep,
    principal: MemoryPrincipal,
    q: Annotated[str, Query(min_length=1, max_length=2000)],
    k: Annotated[int, Query(ge=1, le=50)] = 5,
    user_id: UserQuery = None,
) -> list[MemoryHit]:
    """The caller's memories closest in meaning to q, closest first."""
    return await agent.search_memory(principal.id, q, k)


@router.delete("/{memory_id}", status_code=204, responses=ERROR_RESPONSES)
async def delete_memory(
    memory_id: str, agent: AgentServiceDep, principal: MemoryPrincipal, user_id: UserQuery = None
) -> Response:
    """Forget one memory."""
    await agent.delete_memory(principal.id, memory_id)
    return Response(status_code=204)
