"""Versioned schema migrations of the conversation store, for SQLite and PostgreSQL.

Adding a schema version is one more ``Migration`` at the end of ``MIGRATIONS``;
each store's ``setup()`` (and ``agentserve restore``) applies the pending ones in
order, in one transaction, through ``migrate_sqlite`` or ``migrate_postgres``, and
records them in ``schema_migrations``. Never edit a migration once released.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from agent.dto import utcnow
from memory import codec

# NOTE: the key of pg_advisory_xact_lock(): every replica migrating the same
# database serialises on it, so only the first applies a version.
PG_MIGRATION_LOCK = 0x61676E74_73727601  # "agntsrv" + 1

SQLITE_SCHEMA_MIGRATIONS = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ( version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
)
PG_SCHEMA_MIGRATIONS = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
)


@dataclass(frozen=True)
class Migration:
    version: int
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


class SchemaVersionError(RuntimeError):
    """The database has a schema newer than this code knows: deploy the newer code instead.

    Args:
        version: The database's schema version.
    """

    def __init__(self, version: int) -> None:
        super().__init__(
            f"the conversation store's schema is at version {version}, newer than the "
            f"{LATEST_VERSION} this code knows; run a release that knows it (refusing to start)"
        )
        self.version = version


MIGRATIONS: list[Migration] = [
    Migration(
        version=1,
        sqlite=(
            """CREATE TABLE sessions (
                id TEXT PRIMARY KEY,
                user_id TEXT NOT NULL,
                title TEXT,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL)""",
            "CREATE INDEX sessions_user_updated ON sessions (user_id, updated_at DESC, id DESC)",
            """CREATE TABLE messages (
                id TEXT PRIMARY KEY,
                session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
                seq INTEGER NOT NULL,
                role TEXT NOT NULL,
                content TEXT,
                tool_calls TEXT NOT NULL DEFAULT '[]',
                tool_call_id TEXT,
                name TEXT,
                usage TEXT,
                created_at TEXT NOT NULL,
                UNIQUE (session_id, seq))""",
            """CREATE TABLE turns (
                user_id TEXT NOT NULL,
                idempotency_key TEXT NOT NULL,
                session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
                response TEXT NOT NULL,
                created_at TEXT NOT NULL,
                PRIMARY KEY (user_id, idempotency_key))""",
            "CREATE INDEX turns_session ON turns (session_id)",
        ),
        postgres=(
            """CREATE TABLE sessions (
                id TEXT PRIMARY KEY,
                user_id TEXT NOT NULL,
                title TEXT,
                created_at TIMESTAMPTZ NOT NULL,
                updated_at TIMESTAMPTZ NOT NULL)""",
            "CREATE INDEX sessions_user_updated ON sessions (user_id, updated_at DESC, id DESC)",
            """CREATE TABLE messages (
                id TEXT PRIMARY KEY,
                session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
                seq BIGINT NOT NULL,
                role TEXT NOT NULL,
                content TEXT,
                tool_calls JSONB NOT NULL DEFAULT '[]',
                tool_call_id TEXT,
                name TEXT,
                usage JSONB,
                created_at TIMESTAMPTZ NOT NULL,
                UNIQUE (session_id, seq))""",
            """CREATE TABLE turns (
                user_id TEXT NOT NULL,
                idempotency_key TEXT NOT NULL,
                session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
                response JSONB NOT NULL,
                created_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (user_id, idempotency_key))""",
            "CREATE INDEX turns_session ON turns (session_id)",
        ),
    ),
    Migration(
        version=2,
        sqlite=(
            """CREATE TABLE api_keys (
                id TEXT PRIMARY KEY,
                prefix TEXT NOT NULL UNIQUE,
                hash TEXT NOT NULL,
                owner TEXT NOT NULL,
                name TEXT NOT NULL,
                scopes TEXT NOT NULL DEFAULT '[]',
                created_at TEXT NOT NULL,
                last_used_at TEXT,
                revoked_at TEXT)""",
            "CREATE INDEX api_keys_owner ON api_keys (owner, created_at, id)",
        ),
        postgres=(
            """CREATE TABLE api_keys (
                id TEXT PRIMARY KEY,
                prefix TEXT NOT NULL UNIQUE,
                hash TEXT NOT NULL,
                owner TEXT NOT NULL,
                name TEXT NOT NULL,
                scopes JSONB NOT NULL DEFAULT '[]',
                created_at TIMESTAMPTZ NOT NULL,
                last_used_at TIMESTAMPTZ,
                revoked_at TIMESTAMPTZ)""",
            "CREATE INDEX api_keys_owner ON api_keys (owner, created_at, id)",
        ),
    ),
    Migration(
        # A counter every write bumps in its transaction: the session cache's key.
        version=3,
        sqlite=("ALTER TABLE sessions ADD COLUMN version INTEGER NOT NULL DEFAULT 0",),
        postgres=("ALTER TABLE sessions ADD COLUMN version BIGINT NOT NULL DEFAULT 0",),
    ),
]

LATEST_VERSION = MIGRATIONS[-1].version


def pending(applied: int | None) -> list[Migration]:
    """The migrations to apply on a database whose newest applied version is ``applied``.

    Raises:
        SchemaVersionError: the database is at a version newer than ``LATEST_VERSION``.
    """
    current = applied or 0
    if current > LATEST_VERSION:
        raise SchemaVersionError(current)
    return [m for m in MIGRATIONS if m.version > current]


_APPLIED = "SELECT MAX(version) FROM schema_migrations"
PgStatement = tuple[str, tuple[int, ...]]
# NOTE: the lock first, so a replica reads the applied version only once the one before it committed.
_PG_PREPARE: tuple[PgStatement, ...] = (
    ("SELECT pg_advisory_xact_lock(%s)", (PG_MIGRATION_LOCK,)),
    (PG_SCHEMA_MIGRATIONS, ()),
)


def migrate_sqlite(conn: sqlite3.Connection) -> list[Migration]:
    """Apply the pending migrations on ``conn``, inside the caller's write transaction.

    Returns:
        The migrations applied, oldest first (none when the schema is current).

    Raises:
        SchemaVersionError: the database is newer than this code.
    """
    conn.execute(SQLITE_SCHEMA_MIGRATIONS)
    todo = pending(conn.execute(_APPLIED).fetchone()[0])
    for migration in todo:
        for statement in migration.sqlite:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
            (migration.version, codec.ts_text(utcnow())),
        )
    return todo


def _pg_statements(todo: list[Migration]) -> Iterator[PgStatement]:
    for migration in todo:
        yield from ((statement, ()) for statement in migration.postgres)
        yield "INSERT INTO schema_migrations (version) VALUES (%s)", (migration.version,)


async def migrate_postgres(conn: psycopg.AsyncConnection[Any]) -> list[Migration]:
    """Apply the pending migrations on ``conn``, inside the caller's transaction.

    Replicas migrating one database at once serialise on ``PG_MIGRATION_LOCK``.

    Returns:
        The migrations applied, oldest first (none when the schema is current).

    Raises:
        SchemaVersionError: the database is newer than this code.
    """
    async with conn.cursor(row_factory=tuple_row) as cur:
        for query, params in _PG_PREPARE:
            await cur.execute(query, params)
        todo = pending((await (await cur.execute(_APPLIED)).fetchone() or (None,))[0])
        for query, params in _pg_statements(todo):
            await cur.execute(query, params)
    return todo


def migrate_postgres_sync(conn: psycopg.Connection[Any]) -> list[Migration]:
    """``migrate_postgres`` on a synchronous connection (``agentserve restore`` uses one)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        for query, params in _PG_PREPARE:
            cur.execute(query, params)
        todo = pending((cur.execute(_APPLIED).fetchone() or (None,))[0])
        for query, params in _pg_statements(todo):
            cur.execute(query, params)
    return todo


assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1)), "versions are 1, 2, 3, ..."
