"""Conversation-store fixtures: one contract, every implementation, real servers.

PostgreSQL: a fresh database per test session on the server named by
``TEST_POSTGRES_ADMIN_DSN`` (or found at 127.0.0.1:5432 as ``postgres`` or
``root``), dropped at the end; tables are truncated between tests. When no
server answers, the postgres tests fail under ``CI`` and skip elsewhere.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql

from agent.ports import ConversationStore
from memory.in_memory import InMemoryConversationStore
from memory.postgres_store import PostgresConversationStore
from memory.sqlite_store import SqliteConversationStore

ADMIN_DSNS = [
    "postgresql://postgres@127.0.0.1:5432/postgres",
    "postgresql://root@127.0.0.1:5432/postgres",
    "postgresql://root@127.0.0.1:5432/test",
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: needs the PostgreSQL server (fails under CI if absent)")


def _with_db(dsn: str, dbname: str) -> str:
    """``dsn`` pointed at ``dbname``, as a ``postgresql://`` URL (what DATABASE_URL holds)."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    auth = quote(str(params.get("user", "")), safe="")
    if params.get("password"):
        auth += ":" + quote(str(params["password"]), safe="")
    host, port = params.get("host", "127.0.0.1"), params.get("port", "5432")
    return f"postgresql://{auth}@{host}:{port}/{quote(dbname, safe='')}"


@pytest.fixture(scope="session")
def pg_admin_dsn() -> str:
    """A DSN of a role allowed to create databases, connected to a maintenance database."""
    candidates = [os.environ["TEST_POSTGRES_ADMIN_DSN"]] if os.environ.get("TEST_POSTGRES_ADMIN_DSN") else ADMIN_DSNS
    errors = []
    for dsn in candidates:
        try:
            with psycopg.connect(dsn, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            return dsn
        except psycopg.Error as exc:
            errors.append(f"{type(exc).__name__}: {str(exc).strip()[:200]}")
    reason = "PostgreSQL is unreachable for the contract tests: " + "; ".join(errors)
    if os.environ.get("CI"):
        pytest.fail(reason + " (CI is set: the postgres tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def make_pg_database(pg_admin_dsn: str) -> Iterator[Callable[[], str]]:
    """Create empty databases on demand (DSNs returned); all are dropped at session end."""
    created: list[str] = []

    def make() -> str:
        name = f"agentserve_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return _with_db(pg_admin_dsn, name)

    yield make
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        for name in created:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


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
