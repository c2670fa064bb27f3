"""The session cache over a real store, in-process and on the real Redis: never stale, never required."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.dto import Message, Role
from memory.session_cache import CachedConversationStore, InProcessSessionCache, RedisSessionCache
from memory.sqlite_store import SqliteConversationStore
from tests.support.services import redis_url_or_fail


@pytest.fixture(params=["in_process", "redis"])
async def cached(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CachedConversationStore]:
    store = SqliteConversationStore(str(tmp_path / "c.db"))
    await store.setup()
    if request.param == "redis":
        cache = RedisSessionCache(redis_url_or_fail(), prefix=f"agentserve-test:{uuid.uuid4().hex}")
    else:
        cache = InProcessSessionCache()
    wrapped = CachedConversationStore(store, cache)
    yield wrapped
    if isinstance(cache, RedisSessionCache):
        keys = [k async for k in cache.redis.scan_iter(f"{cache.prefix}:*")]
        if keys:
            await cache.redis.delete(*keys)
    await wrapped.close()


def msg(text: str, role: Role = Role.USER) -> Message:
    return Message(role=role, content=text)


async def test_second_read_is_a_hit_and_equal(cached: CachedConversationStore) -> None:
    s = await cached.get_or_create_session(None, "u")
    await cached.append(s.id, [msg("a"), msg("b", Role.ASSISTANT)])
    s = await cached.get_session(s.id, "u")
    first = await cached.history(s.id, 10)
    second = await cached.history(s.id, 10)
    assert [m.content for m in first] == [m.content for m in second] == ["a", "b"]
    assert second == first and (cached.misses, cached.hits) == (1, 1)


async def test_a_write_is_seen_at_once(cached: CachedConversationStore) -> None:
    s = await cached.get_or_create_session(None, "u")
    await cached.append(s.id, [msg("one")])
    await cached.get_session(s.id, "u")
    assert [m.content for m in await cached.history(s.id, 10)] == ["one"]
    await cached.append(s.id, [msg("two")])
    await cached.get_session(s.id, "u")  # a turn always reads its session first
    assert [m.content for m in await cached.history(s.id, 10)] == ["one", "two"]


async def test_limit_is_respected_from_cache(cached: CachedConversationStore) -> None:
    s = await cached.get_or_create_session(None, "u")
    await cached.append(s.id, [msg(str(i)) for i in range(10)])
    await cached.get_session(s.id, "u")
    await cached.history(s.id, 10)
    assert [m.content for m in await cached.history(s.id, 3)] == ["7", "8", "9"]


async def test_redis_down_changes_nothing_and_logs_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = SqliteConversationStore(str(tmp_path / "d.db"))
    await store.setup()
    cached = CachedConversationStore(store, RedisSessionCache("redis://127.0.0.1:1/0", timeout_s=0.2))
    s = await cached.get_or_create_session(None, "u")
    await cached.append(s.id, [msg("kept")])
    with caplog.at_level(logging.WARNING, logger="memory.session_cache"):
        for _ in range(5):
            await cached.get_session(s.id, "u")
            assert [m.content for m in await cached.history(s.id, 10)] == ["kept"]
    warnings = [r for r in caplog.records if "session cache unavailable" in r.message]
    assert len(warnings) == 1
    await cached.close()
