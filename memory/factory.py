"""Pick the conversation store from ``DATABASE_URL``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from agent.ports import ConversationStore
from memory.postgres_store import PostgresConversationStore
from memory.sqlite_store import SqliteConversationStore

DEFAULT_SQLITE_FILE = "agentserve.db"


@dataclass(frozen=True)
class SqliteLocation:
    path: str


@dataclass(frozen=True)
class PostgresLocation:
    dsn: str = field(repr=False)  # may hold a password


StoreLocation = SqliteLocation | PostgresLocation


def store_location(database_url: str | None, data_dir: str) -> StoreLocation:
    """Where ``database_url`` points.

    Args:
        database_url: ``postgresql://...`` or ``postgres://...`` for PostgreSQL,
            ``sqlite:///<absolute path>`` for a SQLite file; None (or blank) for
            the embedded default, SQLite at ``<data_dir>/agentserve.db``.
        data_dir: Where the embedded default keeps its file.

    Raises:
        ValueError: the URL is of no supported kind (the message never repeats it,
            since it may hold a password).
    """
    url = (database_url or "").strip()
    if not url:
        return SqliteLocation(os.path.join(data_dir, DEFAULT_SQLITE_FILE))
    if url.lower().startswith(("postgresql://", "postgres://")):
        return PostgresLocation(url)
    parts = urlsplit(url)
    if url.lower().startswith("sqlite:///") and not parts.netloc and not parts.query and parts.path.strip("/"):
        return SqliteLocation("/" + parts.path.lstrip("/"))
    raise ValueError("DATABASE_URL must be postgresql://..., postgres://... or sqlite:///<absolute path to a file>")


def build_conversation_store(database_url: str | None, data_dir: str, *, pool_size: int = 10) -> ConversationStore:
    """Build the store ``database_url`` names (see ``store_location``); call ``await store.setup()`` before use.

    Args:
        database_url: As ``store_location`` takes it.
        data_dir: Where the embedded default keeps its file.
        pool_size: PostgreSQL connections at most, per store (per replica).

    Raises:
        ValueError: the URL is of no supported kind (the message never repeats it).
    """
    location = store_location(database_url, data_dir)
    if isinstance(location, PostgresLocation):
        return PostgresConversationStore(location.dsn, max_size=pool_size)
    return SqliteConversationStore(location.path)
