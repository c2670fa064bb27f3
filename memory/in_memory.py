"""In-process conversation store: the backbone's stand-in until SQLite/PostgreSQL land.

It keeps sessions in the replica's memory, so history lives as long as the
replica and is not shared between Agent replicas.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from agent.dto import Message, new_id
from agent.errors import NotFoundError
from agent.ports import Session


class InMemoryConversationStore:
    """``ConversationStore`` in a dict; safe for one event loop."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._messages: dict[str, list[Message]] = defaultdict(list)
        self._lock = asyncio.Lock()

    async def get_or_create_session(self, session_id: str | None, user_id: str) -> Session:
        async with self._lock:
            if session_id is None:
                session_id = new_id("ses")
            found = self._sessions.get(session_id)
            if found is not None:
                if found.user_id != user_id:
                    # NOTE: same answer as a missing id, so ids of others leak nothing.
                    raise NotFoundError(f"session '{session_id}' not found", field="session_id")
                return found
            session = Session(id=session_id, user_id=user_id)
            self._sessions[session_id] = session
            return session

    async def history(self, session_id: str, limit: int) -> list[Message]:
        msgs = self._messages.get(session_id, [])
        return list(msgs[-limit:]) if limit else []

    async def append(self, session_id: str, messages: list[Message]) -> None:
        self._messages[session_id].extend(messages)
