"""Conversation-store fixtures: one contract, every implementation, real servers.

PostgreSQL: a fresh database per test session on the server named by
``TEST_POSTGRES_ADMIN_DSN`` (or found at 127.0.0.1:5432 as ``postgres`` or
``root``), dropped at the end; tables are truncated between tests. When no
server answers, the postgres tests fail (never skip).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psycopg
import pytest

from agent.ports import ConversationStore
from memory.in_memory import InMemoryConversationStore
from memory.postgres_store import PostgresConversationStore
from memory.sqlite_store import SqliteConversationStore


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: needs the PostgreSQL server (fails under CI if absent)")


@pytest.fixture(scope="session")
def pg_dsn(make_pg_database: Callable[[], str]) -> str:
    """The session's shared database (migrated by the first store's setup)."""
    return make_pg_database()


@pytest.fixture
def fresh_pg_dsn(make_pg_database: Callable[[], str]) -> str:
    """A database of its own, still empty, for tests of migrations."""
    return make_pg_database()


def pg_fetch(dsn: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query)
        return cur.fetchall() if cur.description else []


async def _truncate(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("TRUNCATE sessions, messages, turns")


@pytest.fixture(params=["in_memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ConversationStore]:
    """Each implementation in turn, set up and empty."""
    made: InMemoryConversationStore | SqliteConversationStore | PostgresConversationStore
    if request.param == "in_memory":
        made = InMemoryConversationStore()
    elif request.param == "sqlite":
        made = SqliteConversationStore(str(tmp_path / "store.db"))
    else:
        dsn = request.getfixturevalue("pg_dsn")
        made = PostgresConversationStore(dsn, max_size=4)
    await made.setup()
    if request.param == "postgres":
        await _truncate(dsn)
    try:
        yield made
    finally:
        await made.close()
