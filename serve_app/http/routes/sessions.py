"""Session routes: the caller's sessions and their messages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from agent.dto import ID_PATTERN, Message
from agent.ports import Page, Session
from serve_app.auth.deps import ChatPrincipal
from serve_app.http.deps import AgentServiceDep
from serve_app.http.errors import ERROR_RESPONSES

router = APIRouter(prefix="/api/sessions", tags=["sessions"])

# Documented for the OpenAPI page; the value is read by the principal dependency.
UserQuery = Annotated[str | None, Query(pattern=ID_PATTERN, description="the caller, without authentication only")]
LimitQuery = Annotated[int, Query(ge=1, le=200)]
CursorQuery = Annotated[str | None, Query(max_length=512)]


@router.get("", response_model=Page[Session], responses=ERROR_RESPONSES)
async def list_sessions(
    agent: AgentServiceDep,
    principal: ChatPrincipal,
    user_id: UserQuery = None,
    limit: LimitQuery = 20,
    cursor: CursorQuery = None,
) -> Page[Session]:
    """The caller's sessions, most recently updated first; pass next_cursor for the next page."""
    return await agent.list_sessions(principal.id, limit, cursor)


@router.get("/{session_id}", response_model=Session, responses=ERROR_RESPONSES)
async def get_session(
    session_id: str, agent: AgentServiceDep, principal: ChatPrincipal, user_id: UserQuery = None
) -> Session:
    """One of the caller's sessions."""
    return await agent.get_session(session_id, principal.id)


@router.get("/{session_id}/messages", response_model=Page[Message], responses=ERROR_RESPONSES)
async def list_messages(
    session_id: str,
    agent: AgentServiceDep,
    principal: ChatPrincipal,
    user_id: UserQuery = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[Message]:
    """A session's messages, oldest first."""
    return await agent.list_messages(session_id, principal.id, limit, cursor)


@router.delete("/{session_id}", status_code=204, responses=ERROR_RESPONSES)
async def delete_session(
    session_id: str, agent: AgentServiceDep, principal: ChatPrincipal, user_id: UserQuery = None
) -> Response:
    """Delete a session with its messages."""
    await agent.delete_session(session_id, principal.id)
    return Response(status_code=204)
