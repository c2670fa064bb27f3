"""Session cache: recent messages of a session, in Redis or in this process.

The conversation store stays the truth. Entries are keyed by the session's
``version``, a counter every write bumps in its own transaction, as the store
last reported it; so a write makes the old entry unreachable with no cache
write at all, and a lost update, a reader racing a writer or Redis coming back
with old data can never serve stale history. After its own write a replica
writes the new entry through (old entry + the new messages) only when the
store reports that the write moved the version from exactly the one the entry
was read at, i.e. no other writer came in between. Any cache failure falls back
to the store and is logged once per interval, not per request.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any, Protocol

from pydantic import TypeAdapter

from agent.dto import Message
from agent.ports import ConversationStore, Session, TurnRecord

logger = logging.getLogger(__name__)
_MESSAGES = TypeAdapter(list[Message])


class SessionCache(Protocol):
    async def get(self, key: str) -> list[Message] | None: ...

    async def put(self, key: str, messages: list[Message]) -> None: ...

    async def close(self) -> None: ...


class InProcessSessionCache:
    """An LRU in this replica (the embedded default)."""

    def __init__(self, max_entries: int = 1000, ttl_s: float = 600.0) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._entries: OrderedDict[str, tuple[float, list[Message]]] = OrderedDict()

    async def get(self, key: str) -> list[Message] | None:
        entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry[0] > self.ttl_s:
            return None
        self._entries.move_to_end(key)
        return list(entry[1])

    async def put(self, key: str, messages: list[Message]) -> None:
        self._entries[key] = (time.monotonic(), list(messages))
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def close(self) -> None:
        return None


class RedisSessionCache:
    """The cache in Redis, shared by every Agent replica.

    Args:
        url: ``redis://...`` (``REDIS_URL``).
        ttl_s: How long an entry lives.
        timeout_s: Socket timeout: a slow Redis must not slow turns down.
    """

    def __init__(self, url: str, ttl_s: int = 600, timeout_s: float = 0.5, prefix: str = "agentserve:hist") -> None:
        import redis.asyncio as redis

        self.redis: Any = redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self.ttl_s = ttl_s
        self.prefix = prefix

    async def get(self, key: str) -> list[Message] | None:
        raw = await self.redis.get(f"{self.prefix}:{key}")
        return None if raw is None else _MESSAGES.validate_json(raw)

    async def put(self, key: str, messages: list[Message]) -> None:
        await self.redis.set(f"{self.prefix}:{key}", _MESSAGES.dump_json(messages), ex=self.ttl_s)

    async def ping(self) -> None:
        await self.redis.ping()

    async def close(self) -> None:
        await self.redis.aclose()


class CachedConversationStore:
    """A ``ConversationStore`` whose ``history`` goes through a ``SessionCache``.

    Args:
        store: The source of truth; every write goes there.
        cache: Where recent history is kept.
        max_messages: How many newest messages an entry holds; longer asks go to the store.
        warn_interval_s: A failing cache is logged at most this often.
    """

    def __init__(
        self, store: ConversationStore, cache: SessionCache, max_messages: int = 100, warn_interval_s: float = 30.0
    ) -> None:
        self.store = store
        self.cache = cache
        self.max_messages = max_messages
        self.warn_interval_s = warn_interval_s
        self._last_warning = 0.0
        self._seen: OrderedDict[str, int] = OrderedDict()  # session id -> version last read
        self._last: OrderedDict[str, tuple[int, list[Message]]] = OrderedDict()  # what this replica served
        self.hits = 0
        self.misses = 0

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_warning >= self.warn_interval_s:
            self._last_warning = now
            logger.warning("session cache unavailable (%s); reading from the store", type(exc).__name__)

    @staticmethod
    def _bounded_put(d: OrderedDict[str, Any], key: str, value: Any, limit: int = 10_000) -> None:
        d[key] = value
        d.move_to_end(key)
        while len(d) > limit:
            d.popitem(last=False)

    def _remember(self, session: Session) -> Session:
        self._bounded_put(self._seen, session.id, session.version)
        return session

    async def get_or_create_session(self, session_id: str | None, user_id: str) -> Session:
        return self._remember(await self.store.get_or_create_session(session_id, user_id))

    async def get_session(self, session_id: str, user_id: str) -> Session:
        return self._remember(await self.store.get_session(session_id, user_id))

    async def history(self, session_id: str, limit: int) -> list[Message]:
        # NOTE: served at the version the last get_session/get_or_create_session read:
        # the agent reads its session first on every turn, so that is always fresh.
        version = self._seen.get(session_id)
        if version is None or limit > self.max_messages:
            return await self.store.history(session_id, limit)
        key = f"{session_id}:{version}"
        try:
            cached = await self.cache.get(key)
        except Exception as exc:
            self._warn(exc)
            return await self.store.history(session_id, limit)
        if cached is not None:
            self.hits += 1
            self._bounded_put(self._last, session_id, (version, cached), 1000)
            return cached[-limit:] if limit else []
        self.misses += 1
        messages = await self.store.history(session_id, self.max_messages)
        try:
            await self.cache.put(key, messages)
        except Exception as exc:
            self._warn(exc)
        self._bounded_put(self._last, session_id, (version, messages), 1000)
        return messages[-limit:] if limit else []

    async def append(self, session_id: str, messages: list[Message], turn: TurnRecord | None = None) -> int:
        version = await self.store.append(session_id, messages, turn)
        last = self._last.pop(session_id, None)
        if last is not None and last[0] == version - 1:
            # NOTE: the store moved the version from exactly the one our entry was read at,
            # in the same transaction as the write: no other writer came in between.
            entry = [*last[1], *messages][-self.max_messages :]
            try:
                await self.cache.put(f"{session_id}:{version}", entry)
                self._bounded_put(self._last, session_id, (version, entry), 1000)
                self._bounded_put(self._seen, session_id, version)
            except Exception as exc:
                self._warn(exc)
        return version

    async def close(self) -> None:
        try:
            await self.cache.close()
        finally:
            await self.store.close()

    def __getattr__(self, name: str) -> Any:
        # Writes, listings, turns, setup and ping are the store's own.
        return getattr(self.store, name)
