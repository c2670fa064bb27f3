"""Versioned schema migrations of the conversation store, for SQLite and PostgreSQL.

Adding a schema version is one more ``Migration`` at the end of ``MIGRATIONS``;
each store's ``setup()`` applies the pending ones in order, in one transaction,
and records them in ``schema_migrations``. Never edit a migration once released.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """The database has a schema newer than this code knows: deploy the newer code instead."""


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
        raise SchemaVersionError(
            f"the conversation store's schema is at version {current}, newer than the "
            f"{LATEST_VERSION} this code knows; run a release that knows it (refusing to start)"
        )
    return [m for m in MIGRATIONS if m.version > current]


assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1)), "versions are 1, 2, 3, ..."
