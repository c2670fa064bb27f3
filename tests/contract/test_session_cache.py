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


async def turn(c: CachedConversationStore, sid: str, n: int) -> list[Message]:
    """What an agent turn does: read the session, read history, write the turn."""
    await c.get_or_create_session(sid, "u")
    seen = await c.history(sid, 50)
    await c.append(sid, [msg(f"q{n}"), msg(f"a{n}", Role.ASSISTANT)])
    return seen


async def test_a_conversation_hits_after_its_first_turn(cached: CachedConversationStore) -> None:
    s = await cached.get_or_create_session(None, "u")
    for n in range(6):
        seen = await turn(cached, s.id, n)
        assert [m.content for m in seen] == [x for i in range(n) for x in (f"q{i}", f"a{i}")]
    assert cached.misses == 1 and cached.hits == 5


async def test_two_replicas_interleaving_never_read_stale(tmp_path: Path) -> None:
    store = SqliteConversationStore(str(tmp_path / "r.db"))
    await store.setup()
    prefix = f"agentserve-test:{uuid.uuid4().hex}"
    a = CachedConversationStore(store, RedisSessionCache(redis_url_or_fail(), prefix=prefix))
    b = CachedConversationStore(store, RedisSessionCache(redis_url_or_fail(), prefix=prefix))
    s = await a.get_or_create_session(None, "u")
    for n in range(8):
        replica = a if n % 3 else b  # a, b interleave irregularly
        seen = await turn(replica, s.id, n)
        truth = await store.history(s.id, 50)
        assert [m.content for m in seen] == [m.content for m in truth[:-2]]
    assert a.hits + b.hits > 0  # the shared cache served some of them
    await a.cache.close()
    await store.close()
