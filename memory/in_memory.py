"""In-process conversation store: the fake behind fast tests (and a single-replica toy).

It keeps everything in the replica's memory, so history lives as long as the
replica and is not shared between Agent replicas.
"""

from __future__ import annotations

import asyncio

from agent.dto import Message, new_id, utcnow
from agent.errors import ConflictError
from agent.keys import ApiKeyRecord
from agent.ports import Page, Session, TurnRecord
from memory import codec


class InMemoryConversationStore:
    """``ConversationStore`` and ``ApiKeyStore`` in dicts; safe for one event loop."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._messages: dict[str, list[Message]] = {}
        self._turns: dict[tuple[str, str], TurnRecord] = {}
        self._message_ids: set[str] = set()
        self._keys: dict[str, ApiKeyRecord] = {}
        self._lock = asyncio.Lock()

    async def setup(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    def _owned(self, session_id: str, user_id: str) -> Session:
        found = self._sessions.get(session_id)
        if found is None or found.user_id != user_id:
            raise codec.session_not_found(session_id)
        return found

    async def get_or_create_session(self, session_id: str | None, user_id: str) -> Session:
        async with self._lock:
            session_id = session_id or new_id("ses")
            if session_id not in self._sessions:
                self._sessions[session_id] = Session(id=session_id, user_id=user_id)
                self._messages[session_id] = []
            return self._owned(session_id, user_id).model_copy()

    async def get_session(self, session_id: str, user_id: str) -> Session:
        return self._owned(session_id, user_id).model_copy()

    async def list_sessions(self, user_id: str, limit: int = 20, cursor: str | None = None) -> Page[Session]:
        codec.check_limit(limit)
        mine = sorted(
            (s for s in self._sessions.values() if s.user_id == user_id),
            key=lambda s: (s.updated_at, s.id),
            reverse=True,
        )
        if cursor is not None:
            stamp, last_id = codec.parse_session_cursor(cursor)
            mine = [s for s in mine if (s.updated_at, s.id) < (stamp, last_id)]
        items = [s.model_copy() for s in mine[:limit]]
        return Page(items=items, next_cursor=codec.session_cursor(items[-1]) if len(mine) > limit else None)

    async def delete_session(self, session_id: str, user_id: str) -> None:
        async with self._lock:
            self._owned(session_id, user_id)
            del self._sessions[session_id]
            self._message_ids.difference_update(m.id for m in self._messages.pop(session_id))
            self._turns = {k: t for k, t in self._turns.items() if t.session_id != session_id}

    async def history(self, session_id: str, limit: int) -> list[Message]:
        msgs = self._messages.get(session_id, [])
        return [m.model_copy(deep=True) for m in msgs[-limit:]] if limit > 0 else []

    async def list_messages(
        self, session_id: str, user_id: str, limit: int = 50, cursor: str | None = None
    ) -> Page[Message]:
        codec.check_limit(limit)
        self._owned(session_id, user_id)
        start = codec.parse_message_cursor(cursor) if cursor is not None else 0
        msgs = self._messages[session_id]
        items = [m.model_copy(deep=True) for m in msgs[start : start + limit]]
        more = len(msgs) > start + limit
        return Page(items=items, next_cursor=codec.message_cursor(start + limit) if more else None)

    async def append(self, session_id: str, messages: list[Message], turn: TurnRecord | None = None) -> int:
        if turn is not None and turn.session_id != session_id:
            raise ValueError("turn.session_id differs from session_id")
        async with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                raise codec.session_not_found(session_id)
            if turn is not None and (turn.user_id, turn.idempotency_key) in self._turns:
                raise ConflictError("idempotency key already used", field="idempotency_key")
            ids = {m.id for m in messages}
            if len(ids) < len(messages) or not ids.isdisjoint(self._message_ids):
                raise ConflictError("message id already stored")
            self._message_ids.update(ids)
            self._messages[session_id].extend(
                m.model_copy(deep=True, update={"created_at": codec.as_utc(m.created_at)}) for m in messages
            )
            if turn is not None:
                self._turns[(turn.user_id, turn.idempotency_key)] = turn.model_copy(deep=True)
            session.updated_at = utcnow()
            session.version += 1
            if not session.title:
                session.title = codec.title_from(messages)
            return session.version

    async def find_turn(self, user_id: str, idempotency_key: str) -> TurnRecord | None:
        found = self._turns.get((user_id, idempotency_key))
        return found.model_copy(deep=True) if found is not None else None

    # ------------------------------------------------------------------ API keys

    async def create_api_key(self, record: ApiKeyRecord) -> None:
        async with self._lock:
            if record.id in self._keys or any(k.prefix == record.prefix for k in self._keys.values()):
                raise ConflictError("API key id or prefix already stored")
            self._keys[record.id] = record.model_copy(deep=True, update={"created_at": codec.as_utc(record.created_at)})

    async def get_api_key_by_prefix(self, prefix: str) -> ApiKeyRecord | None:
        found = next((k for k in self._keys.values() if k.prefix == prefix), None)
        return found.model_copy(deep=True) if found is not None else None

    async def list_api_keys(self, owner: str | None = None) -> list[ApiKeyRecord]:
        keys = [k for k in self._keys.values() if owner is None or k.owner == owner]
        return [k.model_copy(deep=True) for k in sorted(keys, key=lambda k: (k.created_at, k.id))]

    async def revoke_api_key(self, key_id: str) -> None:
        async with self._lock:
            found = self._keys.get(key_id)
            if found is None:
                raise codec.api_key_not_found(key_id)
            found.revoked_at = found.revoked_at or utcnow()

    async def touch_api_key(self, key_id: str) -> None:
        found = self._keys.get(key_id)
        if found is not None:
            found.last_used_at = utcnow()
